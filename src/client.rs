//! Connecting to the daemon's socket, for `tokenctl` and for Rust programs
//! that fetch headers.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::proto::token_broker_client::TokenBrokerClient;

/// Why the daemon could not be reached.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach tokend at {}: {reason}; is the daemon running? (socket from --socket or \
     TOKEND_SOCKET)", path.display()
)]
pub struct ConnectError {
    pub path: PathBuf,
    /// The socket exists but file permissions forbid connecting to it.
    pub access_denied: bool,
    reason: String,
}

/// A channel to the daemon at `socket`. Connects at once, so an absent or
/// refusing daemon is reported here rather than on the first call.
pub async fn channel(socket: &Path) -> Result<Channel, ConnectError> {
    let path = socket.to_owned();
    // The URI is required by the API but unused: every connection goes to
    // the socket.
    let endpoint = Endpoint::from_static("http://tokend.invalid");
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| {
            // tonic wraps the io error; its message is the useful part.
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

/// A `TokenBroker` client on the daemon at `socket`.
pub async fn connect(socket: &Path) -> Result<TokenBrokerClient<Channel>, ConnectError> {
    Ok(TokenBrokerClient::new(channel(socket).await?))
}
