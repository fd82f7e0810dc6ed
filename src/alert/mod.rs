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
//!
//! The engine reads statuses, never the broker: a sweep is given the
//! statuses of the moment. Its parts: `settings` (what the config says),
//! `conditions` (what holds, a pure function), `event` (what sinks receive)
//! and `sinks` (delivery).

mod conditions;
mod event;
mod settings;
mod sinks;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::clock::{self, SharedClock};
use crate::metrics::Metrics;
use crate::status::Status;
use crate::store::{self, Store};

pub use event::{Event, Open, pagerduty_body, slack_body};
pub use settings::{Settings, Severity, SinkKind, SinkSpec};

use conditions::{Condition, conditions};
use sinks::{Delivery, deliver};

/// A sink's queue; its worker retries with backoff.
struct Sink {
    spec: Arc<SinkSpec>,
    queue: mpsc::Sender<Delivery>,
}

/// Evaluates conditions, keeps open alerts, and hands events to sinks.
pub struct Engine {
    settings: Settings,
    sinks: Vec<Sink>,
    /// Held only to compute a sweep's changes, never across an await or a
    /// store write.
    open: Mutex<BTreeMap<String, Open>>,
    /// Why the last reload was refused, until one succeeds.
    config_problem: Mutex<Option<String>>,
    /// One sweep at a time, so their store writes land in the order their
    /// decisions were made. Only sweeps wait on it.
    sweeping: tokio::sync::Mutex<()>,
    store: Option<Arc<Store>>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
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
    /// No sink has that name.
    #[error("no sink named `{0}`; sinks are named by `name` in [[alerts.sink]]")]
    NoSuchSink(String),
    /// The sink did not take the event.
    #[error("delivery to `{sink}` failed: {reason}")]
    Failed {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        reason: String,
    },
}

/// Events queued per sink before new ones are dropped (and counted).
const QUEUE: usize = 256;

/// The key of the alert raised while a new config is refused.
const CONFIG_KEY: &str = "config/reload";

/// What one sweep decided: store writes first, then events to send.
#[derive(Default)]
struct Sweep {
    writes: Vec<(String, Option<Vec<u8>>)>,
    events: Vec<Event>,
}

