//! The gRPC server on a Unix socket: binding the socket safely, mapping
//! requests to the broker and its answers to gRPC, auditing each fetch, and
//! draining on shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::{Request, Response, Status};

use secrecy::SecretString;

use crate::alert::{Engine, TestAlertError};
use crate::broker::{Broker, BrokerError, Grant, HeadersRequest, Reloaded};
use crate::clock;
use crate::config::Daemon;
use crate::metrics::Metrics;
use crate::peer::{Peer, PeerStream};
use crate::proto;
use crate::proto::admin_server::{Admin, AdminServer};
use crate::proto::token_broker_server::{TokenBroker, TokenBrokerServer};
use crate::token::{State, Token};

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
        owned: true,
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
    alerts: Option<Arc<Engine>>,
    reload: Option<ReloadHandle>,
    metrics: Arc<Metrics>,
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
        .layer(GrpcMetrics::layer(metrics))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(AdminServer::new(AdminService {
            broker: Arc::clone(&broker),
            alerts: alerts.clone(),
            reload,
        }))
        .add_service(TokenBrokerServer::new(BrokerService {
            broker,
            alerts,
            shutdown: shutdown.clone(),
        }));

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

/// Counts every gRPC call by method and code, and times it to its response
/// headers (the whole call for unary methods; the first message for
/// streams). The code is the `grpc-status` of a trailers-only (error)
/// response, else OK.
#[derive(Clone, Debug)]
struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl GrpcMetrics<()> {
    fn layer<S>(metrics: Arc<Metrics>) -> impl tower::Layer<S, Service = GrpcMetrics<S>> + Clone {
        tower::layer::layer_fn(move |inner| GrpcMetrics {
            inner,
            metrics: Arc::clone(&metrics),
        })
    }
}

/// The methods tokend serves, as static metric labels.
const METHODS: [&str; 17] = [
    "GetHeaders",
    "WatchHeaders",
    "Invalidate",
    "ListCredentials",
    "ListAlerts",
    "Refresh",
    "PutRefreshToken",
    "ImportSecret",
    "BeginLogin",
    "CompleteLogin",
    "Logout",
    "TestAlert",
    "Reload",
    "Check",
    "Watch",
    "ServerReflectionInfo",
    "other",
];

/// The label for a request path: one of [`METHODS`]. A local client
/// sending junk paths must not grow the metric set without bound.
fn method_label(path: &str) -> &'static str {
    let known = ["/tokend.v1.", "/grpc.health.v1.", "/grpc.reflection."];
    let name = path.rsplit('/').next().unwrap_or("");
    match METHODS.iter().find(|m| **m == name) {
        Some(m) if known.iter().any(|p| path.starts_with(p)) => m,
        _ => "other",
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Timed {
            method: method_label(req.uri().path()),
            started: Instant::now(),
            metrics: Arc::clone(&self.metrics),
            inner: self.inner.call(req),
        }
    }
}

/// A call's future that records it when the response headers are ready;
/// no boxing, so counting costs no allocation per call.
#[pin_project::pin_project]
struct Timed<F> {
    #[pin]
    inner: F,
    method: &'static str,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl<F, R, E> Future for Timed<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(r) = &out {
            let code = r
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            this.metrics.grpc(this.method, code, *this.started);
        }
        std::task::Poll::Ready(out)
    }
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

/// How long `GetHeaders` waits for a refresh when the caller set no
/// deadline (`grpc-timeout`).
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// Maps gRPC to the broker.
#[derive(Debug)]
struct BrokerService {
    broker: Arc<Broker>,
    alerts: Option<Arc<Engine>>,
    /// Ends open `WatchHeaders` streams when the daemon stops, so draining
    /// does not wait for them.
    shutdown: CancellationToken,
}

/// The caller's peer credentials; a request without them (not from our
/// socket) is denied.
fn peer<T>(req: &Request<T>) -> Result<Arc<Peer>, Status> {
    req.extensions()
        .get::<Arc<Peer>>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("caller's peer credentials are unknown"))
}

