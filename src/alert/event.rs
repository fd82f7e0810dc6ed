//! An alert event as sinks receive it, the record of an open alert, and the
//! bodies of the webhook formats.

use serde::{Deserialize, Serialize};

use super::Severity;

/// One alert event, as every sink receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `expiring`, `expired`, `refresh_failing`, `needs_login`,
    /// `misconfigured`, `recovered`, `digest` or `test`.
    pub event: String,
    /// The credential it is about; empty for digests and tests.
    pub credential: String,
    /// The credential's kind, e.g. `glean_token`.
    pub kind: String,
    /// How urgent it is; `info` for digests, tests and resolves.
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
    /// When it was raised (RFC 3339).
    pub at: String,
}

impl Event {
    /// Whether this event ends an alert (PagerDuty `resolve`).
    pub fn resolves(&self) -> bool {
        self.event == "recovered"
    }
}

/// An alert the engine believes is open, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    /// Stable per credential and alert family.
    pub dedup_key: String,
    /// The credential it is about.
    pub credential: String,
    /// The event last sent.
    pub event: String,
    /// For `expiry`: the threshold index reached (`thresholds.len()` for
    /// expired); otherwise 0.
    pub stage: usize,
    /// The severity last sent.
    pub severity: Severity,
    /// The summary last sent.
    pub summary: String,
    /// When the token or login expires.
    pub expires_at: Option<String>,
    /// When it opened (Unix seconds).
    pub opened_at: i64,
    /// When it was last sent (Unix seconds).
    pub last_sent: i64,
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
