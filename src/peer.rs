//! Who is on the other end of a socket connection, as the kernel tells it.
//!
//! Identity is read once per connection, when it is accepted: `SO_PEERCRED`
//! (uid, gid, pid) and `SO_PEERGROUPS` (supplementary groups) report the
//! caller as it was when it called `connect(2)`, which a caller cannot forge
//! and which does not change if the pid is later reused. Each call on the
//! connection then finds the [`Peer`] in its request extensions.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

/// The kernel's account of a connected caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The caller's effective uid.
    pub uid: u32,
    /// The caller's effective (primary) gid.
    pub gid: u32,
    /// Absent when the caller is in another pid namespace.
    pub pid: Option<i32>,
    /// Supplementary groups; the primary `gid` is not repeated here.
    pub groups: Box<[u32]>,
    /// The caller's executable, for the audit log; absent when tokend may not
    /// read it (another user's process while tokend is unprivileged).
    pub exe: Option<PathBuf>,
}

impl Peer {
    /// Reads the peer credentials of a connected Unix stream.
    pub fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid().filter(|p| *p > 0);
        let groups = peer_groups(stream.as_raw_fd())?;
        let exe = pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok());
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid,
            groups: groups.into_iter().filter(|g| *g != cred.gid()).collect(),
            exe,
        })
    }

    /// A caller known only by its uid (the owner of a loopback TCP
    /// connection): its groups are the user database's, as at login, and a
    /// uid with no entry there is in no group (its gid is `u32::MAX`, which
    /// no config can name). Blocking: NSS may ask a directory service.
    pub fn of_uid(uid: u32) -> Self {
        let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
        let gid = user.as_ref().map_or(u32::MAX, |u| u.gid.as_raw());
        let groups = user
            .and_then(|u| {
                let name = std::ffi::CString::new(u.name).ok()?;
                nix::unistd::getgrouplist(&name, u.gid).ok()
            })
            .unwrap_or_default();
        Self {
            uid,
            gid,
            pid: None,
            groups: groups
                .into_iter()
                .map(|g| g.as_raw())
                .filter(|g| *g != gid)
                .collect(),
            exe: None,
        }
    }

    /// Whether the caller is in `gid`, as primary or supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// `getsockopt(SO_PEERGROUPS)`, which neither std, tokio nor nix wrap.
#[allow(unsafe_code)] // a plain getsockopt into a buffer we own and size; reviewed
fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .map_err(|_| io::Error::other("too many peer groups"))?;
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes,
        // and the kernel writes at most `len` bytes and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
}

/// An accepted connection carrying its [`Peer`], which tonic copies into the
/// extensions of every request on it.
#[derive(Debug)]
pub struct PeerStream {
    stream: UnixStream,
    peer: Arc<Peer>,
    /// Dropped with the connection: the accept loop's place for it in its
    /// per-uid count.
    held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl PeerStream {
    /// Wraps an accepted stream, reading its peer's identity now.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        let peer = Arc::new(Peer::of(&stream)?);
        Ok(Self {
            stream,
            peer,
            held: None,
        })
    }

    /// Whom the kernel says connected.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Keeps `guard` alive exactly as long as this connection.
    pub fn hold(mut self, guard: impl Send + Sync + 'static) -> Self {
        self.held = Some(Box::new(guard));
        self
    }
}

impl Connected for PeerStream {
    type ConnectInfo = Arc<Peer>;

    fn connect_info(&self) -> Arc<Peer> {
        Arc::clone(&self.peer)
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_pair_reports_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.gid, nix::unistd::getegid().as_raw());
        assert_eq!(peer.pid, Some(std::process::id() as i32));
        assert_eq!(peer.exe, std::env::current_exe().ok());
        assert!(peer.in_group(peer.gid));
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .filter(|g| *g != peer.gid)
            .collect();
        let mut got = peer.groups.to_vec();
        got.sort_unstable();
        let mut want = mine;
        want.sort_unstable();
        want.dedup();
        assert_eq!(got, want);
    }
}
