//! Alerts to on-call: what is wrong or about to be, deduplicated, repeated
//! while it lasts, resolved when it ends, and delivered to sinks without ever
//! blocking refreshing or serving.
//!
//! Each credential can have at most one open alert per family, keyed by a
//! stable dedup key (`credential/family`): `expiry` (the `expiring` stages
//! escalate into `expired` on the same key, so a pager sees one incident),
//! `login_expiry` (the refresh token's known lifetime), `refresh_failing`,
//! `needs_login` and `misconfigured`. Open alerts are kept in the store, so
//! a restart neither pages again nor forgets what to resolve.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::broker::{Broker, Status};
use crate::clock;
use crate::store::Store;
use crate::token::State;

/// How urgent an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One alert event, as every sink receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `expiring`, `expired`, `refresh_failing`, `needs_login`,
    /// `misconfigured`, `recovered`, `digest` or `test`.
    pub event: String,
    pub credential: String,
    /// The credential's kind, e.g. `glean_token`.
    pub kind: String,
    pub severity: Severity,
    /// What happened and what to run.
    pub summary: String,
    /// When the token (or the login) expires, if known.
    pub expires_at: Option<String>,
    /// Stable per credential and alert family; `recovered` carries the key it
    /// resolves.
    pub dedup_key: String,
    /// The host (PagerDuty's `source`).
    pub source: String,
    pub at: String,
}

impl Event {
    /// Whether this event ends an alert (PagerDuty `resolve`).
    pub fn resolves(&self) -> bool {
        self.event == "recovered"
    }
}

/// Where events go.
#[derive(Debug)]
pub enum SinkKind {
    /// A structured `tracing` event on target `alert`.
    Log,
    /// POST of the event as JSON, or a Slack-compatible `{"text": …}`.
    Webhook {
        url: SecretString,
        slack: bool,
        headers: Vec<(String, String)>,
    },
    /// PagerDuty Events API v2.
    PagerDuty {
        url: String,
        routing_key: SecretString,
    },
    /// A command receiving the event as JSON on stdin.
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
}

/// A configured sink.
#[derive(Debug)]
pub struct SinkSpec {
    pub name: String,
    pub min_severity: Severity,
    /// Credential name patterns (`*` globs, lower case); empty: every
    /// credential.
    pub credentials: Vec<String>,
    pub kind: SinkKind,
}

impl SinkSpec {
    fn wants(&self, e: &Event) -> bool {
        // A resolve goes wherever its trigger went.
        let severity_ok = e.resolves() || e.event == "test" || e.severity >= self.min_severity;
        let credential_ok = self.credentials.is_empty()
            || e.credential.is_empty()
            || self
                .credentials
                .iter()
                .any(|p| crate::glean::glob_match(p.as_bytes(), e.credential.as_bytes()));
        severity_ok && credential_ok
    }
}

/// The `[alerts]` table.
#[derive(Debug)]
pub struct Settings {
    /// Before expiry, largest first. Default 14d, 3d, 1d, 1h.
    pub thresholds: Vec<Duration>,
    /// Default 24h.
    pub repeat_expiring: Duration,
    /// Default 1h.
    pub repeat_failing: Duration,
    /// Stale for longer than this is `refresh_failing`. Default 15m.
    pub failing_after: Duration,
    /// Cron (with seconds) for the sweep. Default every minute.
    pub sweep: String,
    /// Cron for the daily digest; default 09:00 UTC.
    pub digest: Option<String>,
    /// PagerDuty `source`; default the host name.
    pub source: String,
    pub sinks: Vec<SinkSpec>,
}

impl Settings {
    pub const DEFAULT_THRESHOLDS: [Duration; 4] = [
        Duration::from_secs(14 * 86_400),
        Duration::from_secs(3 * 86_400),
        Duration::from_secs(86_400),
        Duration::from_secs(3600),
    ];
}

