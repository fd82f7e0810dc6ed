//! The read-only view of a credential: what `ListCredentials`, the alert
//! sweep, the metrics and systemd's status line see. It carries no secret, so
//! any part of the daemon may hold it without holding the broker.

use std::sync::Arc;

use jiff::Timestamp;

use crate::credential::{Credential, CredentialKind, Kind};
use crate::glean::Permission;
use crate::token::{Snapshot, State};

/// One credential's condition at one instant; no secrets.
#[derive(Clone, Debug)]
pub struct Status {
    /// The credential's configured name.
    pub name: Arc<str>,
    /// Its kind.
    pub kind: CredentialKind,
    /// For Glean tokens.
    pub permission: Option<Permission>,
    /// As seen at the instant of the listing (a held token that ran out
    /// shows as `Expired`).
    pub state: State,
    /// When the current token expires.
    pub expires_at: Option<Timestamp>,
    /// Glean scopes, or the OAuth scopes requested.
    pub scopes: Vec<String>,
    /// Whom to ask when a Glean token must be rotated.
    pub owner: Option<String>,
    /// The Glean backend the credential is for.
    pub instance: Option<String>,
    /// What a person should know when not healthy.
    pub last_error: Option<Arc<str>>,
    /// When a token was last obtained.
    pub last_refresh: Option<Timestamp>,
    /// When the driver next renews.
    pub next_refresh: Option<Timestamp>,
    /// When the login's refresh token reaches the source's lifetime.
    pub login_expires_at: Option<Timestamp>,
    /// When the current run of failing refreshes began.
    pub failing_since: Option<Timestamp>,
    /// For a shared credential: this node's place in the fleet.
    pub fleet: Option<crate::token::FleetStatus>,
}

impl Status {
    /// The status of `c`, whose latest snapshot is `snap`, at `now`.
    pub fn of(c: &Credential, snap: &Snapshot, now: Timestamp) -> Self {
        let (permission, scopes, owner, instance) = match &c.kind {
            Kind::Glean(g) => (
                Some(g.permission),
                g.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                g.owner.clone(),
                g.instance.clone(),
            ),
            Kind::OAuth(o) => (None, o.client.scopes.clone(), None, o.instance.clone()),
        };
        let state = snap.state_at(now);
        let last_error = match (state, &snap.last_error, &c.kind) {
            (State::Expired, None, Kind::Glean(_)) => Some("expired; rotate the token".into()),
            (_, e, _) => e.clone(),
        };
        Self {
            name: Arc::clone(&c.name),
            kind: c.kind.kind(),
            permission,
            state,
            expires_at: snap.token.as_ref().and_then(|t| t.expires_at),
            scopes,
            owner,
            instance,
            last_error,
            last_refresh: snap.last_refresh,
            next_refresh: snap.next_refresh,
            login_expires_at: snap.login_expires_at,
            failing_since: snap.failing_since,
            fleet: snap.fleet.clone(),
        }
    }

    /// A status with only a name, kind and state set: for tests of the
    /// consumers of statuses (alerts, metrics).
    pub fn new(name: &str, kind: CredentialKind, state: State) -> Self {
        Self {
            name: name.into(),
            kind,
            permission: None,
            state,
            expires_at: None,
            scopes: Vec::new(),
            owner: None,
            instance: None,
            last_error: None,
            last_refresh: None,
            next_refresh: None,
            login_expires_at: None,
            failing_since: None,
            fleet: None,
        }
    }
}
