//! What the `[alerts]` table configures: thresholds, repeats, schedules and
//! the sinks events go to.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::Event;

/// How urgent an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record: digests, tests, resolves.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The severity named `s` in a config.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Self::Info),
            "warning" => Some(Self::Warning),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }

    /// The name in configs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Where events go.
#[derive(Debug)]
pub enum SinkKind {
    /// A structured `tracing` event on target `alert`.
    Log,
    /// POST of the event as JSON, or a Slack-compatible `{"text": …}`.
    Webhook {
        /// May embed a token (Slack's do), hence secret.
        url: SecretString,
        /// Slack's body format instead of the event's JSON.
        slack: bool,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// PagerDuty Events API v2.
    PagerDuty {
        /// The events endpoint.
        url: String,
        /// The integration's routing key.
        routing_key: SecretString,
    },
    /// A command receiving the event as JSON on stdin.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
        /// Killed after this long.
        timeout: Duration,
    },
}

/// A configured sink.
#[derive(Debug)]
pub struct SinkSpec {
    /// Unique among the sinks, for `tokenctl test-alert`.
    pub name: String,
    /// Less severe events are not sent here (resolves always are).
    pub min_severity: Severity,
    /// Credential name patterns (`*` globs, lower case); empty: every
    /// credential.
    pub credentials: Vec<String>,
    /// Where and how.
    pub kind: SinkKind,
}

impl SinkSpec {
    /// Whether this sink takes `e`.
    pub(super) fn wants(&self, e: &Event) -> bool {
        // A resolve goes wherever its trigger went.
        let severity_ok = e.resolves() || e.event == "test" || e.severity >= self.min_severity;
        severity_ok && (e.credential.is_empty() || self.covers(&e.credential))
    }

    /// Whether events about `credential` may go to this sink.
    pub(super) fn covers(&self, credential: &str) -> bool {
        self.credentials.is_empty()
            || self
                .credentials
                .iter()
                .any(|p| crate::glean::glob_match(p.as_bytes(), credential.as_bytes()))
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
    /// Where events go.
    pub sinks: Vec<SinkSpec>,
}

impl Settings {
    /// The expiry thresholds when the config names none.
    pub const DEFAULT_THRESHOLDS: [Duration; 4] = [
        Duration::from_secs(14 * 86_400),
        Duration::from_secs(3 * 86_400),
        Duration::from_secs(86_400),
        Duration::from_secs(3600),
    ];
}
