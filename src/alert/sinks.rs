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

/// Marks every descriptor above stderr close-on-exec, so the program starts
/// with none of them (`close_range(2)` with `CLOSE_RANGE_CLOEXEC`, or
/// `fcntl` one by one on kernels before 5.11). Marked rather than closed:
/// the pipe through which a failed exec reports its error must stay open
/// until the exec.
fn close_inherited() -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: plain system calls on descriptor numbers.
    #[allow(unsafe_code)]
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
            let max = match libc::sysconf(libc::_SC_OPEN_MAX) {
                n if n > 0 => i32::try_from(n).unwrap_or(i32::MAX),
                _ => 65_536,
            };
            for fd in 3..max {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// What an exec sink inherits of the daemon's environment; nothing else.
pub const EXEC_ENV: [&str; 4] = ["PATH", "LANG", "LC_ALL", "TZ"];

async fn exec(command: &[String], timeout: Duration, e: &Event) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let (program, args) = command.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    // A cleared environment: the daemon's may hold `secret = { env = … }`
    // values and, under systemd, CREDENTIALS_DIRECTORY (the store key).
    // Only the allow-list in EXEC_ENV passes, plus the event's fields.
    cmd.env_clear();
    for name in EXEC_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.env("TOKEND_EVENT", &e.event)
        .env("TOKEND_CREDENTIAL", &e.credential)
        .env("TOKEND_SEVERITY", e.severity.as_str())
        .env("TOKEND_DEDUP_KEY", &e.dedup_key);
    // No inherited descriptors: whatever the daemon was started with
    // without close-on-exec (a supervisor's pipes, systemd's sockets) is
    // closed when the child execs.
    // SAFETY: the closure only makes raw system calls, which are
    // async-signal-safe, between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(close_inherited);
    }
    let mut child = cmd
        .args(args)
        // Its own process group: a terminal's or systemd's signals to the
        // daemon's group do not reach it halfway through.
        .process_group(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::settings::Severity;

    fn event() -> Event {
        Event {
            event: "test".into(),
            credential: String::new(),
            kind: String::new(),
            severity: Severity::Info,
            summary: "a test".into(),
            expires_at: None,
            dedup_key: "test".into(),
            source: "host".into(),
            at: "2026-11-24T00:00:00Z".into(),
        }
    }

    /// Descriptors are marked close-on-exec rather than closed, so a
    /// program that cannot be run is still reported as such.
    #[tokio::test]
    async fn a_missing_program_is_reported_as_missing() {
        let err = exec(
            &["/nonexistent/notify".into()],
            Duration::from_secs(5),
            &event(),
        )
        .await
        .unwrap_err();
        assert!(err.starts_with("cannot run /nonexistent/notify"), "{err}");
    }
}