/// An alert the engine believes is open, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub dedup_key: String,
    pub credential: String,
    pub event: String,
    /// For `expiry`: the threshold index reached (`thresholds.len()` for
    /// expired); otherwise 0.
    pub stage: usize,
    pub severity: Severity,
    pub summary: String,
    pub expires_at: Option<String>,
    pub opened_at: i64,
    pub last_sent: i64,
}

/// A condition that holds for a credential now.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Condition {
    family: &'static str,
    event: &'static str,
    stage: usize,
    severity: Severity,
    summary: String,
    expires_at: Option<Timestamp>,
}

/// What holds for `s` at `now` under `settings`. Pure, for tests.
fn conditions(s: &Status, settings: &Settings, now: Timestamp) -> Vec<Condition> {
    let name = &s.name;
    let mut out = Vec::new();
    let fix = match s.kind {
        "glean_token" => format!(
            "create a new token in Glean's admin console{} and run `tokenctl import {name}` (or \
             update its secret file)",
            s.owner
                .as_deref()
                .map(|o| format!(" (owner: {o})"))
                .unwrap_or_default()
        ),
        _ => format!("run `tokenctl login {name}`"),
    };
    let last = settings.thresholds.len();
    // Expiry of the token itself matters only where nothing renews it.
    if s.kind == "glean_token"
        && let Some(at) = s.expires_at
    {
        if at <= now {
            out.push(Condition {
                family: "expiry",
                event: "expired",
                stage: last,
                severity: Severity::Critical,
                summary: format!("credential `{name}` expired at {at}; {fix}"),
                expires_at: Some(at),
            });
        } else if let Some(stage) = stage(settings, clock::between(now, at)) {
            out.push(Condition {
                family: "expiry",
                event: "expiring",
                stage,
                severity: stage_severity(stage, last),
                summary: format!(
                    "credential `{name}` expires in {} (at {at}); {fix}",
                    clock::human(clock::between(now, at))
                ),
                expires_at: Some(at),
            });
        }
    }
    if let Some(at) = s.login_expires_at
        && s.state != State::NeedsLogin
        && let Some(stage) = stage(settings, clock::between(now, at))
    {
        out.push(Condition {
            family: "login_expiry",
            event: "expiring",
            stage,
            severity: stage_severity(stage, last),
            summary: format!(
                "the refresh token of `{name}` reaches the source's lifetime limit in {} (at \
                 {at}); {fix} before then",
                clock::human(clock::between(now, at))
            ),
            expires_at: Some(at),
        });
    }
    let reason = s.last_error.as_deref().unwrap_or("no reason recorded");
    match s.state {
        State::NeedsLogin => out.push(Condition {
            family: "needs_login",
            event: "needs_login",
            stage: 0,
            severity: Severity::Critical,
            summary: format!("credential `{name}` needs a person: {reason}"),
            expires_at: None,
        }),
        State::Misconfigured => out.push(Condition {
            family: "misconfigured",
            event: "misconfigured",
            stage: 0,
            severity: Severity::Critical,
            summary: format!("credential `{name}` is refused by its source: {reason}"),
            expires_at: None,
        }),
        // Only after a refresh actually failed: a first refresh still in
        // flight at startup is not a failure.
        State::Stale | State::Expired if s.kind != "glean_token" && s.failing_since.is_some() => {
            let failing_for = s
                .failing_since
                .map_or(Duration::ZERO, |t| clock::between(t, now));
            if failing_for >= settings.failing_after || s.state == State::Expired {
                out.push(Condition {
                    family: "refresh_failing",
                    event: "refresh_failing",
                    stage: 0,
                    severity: if s.state == State::Expired {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    summary: format!(
                        "credential `{name}` cannot be refreshed ({reason}); tokend keeps \
                         retrying, check the source"
                    ),
                    expires_at: s.expires_at,
                });
            }
        }
        _ => {}
    }
    out
}

/// The index of the smallest threshold `left` is within, if any.
fn stage(settings: &Settings, left: Duration) -> Option<usize> {
    settings.thresholds.iter().rposition(|t| left <= *t)
}

/// The last (smallest) threshold is critical, earlier ones warnings.
fn stage_severity(stage: usize, last: usize) -> Severity {
    if stage + 1 >= last {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

/// One delivery to one sink; `done` learns the outcome (for `test-alert`).
struct Delivery {
    event: Arc<Event>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// A sink's queue; its worker retries with backoff.
struct Sink {
    spec: Arc<SinkSpec>,
    queue: mpsc::Sender<Delivery>,
}

/// Evaluates conditions, keeps open alerts, and hands events to sinks.
pub struct Engine {
    settings: Settings,
    sinks: Vec<Sink>,
    open: Mutex<BTreeMap<String, Open>>,
    /// Why the last reload was refused, until one succeeds.
    config_problem: std::sync::Mutex<Option<String>>,
    store: Option<Arc<Store>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

/// Why a test alert failed.
#[derive(Debug, thiserror::Error)]
pub enum TestAlertError {
    #[error("no sink named `{0}`; sinks are named by `name` in [[alerts.sink]]")]
    NoSuchSink(String),
    #[error("delivery to `{sink}` failed: {reason}")]
    Failed { sink: String, reason: String },
}

const QUEUE: usize = 256;
const ATTEMPTS: u32 = 4;

impl Engine {
    /// Builds the engine with the open alerts the store remembers, and starts
    /// one delivery worker per sink.
    pub fn start(
        mut settings: Settings,
        store: Option<Arc<Store>>,
        http: reqwest::Client,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let mut open = BTreeMap::new();
        if let Some(store) = &store {
            match store.alerts() {
                Ok(list) => {
                    for bytes in list {
                        if let Ok(o) = serde_json::from_slice::<Open>(&bytes) {
                            open.insert(o.dedup_key.clone(), o);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read open alerts from the store"),
            }
        }
        let sinks = std::mem::take(&mut settings.sinks)
            .into_iter()
            .map(|spec| {
                let spec = Arc::new(spec);
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(
                    Arc::clone(&spec),
                    rx,
                    http.clone(),
                    Arc::clone(&metrics),
                ));
                Sink { spec, queue: tx }
            })
            .collect();
        Arc::new(Self {
            settings,
            sinks,
            open: Mutex::new(open),
            config_problem: std::sync::Mutex::new(None),
            store,
            metrics,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Records why a new config was refused (`None` once one is accepted);
    /// the next sweep raises or resolves the `config/reload` alert.
    pub fn set_config_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.config_problem.lock() {
            *p = problem;
        }
    }

    /// One sweep: compare what holds now with what is open; fire, repeat,
    /// escalate and resolve accordingly.
    pub async fn sweep(&self, broker: &Broker, now: Timestamp) {
        let statuses = broker.list_all(now);
        let mut open = self.open.lock().await;
        let mut live = std::collections::HashSet::new();
        for s in &statuses {
            for c in conditions(s, &self.settings, now) {
                let key = format!("{}/{}", s.name, c.family);
                live.insert(key.clone());
                let repeat = match c.family {
                    "expiry" | "login_expiry" => self.settings.repeat_expiring,
                    _ => self.settings.repeat_failing,
                };
                let send = match open.get(&key) {
                    None => true,
                    Some(o) if o.stage != c.stage || o.event != c.event => true,
                    Some(o) => now.as_second() - o.last_sent >= repeat.as_secs() as i64,
                };
                if !send {
                    continue;
                }
                let opened_at = open.get(&key).map_or(now.as_second(), |o| o.opened_at);
                let record = Open {
                    dedup_key: key.clone(),
                    credential: s.name.to_string(),
                    event: c.event.to_owned(),
                    stage: c.stage,
                    severity: c.severity,
                    summary: c.summary.clone(),
                    expires_at: c.expires_at.map(|t| t.to_string()),
                    opened_at,
                    last_sent: now.as_second(),
                };
                // Remember before sending: a crash right after must not page twice.
                self.persist(&key, Some(&record));
                open.insert(key.clone(), record);
                self.dispatch(self.event(
                    c.event,
                    s,
                    c.severity,
                    c.summary,
                    c.expires_at,
                    key,
                    now,
                ));
            }
        }
        let problem = self.config_problem.lock().ok().and_then(|p| p.clone());
        if let Some(problem) = problem {
            let key = "config/reload".to_owned();
            live.insert(key.clone());
            let due = open.get(&key).is_none_or(|o| {
                now.as_second() - o.last_sent >= self.settings.repeat_failing.as_secs() as i64
            });
            if due {
                let summary = format!(
                    "tokend refused its new config and keeps serving the previous one; fix: {problem}"
                );
                let record = Open {
                    dedup_key: key.clone(),
                    credential: "(config)".into(),
                    event: "misconfigured".into(),
                    stage: 0,
                    severity: Severity::Critical,
                    summary: summary.clone(),
                    expires_at: None,
                    opened_at: open.get(&key).map_or(now.as_second(), |o| o.opened_at),
                    last_sent: now.as_second(),
                };
                self.persist(&key, Some(&record));
                open.insert(key.clone(), record);
                self.dispatch(Event {
                    event: "misconfigured".into(),
                    credential: "(config)".into(),
                    kind: "config".into(),
                    severity: Severity::Critical,
                    summary,
                    expires_at: None,
                    dedup_key: key,
                    source: self.settings.source.clone(),
                    at: now.to_string(),
                });
            }
        }
        let ended: Vec<String> = open
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for key in ended {
            let Some(o) = open.remove(&key) else { continue };
            self.persist(&key, None);
            let status = statuses.iter().find(|s| *s.name == *o.credential);
            let summary = format!(
                "credential `{}` recovered: the `{}` alert ended{}",
                o.credential,
                o.event,
                status
                    .map(|s| format!(" (state {})", s.state.as_str()))
                    .unwrap_or_else(|| " (removed)".into())
            );
            let event = Event {
                event: "recovered".into(),
                credential: o.credential.clone(),
                kind: status.map(|s| s.kind).unwrap_or_default().to_owned(),
                severity: Severity::Info,
                summary,
                expires_at: None,
                dedup_key: key,
                source: self.settings.source.clone(),
                at: now.to_string(),
            };
            self.dispatch(event);
        }
    }

    /// The daily digest: everything that expires within the largest threshold.
    pub fn digest(&self, broker: &Broker, now: Timestamp) {
        let horizon = self
            .settings
            .thresholds
            .first()
            .copied()
            .unwrap_or_default();
        let mut lines = Vec::new();
        for s in broker.list_all(now) {
            for (what, at) in [("token", s.expires_at), ("login", s.login_expires_at)] {
                if let Some(at) = at
                    && clock::between(now, at) <= horizon
                {
                    lines.push(format!("{} ({what}) expires at {at}", s.name));
                }
            }
        }
        let summary = if lines.is_empty() {
            format!(
                "tokend digest: nothing expires within {}",
                clock::human(horizon)
            )
        } else {
            format!(
                "tokend digest: {} expiring within {}: {}",
                lines.len(),
                clock::human(horizon),
                lines.join("; ")
            )
        };
        self.dispatch(Event {
            event: "digest".into(),
            credential: String::new(),
            kind: String::new(),
            severity: Severity::Info,
            summary,
            expires_at: None,
            dedup_key: format!("{}/digest", self.settings.source),
            source: self.settings.source.clone(),
            at: now.to_string(),
        });
    }

    /// Open alerts, for `tokenctl alerts`.
    pub async fn open_alerts(&self) -> Vec<Open> {
        self.open.lock().await.values().cloned().collect()
    }

    /// Sends a test event through the sink `name` and waits for the outcome.
    pub async fn test(&self, name: &str) -> Result<(), TestAlertError> {
        let sink = self
            .sinks
            .iter()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| TestAlertError::NoSuchSink(name.to_owned()))?;
        let now = clock::now();
        let event = Event {
            event: "test".into(),
            credential: String::new(),
            kind: String::new(),
            severity: Severity::Info,
            summary: format!(
                "tokend test alert from {} to sink `{name}`",
                self.settings.source
            ),
            expires_at: None,
            dedup_key: format!("{}/test", self.settings.source),
            source: self.settings.source.clone(),
            at: now.to_string(),
        };
        let (tx, rx) = oneshot::channel();
        let failed = |reason: String| TestAlertError::Failed {
            sink: name.to_owned(),
            reason,
        };
        sink.queue
            .try_send(Delivery {
                event: Arc::new(event),
                done: Some(tx),
            })
            .map_err(|_| failed("its queue is full".into()))?;
        rx.await
            .map_err(|_| failed("the delivery task stopped".into()))?
            .map_err(failed)
    }

    #[allow(clippy::too_many_arguments)] // one event's fields, named at the call
    fn event(
        &self,
        event: &str,
        s: &Status,
        severity: Severity,
        summary: String,
        expires_at: Option<Timestamp>,
        dedup_key: String,
        now: Timestamp,
    ) -> Event {
        Event {
            event: event.to_owned(),
            credential: s.name.to_string(),
            kind: s.kind.to_owned(),
            severity,
            summary,
            expires_at: expires_at.map(|t| t.to_string()),
            dedup_key,
            source: self.settings.source.clone(),
            at: now.to_string(),
        }
    }

    /// Queues `event` for every sink that wants it; a full queue drops the
    /// event for that sink (counted and logged) rather than wait.
    fn dispatch(&self, event: Event) {
        tracing::info!(event = %event.event, credential = %event.credential, dedup_key = %event.dedup_key, "alert");
        let event = Arc::new(event);
        for sink in self.sinks.iter().filter(|s| s.spec.wants(&event)) {
            let delivery = Delivery {
                event: Arc::clone(&event),
                done: None,
            };
            if sink.queue.try_send(delivery).is_err() {
                self.metrics.alert_delivery(&sink.spec.name, "dropped");
                tracing::error!(sink = %sink.spec.name, "alert queue full; event dropped");
            }
        }
    }

    fn persist(&self, key: &str, open: Option<&Open>) {
        let Some(store) = &self.store else { return };
        let result = match open {
            Some(o) => store.put_alert(key, &serde_json::to_vec(o).unwrap_or_default()),
            None => store.remove_alert(key),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record alert state");
        }
    }
}

/// A sink's worker: delivers queued events in order, retrying each with
/// doubling backoff, so a slow or failing sink delays only itself.
async fn deliver(
    spec: Arc<SinkSpec>,
    mut queue: mpsc::Receiver<Delivery>,
    http: reqwest::Client,
    metrics: Arc<crate::metrics::Metrics>,
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

/// A Slack-compatible incoming-webhook body: `text` renders everywhere.
pub fn slack_body(e: &Event) -> serde_json::Value {
    let icon = match (e.resolves(), e.severity) {
        (true, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":rotating_light:",
        (_, Severity::Warning) => ":warning:",
        (_, Severity::Info) => ":information_source:",
    };
    serde_json::json!({
        "text": format!("{icon} *{}* [{}] {}", e.event, e.severity.as_str(), e.summary),
    })
}

/// A PagerDuty Events API v2 body: `trigger` (or `resolve`) with the dedup key.
pub fn pagerduty_body(e: &Event, routing_key: &str) -> serde_json::Value {
    if e.resolves() {
        return serde_json::json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": e.dedup_key,
        });
    }
    serde_json::json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": e.dedup_key,
        "payload": {
            "summary": e.summary.chars().take(1024).collect::<String>(),
            "source": e.source,
            "severity": match e.severity {
                Severity::Info => "info",
                Severity::Warning => "warning",
                Severity::Critical => "critical",
            },
            "component": e.credential,
            "class": e.event,
            "custom_details": e,
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            thresholds: vec![Duration::from_secs(3600), Duration::from_secs(60)],
            repeat_expiring: Duration::from_secs(86_400),
            repeat_failing: Duration::from_secs(3600),
            failing_after: Duration::from_secs(900),
            sweep: String::new(),
            digest: None,
            source: "host".into(),
            sinks: Vec::new(),
        }
    }

    fn status(state: State, expires_in: Option<i64>, now: Timestamp) -> Status {
        Status {
            name: "g".into(),
            kind: "glean_token",
            permission: None,
            state,
            expires_at: expires_in
                .map(|s| now.checked_add(jiff::SignedDuration::from_secs(s)).unwrap()),
            scopes: Vec::new(),
            owner: Some("ops@corp.example".into()),
            instance: None,
            last_error: None,
            last_refresh: None,
            next_refresh: None,
            login_expires_at: None,
            failing_since: None,
        }
    }

    #[test]
    fn expiry_stages_escalate_to_expired() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let st = settings();
        assert!(conditions(&status(State::Fresh, Some(7200), now), &st, now).is_empty());
        let c = conditions(&status(State::Fresh, Some(1800), now), &st, now);
        assert_eq!(
            (c[0].event, c[0].stage, c[0].severity),
            ("expiring", 0, Severity::Warning)
        );
        assert!(
            c[0].summary.contains("tokenctl import g") && c[0].summary.contains("ops@corp.example")
        );
        let c = conditions(&status(State::Fresh, Some(30), now), &st, now);
        assert_eq!((c[0].stage, c[0].severity), (1, Severity::Critical));
        let c = conditions(&status(State::Expired, Some(-5), now), &st, now);
        assert_eq!(
            (c[0].family, c[0].event, c[0].stage),
            ("expiry", "expired", 2)
        );
    }

    #[test]
    fn refresh_failing_needs_a_failure_not_just_a_first_refresh() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let st = settings();
        let mut s = status(State::Expired, None, now);
        s.kind = "oauth_client_credentials";
        // Starting up, before the first token: no alert.
        assert!(conditions(&s, &st, now).is_empty());
        // Failing, with no token left: critical at once.
        s.failing_since = Some(now);
        let c = conditions(&s, &st, now);
        assert_eq!(
            (c[0].family, c[0].severity),
            ("refresh_failing", Severity::Critical)
        );
        // Stale (token still valid): only after `failing_after`.
        s.state = State::Stale;
        assert!(conditions(&s, &st, now).is_empty());
        s.failing_since = now.checked_sub(jiff::SignedDuration::from_secs(901)).ok();
        assert_eq!(conditions(&s, &st, now)[0].severity, Severity::Warning);
    }

    #[test]
    fn bodies_match_their_formats() {
        let e = Event {
            event: "needs_login".into(),
            credential: "sso".into(),
            kind: "oauth_refresh".into(),
            severity: Severity::Critical,
            summary: "run `tokenctl login sso`".into(),
            expires_at: None,
            dedup_key: "sso/needs_login".into(),
            source: "host".into(),
            at: "2030-01-01T00:00:00Z".into(),
        };
        let pd = pagerduty_body(&e, "rk");
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["payload"]["severity"], "critical");
        assert!(
            slack_body(&e)["text"]
                .as_str()
                .unwrap()
                .contains("tokenctl login sso")
        );
        let resolve = Event {
            event: "recovered".into(),
            ..e
        };
        assert_eq!(pagerduty_body(&resolve, "rk")["event_action"], "resolve");
    }
}
