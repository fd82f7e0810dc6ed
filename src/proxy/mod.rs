//! `[[proxy]]`: a local HTTP/1.1 endpoint for programs that cannot ask
//! tokend for headers themselves (a tool that reads `GLEAN_API_TOKEN` once,
//! a script, an SDK without a tokend package). The caller sends plain HTTP
//! with a placeholder token; tokend identifies it by the kernel (peer
//! credentials on a Unix socket, the socket table on loopback TCP),
//! applies the credential's `allow` and Glean's rules (act-as, scopes)
//! before anything leaves the host, swaps in the credential's headers and
//! forwards upstream over TLS, streaming both ways. The caller never holds
//! a secret.
//!
//! Everything a local caller controls is bounded: request heads
//! ([`MAX_HEAD`] within [`HEAD_TIMEOUT`]), bodies (`max_request_body`),
//! connections per uid ([`MAX_CONNECTIONS_PER_UID`]); and the upstream's
//! time too ([`UPSTREAM_CONNECT_TIMEOUT`], `upstream_timeout`).

mod forward;
pub mod scopes;
mod tcp_owner;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::{Daemon, ProxyListen, ProxySettings};
use crate::grpc::{BoundSocket, ServerError};
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::quota::Quota;

pub use forward::Forwarder;

/// The request line and headers, together. hyper answers 431 beyond it.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a caller may take to send a request head (also the idle time
/// allowed between keep-alive requests): a slowloris is cut off.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one uid may hold open on one proxy.
pub const MAX_CONNECTIONS_PER_UID: usize = 256;
/// Bodies up to this size are kept, so a request that met a 401 can be
/// sent again with the replacement token; larger ones stream through once.
pub const RETRY_BODY: u64 = 1024 * 1024;
/// Connecting to the upstream (TCP and TLS).
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a token when none is valid yet (a refresh
/// in flight), before answering 503.
pub const TOKEN_WAIT: Duration = Duration::from_secs(30);

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Its listener could not be bound.
    #[error("proxy `{name}`: {source}")]
    Bind {
        /// The proxy's name.
        name: String,
        /// What failed.
        source: ServerError,
    },
    /// Its loopback port could not be bound.
    #[error("proxy `{name}`: cannot listen on {addr}: {source}")]
    Listen {
        /// The proxy's name.
        name: String,
        /// The address it was to listen on.
        addr: std::net::SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// Its `ca_file` or TLS setup is unusable.
    #[error("proxy `{name}`: {reason}")]
    Tls {
        /// The proxy's name.
        name: String,
        /// What is wrong, naming the file.
        reason: String,
    },
}

/// A bound proxy, ready to serve.
pub struct Proxy {
    forwarder: Arc<Forwarder>,
    listener: Listener,
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(BoundSocket),
}

impl Proxy {
    /// Binds `settings`' listener (a Unix socket by the gRPC socket's rules:
    /// `daemon`'s mode and group, stale sockets replaced, nothing else
    /// removed) and builds its upstream client. Must run inside a runtime.
    pub fn bind(
        settings: ProxySettings,
        daemon: &Daemon,
        broker: &Arc<Broker>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, ProxyError> {
        let name = settings.name.clone();
        let listener = match &settings.listen {
            ProxyListen::Unix(path) => {
                let socket = crate::grpc::bind_at(path, daemon.socket_mode, daemon.socket_group)
                    .map_err(|source| ProxyError::Bind {
                        name: name.clone(),
                        source,
                    })?;
                Listener::Unix(socket)
            }
            ProxyListen::Tcp(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|source| ProxyError::Listen {
                        name: name.clone(),
                        addr: *addr,
                        source,
                    })?;
                Listener::Tcp(listener)
            }
        };
        let forwarder = Forwarder::new(settings, Arc::clone(broker), Arc::clone(metrics))
            .map_err(|reason| ProxyError::Tls { name, reason })?;
        Ok(Self {
            forwarder: Arc::new(forwarder),
            listener,
        })
    }

    /// Its settings, with the address actually bound (a port 0 resolved).
    pub fn settings(&self) -> ProxySettings {
        let mut settings = self.forwarder.settings().clone();
        if let Listener::Tcp(l) = &self.listener
            && let Ok(addr) = l.local_addr()
        {
            settings.listen = ProxyListen::Tcp(addr);
        }
        settings
    }

    /// Serves until `shutdown`; connections then finish their request in
    /// flight (tracked by `tasks`).
    pub async fn serve(self, shutdown: CancellationToken, tasks: TaskTracker) {
        let quota = Quota::new("proxy connections", MAX_CONNECTIONS_PER_UID);
        let name = self.forwarder.name().to_owned();
        tracing::info!(proxy = %name, listen = %self.forwarder.listen(), "proxy listening");
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                a = self.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(Some(pair)) => pair,
                // A caller that could not be identified: closed.
                Ok(None) => continue,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(proxy = %name, error = %e, "accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(place) = quota.admit(peer.uid) else {
                continue;
            };
            let forwarder = Arc::clone(&self.forwarder);
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                serve_connection(stream, Arc::new(peer), forwarder, shutdown).await;
                drop(place);
            });
        }
    }

    async fn accept(&self) -> std::io::Result<Option<(Stream, Peer)>> {
        match &self.listener {
            Listener::Unix(socket) => {
                let (stream, _) = socket.listener().accept().await?;
                match Peer::of(&stream) {
                    Ok(peer) => Ok(Some((Stream::Unix(stream), peer))),
                    Err(e) => {
                        tracing::warn!(error = %e, "proxy: cannot read a caller's credentials; closed");
                        Ok(None)
                    }
                }
            }
            Listener::Tcp(listener) => {
                let (stream, client) = listener.accept().await?;
                let server = stream.local_addr()?;
                let name = self.forwarder.name().to_owned();
                // The socket table and the user database: blocking calls.
                let peer = tokio::task::spawn_blocking(move || {
                    let uid = tcp_owner::owner(client, server)?;
                    Ok::<_, std::io::Error>(Peer::of_uid(uid))
                })
                .await
                .map_err(std::io::Error::other)?;
                match peer {
                    Ok(peer) => Ok(Some((Stream::Tcp(stream), peer))),
                    Err(e) => {
                        tracing::warn!(
                            proxy = %name, %client, error = %e,
                            "proxy: cannot tell which user owns a connection; closed"
                        );
                        Ok(None)
                    }
                }
            }
        }
    }
}

/// One caller's connection, either kind.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn serve_connection(
    stream: Stream,
    peer: Arc<Peer>,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) {
    match stream {
        Stream::Tcp(s) => http1(s, peer, forwarder, shutdown).await,
        Stream::Unix(s) => http1(s, peer, forwarder, shutdown).await,
    }
}

async fn http1<S>(
    stream: S,
    peer: Arc<Peer>,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (forwarder, peer) = (Arc::clone(&forwarder), Arc::clone(&peer));
        async move { Ok::<_, std::convert::Infallible>(forwarder.handle(&peer, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "proxy connection ended");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