impl Engine {
    /// Builds the engine with the open alerts the store remembers, and starts
    /// one delivery worker per sink. Reads the store (blocking; at startup).
    pub fn start(
        mut settings: Settings,
        store: Option<Arc<Store>>,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        clock: SharedClock,
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
            config_problem: Mutex::new(None),
            sweeping: tokio::sync::Mutex::new(()),
            store,
            metrics,
            clock,
        })
    }

    /// The settings the engine runs with (its sinks moved to workers).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Records why a new config was refused (`None` once one is accepted);
    /// the next sweep raises or resolves the `config/reload` alert.
    pub fn set_config_problem(&self, problem: Option<String>) {
        *lock(&self.config_problem) = problem;
    }

    /// One sweep over `statuses` at the clock's now: compare what holds with
    /// what is open; fire, repeat, escalate and resolve accordingly. The
    /// open set is updated in memory first, then written to the store (one
    /// durable transaction, off the async threads), and only then are the
    /// events sent: a crash right after must not page twice. Answers the
    /// events it sent.
    pub async fn sweep(&self, statuses: &[Status]) -> Vec<Arc<Event>> {
        let _one_at_a_time = self.sweeping.lock().await;
        let now = self.clock.now();
        let sweep = self.evaluate(statuses, now);
        if sweep.events.is_empty() && sweep.writes.is_empty() {
            return Vec::new();
        }
        if let Some(store) = &self.store {
            let writes = sweep.writes;
            if let Err(e) = store::blocking(store, move |s| s.update_alerts(&writes)).await {
                tracing::error!(error = %e, "cannot record alert state");
            }
        }
        sweep.events.into_iter().map(|e| self.dispatch(e)).collect()
    }

    /// What a sweep at `now` changes, applied to the open set in memory.
    fn evaluate(&self, statuses: &[Status], now: Timestamp) -> Sweep {
        let mut open = lock(&self.open);
        let mut sweep = Sweep::default();
        let mut live = HashSet::new();
        for s in statuses {
            for c in conditions(s, &self.settings, now) {
                let key = format!("{}/{}", s.name, c.family);
                live.insert(key.clone());
                let repeat = match c.family {
                    "expiry" | "login_expiry" => self.settings.repeat_expiring,
                    _ => self.settings.repeat_failing,
                };
                if !due(open.get(&key), &c, repeat, now) {
                    continue;
                }
                let event = self.event(c.event, s, &c, key.clone(), now);
                let record = open_record(&open, &key, &event, c.stage, now);
                sweep.open(&mut open, record, event);
            }
        }
        if let Some(problem) = lock(&self.config_problem).clone() {
            live.insert(CONFIG_KEY.to_owned());
            self.config_alert(&mut open, &mut sweep, &problem, now);
        }
        let ended: Vec<String> = open
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for key in ended {
            let Some(o) = open.remove(&key) else { continue };
            let status = statuses.iter().find(|s| *s.name == *o.credential);
            sweep.writes.push((key.clone(), None));
            sweep.events.push(self.recovered(o, status, key, now));
        }
        sweep
    }

    /// The `config/reload` alert: raised while a new config is refused,
    /// repeated like a failing refresh.
    fn config_alert(
        &self,
        open: &mut BTreeMap<String, Open>,
        sweep: &mut Sweep,
        problem: &str,
        now: Timestamp,
    ) {
        let repeat = self.settings.repeat_failing.as_secs() as i64;
        let due = open
            .get(CONFIG_KEY)
            .is_none_or(|o| now.as_second() - o.last_sent >= repeat);
        if !due {
            return;
        }
        let event = Event {
            event: "misconfigured".into(),
            credential: "(config)".into(),
            kind: "config".into(),
            severity: Severity::Critical,
            summary: format!(
                "tokend refused its new config and keeps serving the previous one; fix: {problem}"
            ),
            expires_at: None,
            dedup_key: CONFIG_KEY.into(),
            source: self.settings.source.clone(),
            at: now.to_string(),
        };
        let record = open_record(open, CONFIG_KEY, &event, 0, now);
        sweep.open(open, record, event);
    }

    /// The `recovered` event resolving `o`.
    fn recovered(&self, o: Open, status: Option<&Status>, key: String, now: Timestamp) -> Event {
        let summary = format!(
            "credential `{}` recovered: the `{}` alert ended{}",
            o.credential,
            o.event,
            status
                .map(|s| format!(" (state {})", s.state.as_str()))
                .unwrap_or_else(|| " (removed)".into())
        );
        Event {
            event: "recovered".into(),
            credential: o.credential,
            kind: status
                .map(|s| s.kind.as_str())
                .unwrap_or_default()
                .to_owned(),
            severity: Severity::Info,
            summary,
            expires_at: None,
            dedup_key: key,
            source: self.settings.source.clone(),
            at: now.to_string(),
        }
    }

    /// The daily digest of `statuses`: everything that expires within the
    /// largest threshold. Each sink gets the lines of the credentials its
    /// `credentials` filter covers (a sink for `team-a-*` hears nothing of
    /// `team-b-…`). Returns what was queued, by sink.
    pub fn digest(&self, statuses: &[Status]) -> Vec<(String, Arc<Event>)> {
        let now = self.clock.now();
        let horizon = self
            .settings
            .thresholds
            .first()
            .copied()
            .unwrap_or_default();
        let mut lines = Vec::new();
        for s in statuses {
            for (what, at) in [("token", s.expires_at), ("login", s.login_expires_at)] {
                if let Some(at) = at
                    && clock::between(now, at) <= horizon
                {
                    lines.push((&*s.name, format!("{} ({what}) expires at {at}", s.name)));
                }
            }
        }
        tracing::info!(event = "digest", expiring = lines.len(), "alert");
        let mut sent = Vec::new();
        for sink in &self.sinks {
            let mine: Vec<&str> = lines
                .iter()
                .filter(|(name, _)| sink.spec.covers(name))
                .map(|(_, line)| line.as_str())
                .collect();
            let summary = if mine.is_empty() {
                format!(
                    "tokend digest: nothing expires within {}",
                    clock::human(horizon)
                )
            } else {
                format!(
                    "tokend digest: {} expiring within {}: {}",
                    mine.len(),
                    clock::human(horizon),
                    mine.join("; ")
                )
            };
            let event = self.notice("digest", summary, now);
            if sink.spec.wants(&event) {
                let event = Arc::new(event);
                self.queue(sink, &event);
                sent.push((sink.spec.name.clone(), event));
            }
        }
        sent
    }

    /// Open alerts, for `tokenctl alerts`.
    pub fn open_alerts(&self) -> Vec<Open> {
        lock(&self.open).values().cloned().collect()
    }

    /// Sends a test event through the sink `name` and waits for the outcome.
    pub async fn test(&self, name: &str) -> Result<(), TestAlertError> {
        let sink = self
            .sinks
            .iter()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| TestAlertError::NoSuchSink(name.to_owned()))?;
        let summary = format!(
            "tokend test alert from {} to sink `{name}`",
            self.settings.source
        );
        let event = self.notice("test", summary, self.clock.now());
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

    /// An event about credential status `s` meeting condition `c`.
    fn event(
        &self,
        event: &str,
        s: &Status,
        c: &Condition,
        dedup_key: String,
        now: Timestamp,
    ) -> Event {
        Event {
            event: event.to_owned(),
            credential: s.name.to_string(),
            kind: s.kind.as_str().to_owned(),
            severity: c.severity,
            summary: c.summary.clone(),
            expires_at: c.expires_at.map(|t| t.to_string()),
            dedup_key,
            source: self.settings.source.clone(),
            at: now.to_string(),
        }
    }

    /// An informational event about no credential (`digest`, `test`).
    fn notice(&self, event: &str, summary: String, now: Timestamp) -> Event {
        Event {
            event: event.into(),
            credential: String::new(),
            kind: String::new(),
            severity: Severity::Info,
            summary,
            expires_at: None,
            dedup_key: format!("{}/{event}", self.settings.source),
            source: self.settings.source.clone(),
            at: now.to_string(),
        }
    }

    /// Queues `event` for every sink that wants it; a full queue drops the
    /// event for that sink (counted and logged) rather than wait.
    fn dispatch(&self, event: Event) -> Arc<Event> {
        tracing::info!(event = %event.event, credential = %event.credential, dedup_key = %event.dedup_key, "alert");
        let event = Arc::new(event);
        for sink in self.sinks.iter().filter(|s| s.spec.wants(&event)) {
            self.queue(sink, &event);
        }
        event
    }

    /// Queues `event` for `sink`; a full queue drops it (counted and
    /// logged) rather than wait.
    fn queue(&self, sink: &Sink, event: &Arc<Event>) {
        let delivery = Delivery {
            event: Arc::clone(event),
            done: None,
        };
        if sink.queue.try_send(delivery).is_err() {
            self.metrics.alert_delivery(&sink.spec.name, "dropped");
            tracing::error!(sink = %sink.spec.name, "alert queue full; event dropped");
        }
    }
}

