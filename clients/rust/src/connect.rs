//! Dialling the daemon's Unix socket.

use std::fmt;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Why the daemon could not be reached. Its message is meant for a person:
/// it names the socket and says what to check, so callers can print it as
/// is.
///
/// It has no `source()`: the cause is already in the message, and error
/// reporters that print the chain would say it twice.
// Display is written by hand: it has two wordings, and thiserror's
// `fmt = ...` delegation works on enums only.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// The socket that was dialled, so the message (and a program) can say
    /// which daemon was meant.
    pub path: PathBuf,
    /// The socket exists but its group or mode forbids this user: the fix is
    /// an admin's, not restarting the daemon.
    pub access_denied: bool,
    /// The innermost cause's message (e.g. "No such file or directory (os
    /// error 2)"), kept as text so it is printed once, not again as a
    /// `source()`.
    reason: String,
}

impl ConnectError {
    /// The underlying cause as the operating system or transport reported
    /// it, for logs that want it apart from the advice.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::error::Error for ConnectError {}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        if self.access_denied {
            write!(
                f,
                "cannot connect to tokend at {path}: permission denied; the socket's group or \
                 mode does not admit this user (ask an admin to add you to the socket's group)"
            )
        } else {
            write!(
                f,
                "cannot reach tokend at {path}: {}; is the daemon running? (socket from \
                 --socket or TOKEND_SOCKET)",
                self.reason
            )
        }
    }
}

/// A channel to the daemon at `socket`, for the generated clients in
/// [`proto`](crate::proto) or extra services such as gRPC health.
///
/// Connects at once, so an absent, refusing or forbidden daemon is reported
/// here rather than on the first call. Later, the channel redials the same
/// socket by itself if the daemon restarts.
pub async fn channel(socket: &Path) -> Result<Channel, ConnectError> {
    let path = socket.to_owned();
    // Every connection goes to the socket; the URI only sets the :authority
    // header. "localhost" is what the Go and grpc-js clients send for Unix
    // sockets, so the daemon sees one value whatever the client.
    let endpoint = Endpoint::from_static("http://localhost");
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| {
            // tonic wraps the io error in its own ("transport error"); the
            // innermost one is the useful part.
            let mut source: &dyn std::error::Error = &e;
            while let Some(next) = source.source() {
                source = next;
            }
            let access_denied = source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
            ConnectError {
                path: socket.to_owned(),
                access_denied,
                reason: source.to_string(),
            }
        })
}

#[cfg(test)]
impl ConnectError {
    /// A "no such file" error, for other modules' tests.
    pub(crate) fn for_test() -> Self {
        Self {
            path: "/nowhere/tokend.sock".into(),
            access_denied: false,
            reason: "No such file or directory (os error 2)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(access_denied: bool) -> ConnectError {
        ConnectError {
            path: "/run/tokend/tokend.sock".into(),
            access_denied,
            reason: "No such file or directory (os error 2)".into(),
        }
    }

    #[test]
    fn message_names_path_and_reason_once() {
        assert_eq!(
            error(false).to_string(),
            "cannot reach tokend at /run/tokend/tokend.sock: No such file or directory (os \
             error 2); is the daemon running? (socket from --socket or TOKEND_SOCKET)"
        );
    }

    #[test]
    fn access_denied_points_at_the_group() {
        let message = error(true).to_string();
        assert!(
            message.starts_with(
                "cannot connect to tokend at /run/tokend/tokend.sock: permission denied;"
            ),
            "{message}"
        );
        assert!(
            message.contains("add you to the socket's group"),
            "{message}"
        );
        assert!(!message.contains("is the daemon running"), "{message}");
    }
}
