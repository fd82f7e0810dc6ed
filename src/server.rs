//! The gRPC server on a Unix socket: binding the socket safely, mapping
//! requests to the broker and its answers to gRPC, auditing each fetch, and
//! draining on shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::broker::{Broker, BrokerError, HeadersRequest, State};
use crate::clock;
use crate::config::Daemon;
use crate::peer::{Peer, PeerStream};
use crate::proto;
use crate::proto::token_broker_server::{TokenBroker, TokenBrokerServer};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A live daemon already answers on the socket.
    #[error(
        "another tokend is already listening on {}; stop it first, or give this one \
         another socket", path.display()
    )]
    InUse { path: PathBuf },
    /// Something other than a socket is in the way.
    #[error("{} exists and is not a socket; move it away or choose another socket path", path.display())]
    NotASocket { path: PathBuf },
    /// A system call on the socket or its directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The API's descriptor set is unusable (a build problem).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A listening socket that is removed from the file system when dropped, so
/// a clean exit leaves nothing stale behind.
#[derive(Debug)]
pub struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl BoundSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds the daemon's socket: creates its directory (0750) if missing, refuses
/// if a live daemon answers there, replaces a stale socket, then sets the
/// configured mode and group. Must run inside a tokio runtime.
pub fn bind(daemon: &Daemon) -> Result<BoundSocket, ServerError> {
    let path = &daemon.socket;
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
        chown_group(dir, daemon.socket_group)?;
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
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(daemon.socket_mode))
        .map_err(io("cannot set mode of socket", path))?;
    chown_group(path, daemon.socket_group)?;
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

/// Serves the broker on `socket` until `shutdown` is cancelled, then stops
/// accepting and gives in-flight calls up to `drain` to finish.
pub async fn serve(
    broker: Arc<Broker>,
    socket: BoundSocket,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<TokenBrokerServer<BrokerService>>()
        .await;
    // Both reflection versions: grpcurl and older tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
    };
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(TokenBrokerServer::new(BrokerService { broker }));

    tracing::info!(socket = %socket.path.display(), "listening");
    let stopping = shutdown.clone();
    let server = router.serve_with_incoming_shutdown(incoming(&socket.listener), async move {
        stopping.cancelled().await;
        tracing::info!("shutting down: no new connections, draining in-flight calls");
    });
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result?,
        () = drained => tracing::warn!(
            ?drain,
            "in-flight calls still running after the shutdown timeout; abandoning them"
        ),
    }
    drop(socket);
    Ok(())
}

/// Accepted connections with their peer credentials. An accept error (out of
/// file descriptors, say) is logged and retried after a pause instead of
/// spinning, and never ends the server.
fn incoming(listener: &UnixListener) -> impl Stream<Item = io::Result<PeerStream>> + '_ {
    futures_util::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => match PeerStream::new(stream) {
                    Ok(s) => return Some((Ok(s), listener)),
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
    })
}

/// Maps gRPC to the broker.
#[derive(Debug)]
struct BrokerService {
    broker: Arc<Broker>,
}

/// The caller's peer credentials; a request without them (not from our
/// socket) is denied.
fn peer<T>(req: &Request<T>) -> Result<Arc<Peer>, Status> {
    req.extensions()
        .get::<Arc<Peer>>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("caller's peer credentials are unknown"))
}

#[tonic::async_trait]
impl TokenBroker for BrokerService {
    async fn get_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<proto::GetHeadersResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let min_valid = r
            .min_valid
            .map(|d| {
                Duration::try_from(d).map_err(|_| {
                    Status::invalid_argument("min_valid must be a non-negative duration")
                })
            })
            .transpose()?;
        let request = HeadersRequest {
            credential: &r.credential,
            act_as: &r.act_as,
            required_scopes: &r.required_scopes,
            min_valid,
        };
        let audit = Audit {
            peer: &peer,
            request,
        };
        match self.broker.get_headers(&peer, request, clock::now()) {
            Ok(grant) => {
                audit.record(tonic::Code::Ok);
                Ok(Response::new(proto::GetHeadersResponse {
                    headers: grant
                        .headers()
                        .map(|(name, value)| proto::Header {
                            name: name.to_owned(),
                            value: value.to_owned(),
                        })
                        .collect(),
                    expires_at: grant.expires_at.map(timestamp),
                }))
            }
            Err(e) => {
                let status = Status::from(e);
                audit.record(status.code());
                Err(status)
            }
        }
    }

    async fn list_credentials(
        &self,
        req: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        let peer = peer(&req)?;
        let now = clock::now();
        let credentials = self
            .broker
            .list(&peer, now)
            .into_iter()
            .map(|s| proto::CredentialStatus {
                name: s.name.to_string(),
                kind: s.kind.to_owned(),
                permission: s
                    .permission
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                state: match s.state {
                    State::Fresh => proto::CredentialState::Fresh,
                    State::Expired => proto::CredentialState::Expired,
                } as i32,
                expires_at: s.expires_at.map(timestamp),
                scopes: s.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                owner: s.owner.unwrap_or_default(),
                last_error: match s.state {
                    State::Expired => "expired; rotate the token".to_owned(),
                    State::Fresh => String::new(),
                },
            })
            .collect();
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials,
        }))
    }
}

/// One header fetch, for the `audit` log target. Carries who asked and what
/// for; the token never enters it.
struct Audit<'a> {
    peer: &'a Peer,
    request: HeadersRequest<'a>,
}

impl Audit<'_> {
    fn record(&self, code: tonic::Code) {
        let r = &self.request;
        tracing::info!(
            target: "audit",
            credential = r.credential,
            uid = self.peer.uid,
            gid = self.peer.gid,
            pid = self.peer.pid,
            exe = self.peer.exe.as_deref().map(|e| e.display()).map(tracing::field::display),
            act_as = (!r.act_as.is_empty()).then_some(r.act_as),
            result = ?code,
            "get_headers"
        );
    }
}

fn timestamp(t: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        use BrokerError as E;
        let code = match &e {
            E::NotFound { .. } => tonic::Code::NotFound,
            E::CallerDenied { .. } | E::ActAsDenied { .. } => tonic::Code::PermissionDenied,
            E::ActAsRequired { .. }
            | E::ActAsRefused { .. }
            | E::ActAsInvalid { .. }
            | E::UnknownScope { .. } => tonic::Code::InvalidArgument,
            E::MissingScopes { .. } | E::Expired { .. } | E::ExpiresTooSoon { .. } => {
                tonic::Code::FailedPrecondition
            }
        };
        Self::new(code, e.to_string())
    }
}
