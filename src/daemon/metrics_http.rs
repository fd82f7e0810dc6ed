//! The metrics listener: `GET /metrics` over HTTP/1.1 on TCP or a Unix
//! socket, rendered from the statuses of the moment.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::clock::SharedClock;
use crate::config::Listen;
use crate::metrics::Metrics;

/// Serves `GET /metrics` until `shutdown`; a failure to listen is logged.
pub(super) fn serve(
    listen: Listen,
    metrics: &Arc<Metrics>,
    broker: &Arc<Broker>,
    clock: &SharedClock,
    shutdown: &CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let (metrics, broker, clock) = (Arc::clone(metrics), Arc::clone(broker), Arc::clone(clock));
    let shutdown = shutdown.clone();
    async move {
        if let Err(e) = listen_and_serve(listen, metrics, broker, clock, shutdown).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    }
}

async fn listen_and_serve(
    listen: Listen,
    metrics: Arc<Metrics>,
    broker: Arc<Broker>,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    macro_rules! accept_loop {
        ($listener:expr) => {
            loop {
                let stream = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    r = $listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                };
                let (metrics, broker, clock) = (metrics.clone(), broker.clone(), clock.clone());
                tokio::spawn(async move {
                    let (read, write) = tokio::io::split(stream);
                    let page = || metrics.render(&broker.list_all(clock.now()), clock.now());
                    let _ = answer(read, write, page).await;
                });
            }
        };
    }
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            tracing::info!(%addr, "metrics listening");
            accept_loop!(listener)
        }
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)?;
            tracing::info!(path = %path.display(), "metrics listening");
            accept_loop!(listener)
        }
    }
}

async fn answer<R, W>(read: R, mut write: W, page: impl FnOnce() -> String) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut lines = BufReader::new(read).lines();
    let request = lines.next_line().await?.unwrap_or_default();
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() {
            break;
        }
    }
    let path = request.split(' ').nth(1).unwrap_or("");
    let (status, kind, body) =
        if request.starts_with("GET ") && path.split('?').next() == Some("/metrics") {
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                page(),
            )
        } else {
            ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
        };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    write.write_all(head.as_bytes()).await?;
    write.write_all(body.as_bytes()).await?;
    write.shutdown().await
}
