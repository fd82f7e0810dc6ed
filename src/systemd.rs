//! systemd integration: the notify protocol (`sd_notify(3)`: READY, STATUS,
//! WATCHDOG, RELOADING, STOPPING) over `$NOTIFY_SOCKET`, and socket
//! activation (`sd_listen_fds(3)`: `$LISTEN_FDS`/`$LISTEN_PID`).
//!
//! A few lines over a datagram socket rather than a library: the protocol is
//! one `KEY=value` message per datagram, and owning it keeps the daemon free
//! of libsystemd.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Sends state changes to the service manager; does nothing outside systemd.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, NotifyAddr)>,
}

#[derive(Debug)]
enum NotifyAddr {
    Path(PathBuf),
    /// Linux abstract namespace (`@name` in `$NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, when set.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|addr| {
            let bytes = addr.as_encoded_bytes();
            let addr = match bytes.strip_prefix(b"@") {
                Some(name) => NotifyAddr::Abstract(name.to_vec()),
                None => NotifyAddr::Path(PathBuf::from(addr)),
            };
            UnixDatagram::unbound().ok().map(|s| (s, addr))
        });
        Self { socket }
    }

    /// Sends one message; failures are logged, never fatal (the manager
    /// may have gone away during shutdown).
    pub fn notify(&self, message: &str) {
        let Some((socket, addr)) = &self.socket else {
            return;
        };
        let sent = match addr {
            NotifyAddr::Path(p) => socket.send_to(message.as_bytes(), p),
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| socket.send_to_addr(message.as_bytes(), &a))
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// `READY=1`: startup is done and the socket is served.
    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// `STATUS=`: a one-line summary for `systemctl status`; newlines
    /// become spaces.
    pub fn status(&self, status: &str) {
        // One line: a newline would start another assignment.
        self.notify(&format!("STATUS={}", status.replace('\n', " ")));
    }

    /// `WATCHDOG=1`: the keep-alive ping, sent every [`watchdog_interval`].
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// `RELOADING=1` with the monotonic timestamp `Type=notify-reload` wants.
    pub fn reloading(&self) {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }
}

/// Half of `$WATCHDOG_USEC`, when the watchdog is on for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The first socket passed by socket activation, if it was passed to this
/// process.
pub fn listen_fd() -> Option<OwnedFd> {
    const SD_LISTEN_FDS_START: i32 = 3;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    if fds > 1 {
        tracing::warn!(
            fds,
            "socket activation passed several sockets; serving the first"
        );
    }
    #[allow(unsafe_code)]
    // SAFETY: the service manager passed fd 3 to this process (LISTEN_PID
    // matches) for it to own; nothing else in tokend opens or owns fd 3
    // before this runs, once, at startup.
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    // Keep the fd out of any program tokend runs (exec alert sinks).
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), NotifyAddr::Path(path))),
        };
        n.ready();
        n.status("2 credentials:\n2 fresh");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=2 credentials: 2 fresh");
    }
}
