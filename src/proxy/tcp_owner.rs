//! Who owns the other end of a loopback TCP connection, asked from the
//! kernel's socket table (`NETLINK_SOCK_DIAG`, an exact `inet_diag` lookup
//! of the client socket's 4-tuple), as identd-style tools do. TCP carries
//! no peer credentials, and a loopback port is open to every local user, so
//! this is what lets a TCP proxy authorise its caller as the Unix socket
//! does. The answer is the uid that created the client's socket.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
/// Every TCP state: the client side may already be closing.
const ALL_STATES: u32 = !0;
const NO_COOKIE: [u32; 2] = [!0, !0];

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    /// Ports and addresses in network byte order.
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    header: NlMsgHdr,
    body: InetDiagReqV2,
}

/// The uid owning the socket at `client` that is connected to `server` (our
/// accepted connection's peer and local addresses).
pub fn owner(client: SocketAddr, server: SocketAddr) -> io::Result<u32> {
    let (family, src, dst) = match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => (
            libc::AF_INET as u8,
            [u32::from_ne_bytes(c.octets()), 0, 0, 0],
            [u32::from_ne_bytes(s.octets()), 0, 0, 0],
        ),
        (IpAddr::V6(c), IpAddr::V6(s)) => {
            (libc::AF_INET6 as u8, words(c.octets()), words(s.octets()))
        }
        _ => {
            return Err(io::Error::other(
                "client and server address families differ",
            ));
        }
    };
    let request = Request {
        header: NlMsgHdr {
            len: size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST,
            seq: 1,
            pid: 0,
        },
        body: InetDiagReqV2 {
            family,
            protocol: libc::IPPROTO_TCP as u8,
            states: ALL_STATES,
            id: InetDiagSockId {
                sport: client.port().to_be(),
                dport: server.port().to_be(),
                src,
                dst,
                interface: 0,
                cookie: NO_COOKIE,
            },
            ..InetDiagReqV2::default()
        },
    };
    let socket = netlink_socket()?;
    send(&socket, &request)?;
    let mut buf = [0u8; 1024];
    let n = recv(&socket, &mut buf)?;
    parse(&buf[..n], client.port())
}

fn words(octets: [u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, chunk) in octets.chunks_exact(4).enumerate() {
        w[i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    w
}

/// The uid in the kernel's answer, or why there is none.
fn parse(answer: &[u8], client_port: u16) -> io::Result<u32> {
    let header: NlMsgHdr = read(answer, 0)?;
    if header.kind == NLMSG_ERROR {
        let errno: i32 = read(answer, size_of::<NlMsgHdr>())?;
        return Err(if errno == 0 {
            io::Error::other("the kernel answered without a socket")
        } else {
            io::Error::from_raw_os_error(-errno)
        });
    }
    if header.kind != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::other(format!(
            "unexpected netlink answer type {}",
            header.kind
        )));
    }
    let msg: InetDiagMsg = read(answer, size_of::<NlMsgHdr>())?;
    if u16::from_be(msg.id.sport) != client_port {
        return Err(io::Error::other("the kernel described another socket"));
    }
    Ok(msg.uid)
}

/// A `T` (plain old data, `repr(C)`) at `offset` in `bytes`.
#[allow(unsafe_code)] // bounds checked; T is a repr(C) struct of integers
fn read<T: Copy + Default>(bytes: &[u8], offset: usize) -> io::Result<T> {
    let end = offset
        .checked_add(size_of::<T>())
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| io::Error::other("short netlink answer"))?;
    let mut value = T::default();
    // SAFETY: `bytes[offset..end]` has exactly size_of::<T>() bytes and T is
    // plain old data, so any bytes make a valid T; the write is unaligned-safe.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes[offset..end].as_ptr(),
            (&raw mut value).cast::<u8>(),
            size_of::<T>(),
        );
    }
    Ok(value)
}

#[allow(unsafe_code)] // socket(2) with constants; the fd is owned at once
fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a pointer to a live timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[allow(unsafe_code)] // send(2) of a repr(C) struct we own
fn send(fd: &OwnedFd, request: &Request) -> io::Result<()> {
    // SAFETY: the pointer and length describe `request`, alive for the call.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&raw const *request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)] // recv(2) into a buffer we own
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, alive for the call.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_owner_of_a_loopback_client() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(listener) = std::net::TcpListener::bind(host) else {
                assert!(host.starts_with('['), "cannot bind {host}");
                continue; // no IPv6 loopback on this machine
            };
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, peer) = listener.accept().unwrap();
            let uid = owner(peer, accepted.local_addr().unwrap()).expect("the owner");
            assert_eq!(uid, nix::unistd::geteuid().as_raw(), "{host}");
            drop(client);
        }
    }

    #[test]
    fn an_unknown_connection_has_no_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let nobody = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(owner(nobody, server).is_err());
    }
}
