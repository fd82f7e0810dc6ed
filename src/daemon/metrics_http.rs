//! The metrics listener: `GET /metrics` over HTTP/1.1 on TCP or a Unix
//! socket, rendered from the statuses of the moment.
//!
//! Anyone who can reach it is a stranger, so everything is bounded: a
//! request head of `MAX_HEAD` bytes read within `HEAD_TIMEOUT` (see
//! `http_head`), at most
//! [`MAX_CONNECTIONS`] at once (more are closed on arrival), accept errors
//! backed off rather than retried in a busy loop. A Unix socket follows the
//! gRPC socket's rules: mode and group from `[daemon]`, a stale socket
//! replaced, anything else at the path left alone and reported.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::clock::SharedClock;
use crate::config::{Daemon, Listen};
use crate::http_head::{HEAD_TIMEOUT, HeadError, MAX_HEAD, read_head, request_line};
use crate::metrics::Metrics;

/// Connections served at once; a scraper needs one.
pub const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` until `shutdown`; a failure to listen is logged.
pub(super) fn serve(
    listen: Listen,
    daemon: &Daemon,
    metrics: &Arc<Metrics>,
    broker: &Arc<Broker>,
    clock: &SharedClock,
    shutdown: &CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let (metrics, broker, clock) = (Arc::clone(metrics), Arc::clone(broker), Arc::clone(clock));
    let (mode, group) = (daemon.socket_mode, daemon.socket_group);
    let shutdown = shutdown.clone();
    async move {
        let page = move || metrics.render(&broker.list_all(clock.now()), clock.now());
        let result = match listen {
            Listen::Tcp(addr) => match tokio::net::TcpListener::bind(&addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, "metrics listening");
                    accept_loop(|| listener.accept(), page, shutdown).await;
                    Ok(())
                }
                Err(e) => Err(format!("cannot listen on {addr}: {e}")),
            },
            Listen::Unix(path) => match crate::grpc::bind_at(&path, mode, group) {
                Ok(socket) => {
                    tracing::info!(path = %path.display(), "metrics listening");
                    accept_loop(|| socket.listener().accept(), page, shutdown).await;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "metrics listener failed");
        }
    }
}

async fn accept_loop<S, A, F>(
    mut accept: impl FnMut() -> F,
    page: impl Fn() -> String + Send + Sync + 'static,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Future<Output = std::io::Result<(S, A)>>,
{
    let page = Arc::new(page);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            r = accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Over the cap: closed at once (dropped).
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let page = Arc::clone(&page);
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = answer(&mut stream, || page()).await;
            // The slot is free before the client sees the close, so a
            // client that saw its answer end can always connect again.
            drop(slot);
            let _ = stream.shutdown().await;
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (any query).
    Metrics,
    /// Any other well-formed request.
    NotFound,
    /// Not an HTTP request line.
    BadRequest,
}

/// Routes a request head (everything up to the blank line).
pub fn route(head: &[u8]) -> Route {
    match request_line(head) {
        Some(("GET", target)) if target.split('?').next() == Some("/metrics") => Route::Metrics,
        Some(_) => Route::NotFound,
        None => Route::BadRequest,
    }
}

async fn answer<S>(mut stream: S, page: impl FnOnce() -> String) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (status, kind, body) = match read_head(&mut stream).await {
        Ok(head) => match route(&head) {
            Route::Metrics => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                page(),
            ),
            Route::NotFound => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
            Route::BadRequest => ("400 Bad Request", "text/plain", "try GET /metrics\n".into()),
        },
        Err(HeadError::TooLarge) => (
            "431 Request Header Fields Too Large",
            "text/plain",
            format!("request head over {MAX_HEAD} bytes\n"),
        ),
        Err(HeadError::TimedOut) => (
            "408 Request Timeout",
            "text/plain",
            format!("no request within {}s\n", HEAD_TIMEOUT.as_secs()),
        ),
        Err(HeadError::Closed) => return Ok(()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn exchange(request: &[u8]) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(answer(server, || "tokend_up 1\n".to_owned()));
        // The server may stop reading early; a failed write is fine.
        let _ = client.write_all(request).await;
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        task.await.unwrap().unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        assert!(
            exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert!(
            exchange(b"GET /metrics?x=1 HTTP/1.0\n\n")
                .await
                .contains("tokend_up 1")
        );
        assert!(
            exchange(b"GET / HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            exchange(b"\x00\xff garbage\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 400")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let started = tokio::time::Instant::now();
        let (mut client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(answer(server, String::new));
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        task.await.unwrap().unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert_eq!(started.elapsed(), HEAD_TIMEOUT);
    }
}
