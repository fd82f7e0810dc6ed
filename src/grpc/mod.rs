//! The gRPC API on the daemon's Unix socket: `tokend.v1.TokenBroker`,
//! `tokend.v1.Admin`, health and reflection, with a metrics layer.
//!
//! Its parts: `socket` (binding and accepting), `authority` (accepting any
//! `:authority` a stock client sends), `convert` (every
//! domain↔proto conversion and the one error mapping), `token_broker` and
//! `admin` (the services), `metrics_layer`, `dispatch` (every call's
//! route, deadline and count), `unary` (`GetHeaders` without tonic's
//! codec), `stream` (a call's HTTP/2 stream) and `conn` (a connection and
//! its calls in one task).
//!
//! The server is the `h2` crate's HTTP/2 server on each accepted
//! connection, not tonic's `transport::Server` nor hyper's HTTP/2 server:
//! tonic's spawned a task per call and stacked boxed layers around every
//! call, and hyper's per-stream glue (a request body, a response body
//! polled frame by frame, its stream future) cost, on the cached
//! `GetHeaders` that is nearly all of the socket's traffic, about as much as
//! tokend's own work (see docs/benchmarks.md). tonic still provides the
//! generated services, the router for all but the broker, and the codec for
//! all but `GetHeaders`.

mod admin;
pub mod authority;
mod conn;
mod convert;
mod dispatch;
mod hpack;
mod metrics_layer;
mod socket;
mod stream;
mod token_broker;
mod unary;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use crate::alert::Engine;
use crate::broker::{Broker, Reloaded};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::proto;
use crate::proto::admin_server::AdminServer;
use crate::proto::token_broker_server::TokenBrokerServer;

pub use socket::{BoundSocket, MAX_CONNECTIONS_PER_UID, activated, bind, bind_at};

use crate::quota::Quota;
use admin::AdminService;
use dispatch::Calls;
use token_broker::{BrokerService, DeniedAudit};

pub use token_broker::MAX_STREAMS_PER_UID;

/// Calls one connection may have in flight at once (HTTP/2
/// `SETTINGS_MAX_CONCURRENT_STREAMS`; clients queue the rest). Each waiting
/// call holds memory, so a local user's connections (at most
/// [`MAX_CONNECTIONS_PER_UID`]) must not each hold any number; it is above
/// [`MAX_STREAMS_PER_UID`], so one connection can carry all of a uid's
/// watches and its calls besides.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Calls one uid may have in flight at once, over all its connections
/// (`WatchHeaders` streams count until their first answer, then against
/// [`MAX_STREAMS_PER_UID`]). A call reading its request holds up to
/// [`MAX_REQUEST`] of it; above this, calls are answered
/// RESOURCE_EXHAUSTED without reading their requests.
pub const MAX_CALLS_PER_UID: usize = 1024;

/// The largest request message accepted (tonic's default is 4 MiB; ours
/// are a few hundred bytes).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A live daemon already answers on the socket.
    #[error(
        "another tokend is already listening on {}; stop it first, or give this one \
         another socket", path.display()
    )]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something other than a socket is in the way.
    #[error("{} exists and is not a socket; move it away or choose another socket path", path.display())]
    NotASocket {
        /// What is in the way.
        path: PathBuf,
    },
    /// A system call on the socket or its directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The API's descriptor set is unusable (a build problem).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Asks the daemon to reload its config; answers what changed.
pub type ReloadHandle =
    tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<Reloaded, String>>>;

/// What the services answer from.
#[derive(Clone, Debug)]
pub struct Api {
    /// The credentials.
    pub broker: Arc<Broker>,
    /// Open alerts and test deliveries, when `[alerts]` is configured.
    pub alerts: Option<Arc<Engine>>,
    /// The reloader, for `Admin.Reload`.
    pub reload: Option<ReloadHandle>,
    /// Per-method call metrics.
    pub metrics: Arc<Metrics>,
    /// Wall-clock time for listings.
    pub clock: SharedClock,
    /// The proxies listening, with the addresses actually bound.
    pub proxies: Arc<[crate::config::ProxySettings]>,
}

