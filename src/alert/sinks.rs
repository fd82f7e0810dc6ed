//! Delivery: one worker per sink draining its own queue, retrying with
//! backoff, so a slow or failing sink delays only itself.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::{mpsc, oneshot};

use super::event::{pagerduty_body, slack_body};
use super::{Event, SinkKind, SinkSpec};
use crate::clock;
use crate::metrics::Metrics;

/// One delivery to one sink; `done` learns the outcome (for `test-alert`).
pub(super) struct Delivery {
    pub(super) event: Arc<Event>,
    pub(super) done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Attempts per delivery before it is counted as failed.
const ATTEMPTS: u32 = 4;

/// A sink's worker: delivers queued events in order, retrying each with
/// doubling backoff, so a slow or failing sink delays only itself.
pub(super) async fn deliver(
    spec: Arc<SinkSpec>,
    mut queue: mpsc::Receiver<Delivery>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
) {
    while let Some(d) = queue.recv().await {
        let mut result = Err(String::new());
        for attempt in 0..ATTEMPTS {
            result = send(&spec, &d.event, &http).await;
            if result.is_ok() {
                break;
            }
            if attempt + 1 < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt)).await;
            }
        }
        match &result {
            Ok(()) => metrics.alert_delivery(&spec.name, "ok"),
            Err(e) => {
                metrics.alert_delivery(&spec.name, "failed");
                tracing::error!(sink = %spec.name, event = %d.event.event, error = %e, "alert delivery failed");
            }
        }
        if let Some(done) = d.done {
            let _ = done.send(result);
        }
    }
}

async fn send(spec: &SinkSpec, e: &Event, http: &reqwest::Client) -> Result<(), String> {
    match &spec.kind {
        SinkKind::Log => {
            tracing::warn!(
                target: "alert",
                event = %e.event,
                credential = %e.credential,
                kind = %e.kind,
                severity = e.severity.as_str(),
                dedup_key = %e.dedup_key,
                expires_at = e.expires_at.as_deref(),
                "{}",
                e.summary
            );
            Ok(())
        }
        SinkKind::Webhook {
            url,
            slack,
            headers,
        } => {
            let body = if *slack {
                slack_body(e)
            } else {
                serde_json::to_value(e).unwrap_or_default()
            };
            let mut req = http.post(url.expose_secret()).json(&body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            check_response(req.send().await)
        }
        SinkKind::PagerDuty { url, routing_key } => {
            let body = pagerduty_body(e, routing_key.expose_secret());
            check_response(http.post(url).json(&body).send().await)
        }
        SinkKind::Exec { command, timeout } => exec(command, *timeout, e).await,
    }
}

fn check_response(r: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    // Errors are described without the URL, which may carry a secret.
    match r {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status())),
        Err(e) if e.is_timeout() => Err("timed out".into()),
        Err(e) if e.is_connect() => Err("connection failed".into()),
        Err(_) => Err("request failed".into()),
    }
}

async fn exec(command: &[String], timeout: Duration, e: &Event) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let (program, args) = command.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    let json = serde_json::to_vec(e).unwrap_or_default();
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&json).await;
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
        Ok(Err(err)) => Err(format!("{program}: {err}")),
        Err(_) => Err(format!(
            "{program} did not finish within {}",
            clock::human(timeout)
        )),
    }
}
