//! The daemon's socket: bound safely (its directory, mode and group; a live
//! daemon refused, a stale socket replaced, anything else left alone),
//! passed in by systemd, removed on exit, and accepted with each caller's
//! peer credentials.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::Stream;
use tokio::net::UnixListener;

use super::ServerError;
use super::authority::AuthorityStream;
use crate::config::Daemon;
use crate::peer::PeerStream;
use crate::quota::Quota;

/// A listening socket that is removed from the file system when dropped, so
/// a clean exit leaves nothing stale behind.
#[derive(Debug)]
pub struct BoundSocket {
    pub(super) listener: UnixListener,
    pub(super) path: PathBuf,
    /// False for a socket systemd passed in: it belongs to the socket unit.
    owned: bool,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves on a listening socket passed by socket activation.
pub fn activated(fd: std::os::fd::OwnedFd) -> Result<BoundSocket, ServerError> {
    let std = std::os::unix::net::UnixListener::from(fd);
    let io = |source| ServerError::Io {
        what: "cannot use the socket passed by systemd",
        path: PathBuf::from("(LISTEN_FDS)"),
        source,
    };
    std.set_nonblocking(true).map_err(io)?;
    let path = std
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_owned))
        .unwrap_or_default();
    Ok(BoundSocket {
        listener: UnixListener::from_std(std).map_err(io)?,
        path,
        owned: false,
    })
}

impl BoundSocket {
    /// Where the socket is (empty for an unnamed socket from systemd).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }
}

/// Binds the daemon's socket: creates its directory (0750) if missing, refuses
/// if a live daemon answers there, replaces a stale socket, then sets the
/// configured mode and group. Must run inside a tokio runtime.
pub fn bind(daemon: &Daemon) -> Result<BoundSocket, ServerError> {
    bind_at(&daemon.socket, daemon.socket_mode, daemon.socket_group)
}

/// [`bind`] for any socket of the daemon's (the metrics listener's too):
/// the same directory, stale-socket and ownership rules, with `mode` and
/// `group`.
pub fn bind_at(path: &Path, mode: u32, group: Option<u32>) -> Result<BoundSocket, ServerError> {
    let path = &path.to_owned();
    let io = |what, p: &Path| {
        let p = p.to_owned();
        move |source| ServerError::Io {
            what,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io("cannot create socket directory", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .map_err(io("cannot set mode of socket directory", dir))?;
        chown_group(dir, group)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ServerError::NotASocket { path: path.clone() });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServerError::InUse { path: path.clone() }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "removing stale socket");
                std::fs::remove_file(path).map_err(io("cannot remove stale socket", path))?;
            }
            Err(e) => return Err(io("cannot check existing socket", path)(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot inspect socket path", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io("cannot bind socket", path))?;
    // From here on the guard removes the socket if anything below fails.
    let bound = BoundSocket {
        listener,
        path: path.clone(),
        owned: true,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot set mode of socket", path))?;
    chown_group(path, group)?;
    Ok(bound)
}

fn chown_group(path: &Path, gid: Option<u32>) -> Result<(), ServerError> {
    let Some(gid) = gid else { return Ok(()) };
    std::os::unix::fs::lchown(path, None, Some(gid)).map_err(|source| ServerError::Io {
        what: "cannot set group of",
        path: path.to_owned(),
        source,
    })
}

fn wrap(stream: PeerStream) -> AuthorityStream<PeerStream> {
    // Test builds only: the authority layer's benchmark baseline.
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("TOKEND_TEST_NO_AUTHORITY_LAYER").is_some() {
        return AuthorityStream::bypassed(stream);
    }
    AuthorityStream::new(stream)
}

/// How many connections one uid may hold open at once. Above it, new ones
/// are closed as soon as they are accepted, so one local user cannot use up
/// the daemon's file descriptors and lock everyone else out; the unit's
/// `LimitNOFILE=` leaves room for many uids at their maximum.
pub const MAX_CONNECTIONS_PER_UID: usize = 1024;

/// Accepted connections with their peer credentials, each behind the
/// authority layer and counted against its uid's
/// [`MAX_CONNECTIONS_PER_UID`]. An accept error (out of file descriptors,
/// say) is logged and retried after a pause instead of spinning, and never
/// ends the server.
pub(super) fn incoming(
    listener: &UnixListener,
) -> impl Stream<Item = io::Result<AuthorityStream<PeerStream>>> + '_ {
    let quota = Quota::new("connections", MAX_CONNECTIONS_PER_UID);
    futures_util::stream::unfold(listener, move |listener| {
        let quota = quota.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => match PeerStream::new(stream) {
                        Ok(s) => {
                            if let Some(place) = quota.admit(s.peer().uid) {
                                return Some((Ok(wrap(s.hold(place))), listener));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read caller's peer credentials; dropping connection")
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "accept failed; retrying in 100ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    })
}