/// Serves `api` on `socket` until `shutdown` is cancelled, then stops
/// accepting and gives in-flight calls up to `drain` to finish.
pub async fn serve(
    api: Api,
    socket: BoundSocket,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<TokenBrokerServer<BrokerService>>()
        .await;
    // Both reflection versions: grpcurl and older tools still ask v1alpha.
    // Health is listed too, so reflection-driven clients can call it.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let service = Arc::new(BrokerService {
        broker: Arc::clone(&api.broker),
        alerts: api.alerts.clone(),
        clock: api.clock,
        shutdown: shutdown.clone(),
        streams: Quota::new("WatchHeaders streams", MAX_STREAMS_PER_UID),
        denied: DeniedAudit::default(),
        proxies: api.proxies,
    });
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            AdminServer::new(AdminService {
                broker: api.broker,
                alerts: api.alerts,
                reload: api.reload,
            })
            .max_decoding_message_size(MAX_REQUEST),
        )
        .prepare();
    let calls = Arc::new(Calls {
        metrics: api.metrics,
        broker: TokenBrokerServer::from_arc(Arc::clone(&service))
            .max_decoding_message_size(MAX_REQUEST),
        service,
        routes,
        in_flight: Quota::new("calls in flight", MAX_CALLS_PER_UID),
    });

    tracing::info!(socket = %socket.path().display(), "listening");
    let connections = tokio_util::task::TaskTracker::new();
    {
        let mut incoming = std::pin::pin!(socket::incoming(&socket.listener));
        loop {
            let io = tokio::select! {
                () = shutdown.cancelled() => break,
                io = futures_util::StreamExt::next(&mut incoming) => io,
            };
            match io {
                Some(Ok(io)) => {
                    connections.spawn(serve_connection(io, Arc::clone(&calls), shutdown.clone()));
                }
                // `incoming` retries failed accepts itself; as in tonic's
                // server, an error from it does not stop serving.
                Some(Err(e)) => tracing::warn!(error = %e, "accept failed"),
                None => break,
            }
        }
    }
    tracing::info!("shutting down: no new connections, draining in-flight calls");
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "in-flight calls still running after the shutdown timeout; abandoning them"
        );
    }
    drop(socket);
    Ok(())
}

/// Serves one connection until the client closes it, or, once `shutdown`
/// is cancelled, until its calls in flight are done (HTTP/2 GOAWAY).
///
/// h2's settings are the ones tonic's server gave hyper (16 KiB header
/// lists, 1 MiB windows, 16 KiB frames, no keepalive pings), except the
/// bounds tonic lifted: at most [`MAX_STREAMS_PER_CONNECTION`] calls at once
/// per connection, and hyper's default limit on streams reset for errors
/// (a "rapid reset" flood ends the connection). hyper's 400 KiB bound on
/// what a stream may buffer to send is set too (it is h2's default as
/// well), and h2's own default bound on streams the client resets before
/// they are accepted is kept, as hyper kept it. The `date` header tonic's
/// responses carried is left out.
///
/// A connection whose handshake has not finished when `shutdown` is
/// cancelled has no calls in flight and is closed at once, so a client that
/// never sends its preface cannot hold up the drain.
async fn serve_connection(
    io: authority::AuthorityStream<crate::peer::PeerStream>,
    calls: Arc<Calls>,
    shutdown: CancellationToken,
) {
    use tonic::transport::server::Connected;
    let peer = io.connect_info();
    let handshake = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, bytes::Bytes>(io);
    let conn = tokio::select! {
        biased;
        () = shutdown.cancelled() => return,
        conn = handshake => match conn {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 handshake failed");
                return;
            }
        },
    };
    let in_flight = calls.in_flight.of(peer.uid);
    let (calls, peer) = (&*calls, &peer);
    let mut driven = conn::Driven::new(conn, |(req, reply): conn::Streamed| {
        let place = in_flight.admit();
        let answer = calls.call(peer, place, req.map(stream::RecvBody::new));
        stream::Respond::new(answer, reply)
    });
    let result = tokio::select! {
        biased;
        result = &mut driven => result,
        () = shutdown.cancelled() => {
            driven.conn().graceful_shutdown();
            driven.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Each stream's and the connection's initial flow-control window (hyper's
/// and tonic's server's).
const WINDOW: u32 = 1024 * 1024;

/// The largest frame the client may send.
const MAX_FRAME: u32 = 16 * 1024;

/// The largest request header list (`SETTINGS_MAX_HEADER_LIST_SIZE`).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Streams the server may reset for a client's errors before it ends the
/// connection (hyper's default, against "rapid reset" floods).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// What a stream may queue to send beyond the client's window.
const MAX_SEND_BUFFER: usize = 400 * 1024;

/// The caller's deadline, as a header name made once.
static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// How long `GetHeaders` waits for a refresh when the caller set no
/// deadline (`grpc-timeout`).
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The longest a call waits for a refresh, whatever deadline the caller
/// set: a caller's `grpc-timeout` may be up to 10⁸ hours, and no refresh is
/// worth holding a call open for more than this.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The caller's peer credentials; a request without them (not from our
/// socket) is denied.
fn peer<T>(req: &Request<T>) -> Result<Arc<Peer>, Status> {
    req.extensions()
        .get::<Arc<Peer>>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("caller's peer credentials are unknown"))
}

/// How long to wait for a refresh: the caller's deadline from
/// `grpc-timeout` (e.g. `500m`, `2S`, read as [`dispatch`] reads it) less a
/// tenth, so the caller receives
/// our answer (and its reason) rather than its own timeout; else
/// [`DEFAULT_WAIT`]. At most [`MAX_WAIT`].
fn wait_for(headers: &http::HeaderMap) -> Duration {
    dispatch::grpc_timeout(headers)
        .map_or(DEFAULT_WAIT, |d| d - d / 10)
        .min(MAX_WAIT)
}