impl Sweep {
    /// Opens (or refreshes) `record` and queues its write and `event`.
    fn open(&mut self, open: &mut BTreeMap<String, Open>, record: Open, event: Event) {
        self.writes.push((
            record.dedup_key.clone(),
            Some(serde_json::to_vec(&record).unwrap_or_default()),
        ));
        open.insert(record.dedup_key.clone(), record);
        self.events.push(event);
    }
}

/// Whether condition `c` must be sent now, given what is open under its key.
fn due(open: Option<&Open>, c: &Condition, repeat: std::time::Duration, now: Timestamp) -> bool {
    match open {
        None => true,
        Some(o) if o.stage != c.stage || o.event != c.event => true,
        Some(o) => now.as_second() - o.last_sent >= repeat.as_secs() as i64,
    }
}

/// The open record for `event`, keeping when the alert first opened.
fn open_record(
    open: &BTreeMap<String, Open>,
    key: &str,
    event: &Event,
    stage: usize,
    now: Timestamp,
) -> Open {
    Open {
        dedup_key: key.to_owned(),
        credential: event.credential.clone(),
        event: event.event.clone(),
        stage,
        severity: event.severity,
        summary: event.summary.clone(),
        expires_at: event.expires_at.clone(),
        opened_at: open.get(key).map_or(now.as_second(), |o| o.opened_at),
        last_sent: now.as_second(),
    }
}

/// Locks a mutex no holder can leave inconsistent (every critical section
/// is a plain map update), so a poisoned one is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