/// How long to wait for a refresh: the caller's deadline from
/// `grpc-timeout` (e.g. `500m`, `2S`) less a tenth, so the caller receives
/// our answer (and its reason) rather than its own timeout; else
/// [`DEFAULT_WAIT`].
fn wait_for<T>(req: &Request<T>) -> Duration {
    let parse = |v: &str| {
        let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
        let n: u64 = digits.parse().ok()?;
        Some(match unit {
            "H" => Duration::from_secs(n.saturating_mul(3600)),
            "M" => Duration::from_secs(n.saturating_mul(60)),
            "S" => Duration::from_secs(n),
            "m" => Duration::from_millis(n),
            "u" => Duration::from_micros(n),
            "n" => Duration::from_nanos(n),
            _ => return None,
        })
    };
    req.metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
        .map_or(DEFAULT_WAIT, |d| d - d / 10)
}

fn min_valid(d: Option<prost_types::Duration>) -> Result<Option<Duration>, Status> {
    d.map(|d| {
        Duration::try_from(d)
            .map_err(|_| Status::invalid_argument("min_valid must be a non-negative duration"))
    })
    .transpose()
}

fn headers_request(
    r: &proto::GetHeadersRequest,
    min_valid: Option<Duration>,
) -> HeadersRequest<'_> {
    HeadersRequest {
        credential: &r.credential,
        act_as: &r.act_as,
        required_scopes: &r.required_scopes,
        min_valid,
    }
}

fn response(grant: &Grant<'_>) -> proto::GetHeadersResponse {
    proto::GetHeadersResponse {
        headers: grant
            .headers()
            .map(|(name, value)| proto::Header {
                name: name.to_owned(),
                value: value.to_owned(),
            })
            .collect(),
        expires_at: grant.token.expires_at.map(timestamp),
        token_fingerprint: grant.token.fingerprint.clone(),
        stale: grant.stale,
    }
}

type HeaderStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<proto::GetHeadersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TokenBroker for BrokerService {
    async fn get_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<proto::GetHeadersResponse>, Status> {
        let peer = peer(&req)?;
        let wait = wait_for(&req);
        let r = req.into_inner();
        let request = headers_request(&r, min_valid(r.min_valid)?);
        let audit = Audit {
            peer: &peer,
            request,
        };
        match self.broker.get_headers(&peer, request, wait).await {
            Ok(grant) => {
                audit.record(tonic::Code::Ok);
                Ok(Response::new(response(&grant)))
            }
            Err(e) => {
                let status = Status::from(e);
                audit.record(status.code());
                Err(status)
            }
        }
    }

    type WatchHeadersStream = HeaderStream;

    async fn watch_headers(
        &self,
        req: Request<proto::GetHeadersRequest>,
    ) -> Result<Response<HeaderStream>, Status> {
        let peer = peer(&req)?;
        let wait = wait_for(&req);
        let r = req.into_inner();
        let min_valid = min_valid(r.min_valid)?;
        let broker = Arc::clone(&self.broker);
        let mut rx = broker.watch(&peer, &r.credential)?;
        // The first set, or the error, answers the call itself.
        let first = {
            let grant = broker
                .get_headers(&peer, headers_request(&r, min_valid), wait)
                .await;
            Audit {
                peer: &peer,
                request: headers_request(&r, min_valid),
            }
            .record(grant.as_ref().map_or_else(code_of, |_| tonic::Code::Ok));
            let grant = grant?;
            (response(&grant), grant.token.fingerprint.clone())
        };
        let (tx, out) = tokio::sync::mpsc::channel(4);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let (first, mut sent) = first;
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("tokend is shutting down"))).await;
                        return;
                    }
                    () = tx.closed() => return,
                    changed = rx.changed() => if changed.is_err() {
                        let _ = tx.send(Err(Status::not_found(format!(
                            "credential `{}` was removed", r.credential
                        )))).await;
                        return;
                    },
                }
                let next = match broker
                    .get_headers(&peer, headers_request(&r, min_valid), wait)
                    .await
                {
                    // The same token again (a state change, a reload that
                    // kept it): nothing new to send.
                    Ok(grant) if grant.token.fingerprint == sent => continue,
                    Ok(grant) => {
                        sent.clone_from(&grant.token.fingerprint);
                        Ok(response(&grant))
                    }
                    // Refreshing is failing but may recover: keep watching.
                    Err(BrokerError::Unavailable { .. }) => continue,
                    Err(e) => Err(Status::from(e)),
                };
                let end = next.is_err();
                if tx.send(next).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn invalidate(
        &self,
        req: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let refreshing = self
            .broker
            .invalidate(&peer, &r.credential, &r.token_fingerprint)?;
        Ok(Response::new(proto::InvalidateResponse { refreshing }))
    }

    async fn list_alerts(
        &self,
        req: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        let peer = peer(&req)?;
        let Some(engine) = &self.alerts else {
            return Ok(Response::new(proto::ListAlertsResponse {
                alerts: Vec::new(),
            }));
        };
        let ts = |s: i64| jiff::Timestamp::from_second(s).ok().map(timestamp);
        let alerts = engine
            .open_alerts()
            .await
            .into_iter()
            .filter(|a| self.broker.visible(&peer, &a.credential))
            .map(|a| proto::Alert {
                dedup_key: a.dedup_key,
                credential: a.credential,
                event: a.event,
                severity: a.severity.as_str().to_owned(),
                summary: a.summary,
                expires_at: a
                    .expires_at
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(timestamp),
                opened_at: ts(a.opened_at),
                last_sent: ts(a.last_sent),
            })
            .collect();
        Ok(Response::new(proto::ListAlertsResponse { alerts }))
    }

    async fn list_credentials(
        &self,
        req: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        let peer = peer(&req)?;
        let credentials = self
            .broker
            .list(&peer, clock::now())
            .into_iter()
            .map(|s| proto::CredentialStatus {
                name: s.name.to_string(),
                kind: s.kind.to_owned(),
                permission: s
                    .permission
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                state: proto_state(s.state) as i32,
                expires_at: s.expires_at.map(timestamp),
                scopes: s.scopes,
                owner: s.owner.unwrap_or_default(),
                instance: s.instance.unwrap_or_default(),
                last_error: s.last_error.as_deref().unwrap_or_default().to_owned(),
                last_refresh: s.last_refresh.map(timestamp),
                next_refresh: s.next_refresh.map(timestamp),
            })
            .collect();
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials,
        }))
    }
}

