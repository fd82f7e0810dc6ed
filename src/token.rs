//! What a credential serves right now: its current token and its condition,
//! published as one immutable [`Snapshot`] through a `watch` channel.
//!
//! Readers only borrow the latest snapshot (an `Arc` clone, no lock held
//! across anything), so serving never waits on a refresh that is running, and
//! every waiter sees the refresh's outcome the moment it is published.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};

use crate::clock;

/// One access token, ready to send.
pub struct Token {
    /// `Bearer <token>`, built once.
    authorization: SecretString,
    /// When the token expires; `None` for one that does not.
    pub expires_at: Option<Timestamp>,
    /// When tokend obtained (or loaded) the token; renewal is scheduled from it.
    pub issued_at: Timestamp,
    /// First 16 hex digits of the token's SHA-256: how callers name it in
    /// `Invalidate` without sending it back.
    pub fingerprint: String,
    /// Increases with every new token of a credential; watchers use it to
    /// skip snapshots that did not change the token.
    pub generation: u64,
    /// Scopes the server granted, when it said.
    pub scope: Option<String>,
}

impl Token {
    /// A token for `access_token`, its header value and fingerprint computed
    /// once.
    pub fn new(
        access_token: &str,
        expires_at: Option<Timestamp>,
        issued_at: Timestamp,
        generation: u64,
        scope: Option<String>,
    ) -> Self {
        Self {
            authorization: format!("Bearer {access_token}").into(),
            expires_at,
            issued_at,
            fingerprint: crate::oauth::fingerprint(access_token),
            generation,
            scope,
        }
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> &str {
        self.authorization.expose_secret()
    }

    /// Time left at `now`; `None` for a token that does not expire.
    pub fn remaining(&self, now: Timestamp) -> Option<Duration> {
        self.expires_at.map(|at| clock::between(now, at))
    }

    /// Whether the token stays valid for at least `min_valid` after `now`.
    pub fn valid_for(&self, min_valid: Duration, now: Timestamp) -> bool {
        match self.expires_at {
            None => true,
            Some(at) => at > now && clock::between(now, at) >= min_valid,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("authorization", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("fingerprint", &self.fingerprint)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A credential's condition (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A usable token is held.
    Fresh,
    /// A refresh is running; the current token, if any, is still served.
    Refreshing,
    /// Refreshing is failing; the current token is still valid.
    Stale,
    /// No valid token, and refreshing has not (yet) produced one.
    Expired,
    /// A person must log in or import a secret.
    NeedsLogin,
    /// The source refuses the client or its configuration.
    Misconfigured,
}

impl State {
    /// Every state, for exporting one gauge per state.
    pub const ALL: [Self; 6] = [
        Self::Fresh,
        Self::Refreshing,
        Self::Stale,
        Self::Expired,
        Self::NeedsLogin,
        Self::Misconfigured,
    ];

    /// The name in the API, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Refreshing => "refreshing",
            Self::Stale => "stale",
            Self::Expired => "expired",
            Self::NeedsLogin => "needs_login",
            Self::Misconfigured => "misconfigured",
        }
    }
}

/// Everything published about a credential at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The token to serve; `None` until one is obtained or imported.
    pub token: Option<Arc<Token>>,
    /// The credential's condition.
    pub state: State,
    /// What a person should know when not healthy; no secrets.
    pub last_error: Option<Arc<str>>,
    /// When a token was last obtained; `None` if none has been yet.
    pub last_refresh: Option<Timestamp>,
    /// When the driver next renews or retries; `None` when it will not on
    /// its own (no expiry, or a person must act).
    pub next_refresh: Option<Timestamp>,
    /// When the login's refresh token reaches the source's configured
    /// lifetime (`refresh_token_lifetime`), if known.
    pub login_expires_at: Option<Timestamp>,
    /// When the current run of failing refreshes began; `None` when the
    /// last attempt succeeded.
    pub failing_since: Option<Timestamp>,
    /// For a shared credential: this node's place in the fleet.
    pub fleet: Option<FleetStatus>,
}

/// A shared credential's place in the fleet, as status and alerts show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetStatus {
    /// This node's name.
    pub node: Arc<str>,
    /// `leader`, `follower` or `unreachable`.
    pub role: &'static str,
    /// The leading node, when known.
    pub leader: Option<Arc<str>>,
    /// Since when etcd has been unreachable.
    pub unreachable_since: Option<Timestamp>,
}

impl Snapshot {
    /// A snapshot in `state` with no token and nothing else known yet.
    pub fn new(state: State) -> Self {
        Self {
            token: None,
            state,
            last_error: None,
            last_refresh: None,
            next_refresh: None,
            login_expires_at: None,
            failing_since: None,
            fleet: None,
        }
    }

    /// The state as seen at `now`: a held token that has run out makes a
    /// healthy-looking credential `Expired`.
    pub fn state_at(&self, now: Timestamp) -> State {
        let expired = self
            .token
            .as_ref()
            .is_none_or(|t| t.expires_at.is_some_and(|at| at <= now));
        match self.state {
            State::Fresh | State::Stale | State::Refreshing if expired => State::Expired,
            s => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token_and_validity_counts_min_valid() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let exp = now
            .checked_add(jiff::SignedDuration::from_secs(90))
            .unwrap();
        let t = Token::new("SECRET-TOKEN", Some(exp), now, 1, None);
        assert!(!format!("{t:?}").contains("SECRET"));
        assert_eq!(t.authorization(), "Bearer SECRET-TOKEN");
        assert!(t.valid_for(Duration::from_secs(60), now));
        assert!(!t.valid_for(Duration::from_secs(91), now));
        assert_eq!(t.remaining(now), Some(Duration::from_secs(90)));
        let snap = Snapshot {
            token: Some(Arc::new(t)),
            ..Snapshot::new(State::Fresh)
        };
        assert_eq!(snap.state_at(now), State::Fresh);
        assert_eq!(snap.state_at(exp), State::Expired);
    }
}
