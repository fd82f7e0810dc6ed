//! Which alert conditions hold for a credential at an instant: a pure
//! function of its status, the settings and the time, tested without any
//! engine or clock.

use std::time::Duration;

use jiff::Timestamp;

use super::{Settings, Severity};
use crate::clock;
use crate::credential::CredentialKind;
use crate::status::Status;
use crate::token::State;

/// A condition that holds for a credential now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Condition {
    pub(super) family: &'static str,
    pub(super) event: &'static str,
    pub(super) stage: usize,
    pub(super) severity: Severity,
    pub(super) summary: String,
    pub(super) expires_at: Option<Timestamp>,
}

/// What holds for `s` at `now` under `settings`. Pure, for tests.
pub(super) fn conditions(s: &Status, settings: &Settings, now: Timestamp) -> Vec<Condition> {
    let mut out = expiry_conditions(s, settings, now);
    out.extend(state_condition(s, settings, now));
    out.extend(fleet_condition(s, settings, now));
    out
}

/// A shared credential whose node has not reached etcd for longer than
/// `refresh_failing_after`: it refreshes nothing until etcd is back.
fn fleet_condition(s: &Status, settings: &Settings, now: Timestamp) -> Option<Condition> {
    let since = s.fleet.as_ref()?.unreachable_since?;
    let down = clock::between(since, now);
    if down < settings.failing_after {
        return None;
    }
    let expired = s.state == State::Expired;
    Some(Condition {
        family: "fleet_unreachable",
        event: "fleet_unreachable",
        stage: 0,
        severity: if expired {
            Severity::Critical
        } else {
            Severity::Warning
        },
        summary: format!(
            "credential `{}` is shared, and this node has not reached etcd for {} (since \
             {since}): it serves its last token until that runs out and refreshes nothing; \
             check etcd and the network path to it",
            s.name,
            clock::human(down)
        ),
        expires_at: s.expires_at,
    })
}

/// The token's own expiry (where nothing renews it) and the login's.
fn expiry_conditions(s: &Status, settings: &Settings, now: Timestamp) -> Vec<Condition> {
    let name = &s.name;
    let fix = fix(s);
    let last = settings.thresholds.len();
    let mut out = Vec::new();
    if s.kind == CredentialKind::GleanToken
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
    out
}

/// What a person runs to renew `s`.
fn fix(s: &Status) -> String {
    let name = &s.name;
    match s.kind {
        CredentialKind::GleanToken => format!(
            "create a new token in Glean's admin console{} and run `tokenctl import {name}` (or \
             update its secret file)",
            s.owner
                .as_deref()
                .map(|o| format!(" (owner: {o})"))
                .unwrap_or_default()
        ),
        _ => format!("run `tokenctl login {name}`"),
    }
}

/// What the credential's state says: it needs a person, or refreshing has
/// been failing too long.
fn state_condition(s: &Status, settings: &Settings, now: Timestamp) -> Option<Condition> {
    let name = &s.name;
    let reason = s.last_error.as_deref().unwrap_or("no reason recorded");
    let (family, severity, summary, expires_at) = match s.state {
        State::NeedsLogin => (
            "needs_login",
            Severity::Critical,
            format!("credential `{name}` needs a person: {reason}"),
            None,
        ),
        State::Misconfigured => (
            "misconfigured",
            Severity::Critical,
            format!("credential `{name}` is refused by its source: {reason}"),
            None,
        ),
        // Only after a refresh actually failed: a first refresh still in
        // flight at startup is not a failure.
        State::Stale | State::Expired if s.kind.renews() && s.failing_since.is_some() => {
            let failing_for = s
                .failing_since
                .map_or(Duration::ZERO, |t| clock::between(t, now));
            let expired = s.state == State::Expired;
            if failing_for < settings.failing_after && !expired {
                return None;
            }
            (
                "refresh_failing",
                if expired {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                format!(
                    "credential `{name}` cannot be refreshed ({reason}); tokend keeps retrying, \
                     check the source"
                ),
                s.expires_at,
            )
        }
        _ => return None,
    };
    Some(Condition {
        family,
        event: family,
        stage: 0,
        severity,
        summary,
        expires_at,
    })
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