fn proto_state(s: State) -> proto::CredentialState {
    match s {
        State::Fresh => proto::CredentialState::Fresh,
        State::Refreshing => proto::CredentialState::Refreshing,
        State::Stale => proto::CredentialState::Stale,
        State::Expired => proto::CredentialState::Expired,
        State::NeedsLogin => proto::CredentialState::NeedsLogin,
        State::Misconfigured => proto::CredentialState::Misconfigured,
    }
}

/// Operator actions, for admin callers only (checked by the broker).
#[derive(Debug)]
struct AdminService {
    broker: Arc<Broker>,
    alerts: Option<Arc<Engine>>,
    reload: Option<ReloadHandle>,
}

/// Asks the daemon to reload its config; answers what changed.
pub type ReloadHandle =
    tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<Reloaded, String>>>;

fn refreshed(token: &Token) -> proto::RefreshResponse {
    proto::RefreshResponse {
        expires_at: token.expires_at.map(timestamp),
        token_fingerprint: token.fingerprint.clone(),
    }
}

fn from_timestamp(t: prost_types::Timestamp, field: &str) -> Result<jiff::Timestamp, Status> {
    jiff::Timestamp::new(t.seconds, t.nanos)
        .map_err(|_| Status::invalid_argument(format!("{field} is not a valid time")))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn refresh(
        &self,
        req: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let token = self.broker.refresh(&peer, &r.credential).await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, "admin refresh");
        Ok(Response::new(refreshed(&token)))
    }

    async fn put_refresh_token(
        &self,
        req: Request<proto::PutRefreshTokenRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let access = match (r.access_token.is_empty(), r.access_token_expires_at) {
            (true, _) => None,
            (false, Some(at)) => Some((
                SecretString::from(r.access_token),
                from_timestamp(at, "access_token_expires_at")?,
            )),
            (false, None) => {
                return Err(Status::invalid_argument(
                    "access_token needs access_token_expires_at",
                ));
            }
        };
        let token = self
            .broker
            .put_refresh_token(
                &peer,
                &r.credential,
                SecretString::from(r.refresh_token),
                access,
            )
            .await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, "refresh token stored");
        Ok(Response::new(refreshed(&token)))
    }

    async fn import_secret(
        &self,
        req: Request<proto::ImportSecretRequest>,
    ) -> Result<Response<proto::ImportSecretResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let expires_at = r
            .expires_at
            .map(|t| from_timestamp(t, "expires_at"))
            .transpose()?;
        self.broker
            .import_secret(
                &peer,
                &r.credential,
                SecretString::from(r.secret),
                expires_at,
            )
            .await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, "secret imported");
        Ok(Response::new(proto::ImportSecretResponse {}))
    }

    async fn begin_login(
        &self,
        req: Request<proto::BeginLoginRequest>,
    ) -> Result<Response<proto::BeginLoginResponse>, Status> {
        let peer = peer(&req)?;
        let info = self
            .broker
            .begin_login(&peer, &req.get_ref().credential)
            .await?;
        Ok(Response::new(proto::BeginLoginResponse {
            authorization_endpoint: info.authorization_endpoint,
            client_id: info.client_id,
            scopes: info.scopes,
            redirect_uri: info.redirect_uri,
        }))
    }

    async fn complete_login(
        &self,
        req: Request<proto::CompleteLoginRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let token = self
            .broker
            .complete_login(
                &peer,
                &r.credential,
                SecretString::from(r.code),
                SecretString::from(r.code_verifier),
                r.redirect_uri,
            )
            .await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, "logged in");
        Ok(Response::new(refreshed(&token)))
    }

    async fn reload(
        &self,
        req: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let peer = peer(&req)?;
        if !self.broker.is_admin(&peer) {
            return Err(BrokerError::NotAdmin {
                uid: peer.uid,
                action: "reload the config",
            }
            .into());
        }
        let reload = self
            .reload
            .as_ref()
            .ok_or_else(|| Status::unavailable("reloading is not available"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        reload
            .send(tx)
            .await
            .map_err(|_| Status::unavailable("tokend is shutting down"))?;
        let done = rx
            .await
            .map_err(|_| Status::unavailable("tokend is shutting down"))?
            .map_err(Status::failed_precondition)?;
        tracing::info!(target: "audit", uid = peer.uid, "config reloaded");
        Ok(Response::new(proto::ReloadResponse {
            added: done.added,
            changed: done.changed,
            removed: done.removed,
            unchanged: done.unchanged as u32,
        }))
    }

    async fn test_alert(
        &self,
        req: Request<proto::TestAlertRequest>,
    ) -> Result<Response<proto::TestAlertResponse>, Status> {
        let peer = peer(&req)?;
        if !self.broker.is_admin(&peer) {
            return Err(BrokerError::NotAdmin {
                uid: peer.uid,
                action: "send test alerts",
            }
            .into());
        }
        let engine = self.alerts.as_ref().ok_or_else(|| {
            Status::failed_precondition("no [alerts] table in the config: no sinks to test")
        })?;
        engine
            .test(&req.get_ref().sink)
            .await
            .map_err(|e| match e {
                TestAlertError::NoSuchSink(_) => Status::not_found(e.to_string()),
                TestAlertError::Failed { .. } => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(proto::TestAlertResponse {}))
    }

    async fn logout(
        &self,
        req: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let peer = peer(&req)?;
        let r = req.into_inner();
        let revoked = self.broker.logout(&peer, &r.credential, r.revoke).await?;
        tracing::info!(target: "audit", credential = %r.credential, uid = peer.uid, revoked, "logged out");
        Ok(Response::new(proto::LogoutResponse { revoked }))
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

/// The gRPC code for each broker error: the one mapping (DESIGN §5).
fn code_of(e: &BrokerError) -> tonic::Code {
    use BrokerError as E;
    use tonic::Code;
    match e {
        E::NotFound { .. } => Code::NotFound,
        E::CallerDenied { .. } | E::ActAsDenied { .. } | E::NotAdmin { .. } => {
            Code::PermissionDenied
        }
        E::ActAsRequired { .. }
        | E::ActAsRefused { .. }
        | E::ActAsInvalid { .. }
        | E::UnknownScope { .. }
        | E::InvalidInput(_) => Code::InvalidArgument,
        E::MissingScopes { .. }
        | E::Expired { .. }
        | E::ExpiresTooSoon { .. }
        | E::NotImported { .. }
        | E::NeedsLogin { .. }
        | E::Misconfigured { .. }
        | E::WrongKind { .. } => Code::FailedPrecondition,
        E::Unavailable { .. } => Code::Unavailable,
        E::Store(_) => Code::Internal,
    }
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        Self::new(code_of(&e), e.to_string())
    }
}
