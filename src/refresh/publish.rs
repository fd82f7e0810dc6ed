//! The one writer of a credential's `watch` channel. Every change a driver
//! makes to what callers see goes through here, so the published snapshot
//! and the driver's own view never disagree.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::{Driver, DriverError, schedule};
use crate::token::{Snapshot, State, Token};

impl Driver {
    /// The latest published snapshot.
    pub(super) fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.publish.borrow())
    }

    /// Publishes a copy of the current snapshot changed by `change`.
    pub(super) fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        self.publish.send_modify(|s| {
            let mut next = Snapshot::clone(s);
            change(&mut next);
            *s = Arc::new(next);
        });
    }

    /// Publishes a new token (fresh) and when it will be renewed.
    pub(super) fn publish_token(&mut self, token: Arc<Token>, now: Timestamp) {
        let next_refresh = token.expires_at.map(|exp| {
            schedule::refresh_at(
                token.issued_at,
                exp,
                &self.oauth().schedule,
                self.credential.min_valid,
                fastrand::f64(),
            )
        });
        self.publish.send_replace(Arc::new(Snapshot {
            token: Some(token),
            state: State::Fresh,
            last_error: None,
            last_refresh: Some(now),
            next_refresh,
            login_expires_at: self.login_expires_at(),
            failing_since: None,
            fleet: self.current().fleet.clone(),
        }));
    }

    /// The next token of this credential, with a generation one higher.
    pub(super) fn new_token(
        &mut self,
        access_token: &str,
        expires_at: Option<Timestamp>,
        issued_at: Timestamp,
        scope: Option<String>,
    ) -> Arc<Token> {
        self.generation += 1;
        Arc::new(Token::new(
            access_token,
            expires_at,
            issued_at,
            self.generation,
            scope,
        ))
    }

    /// Enters a state only a person (or a config change) can leave, and
    /// stops calling the endpoint.
    pub(super) fn stop(&mut self, state: State, message: String) {
        tracing::error!(state = state.as_str(), "{message}");
        self.retry_at = None;
        self.update(|next| {
            next.state = state;
            next.last_error = Some(message.into());
            next.next_refresh = None;
        });
    }

    /// Starts over with nothing but `message`: after a logout.
    pub(super) fn reset(&self, state: State, message: String) {
        self.publish.send_replace(Arc::new(Snapshot {
            last_error: Some(message.into()),
            fleet: self.current().fleet.clone(),
            ..Snapshot::new(state)
        }));
    }

    /// Marks a refresh in progress; the current token stays served.
    pub(super) fn set_refreshing(&self) {
        self.publish.send_if_modified(|s| {
            if s.state == State::Refreshing {
                return false;
            }
            let mut next = Snapshot::clone(s);
            next.state = State::Refreshing;
            *s = Arc::new(next);
            true
        });
    }

    /// Publishes a failing refresh: stale while the token is still valid,
    /// expired otherwise, retried at `retry`.
    pub(super) fn set_failing(&self, message: String, now: Timestamp, retry: std::time::Duration) {
        let state = match &self.current().token {
            Some(t) if t.valid_for(std::time::Duration::ZERO, now) => State::Stale,
            _ => State::Expired,
        };
        self.update(|next| {
            next.state = state;
            next.failing_since.get_or_insert(now);
            next.last_error = Some(message.into());
            next.next_refresh = now
                .checked_add(SignedDuration::try_from(retry).unwrap_or_default())
                .ok();
        });
    }

    /// When the login's refresh token reaches the source's lifetime limit.
    pub(super) fn login_expires_at(&self) -> Option<Timestamp> {
        let lifetime = SignedDuration::try_from(self.oauth().refresh_token_lifetime?).ok()?;
        Timestamp::from_second(self.record.logged_in_at?)
            .ok()?
            .checked_add(lifetime)
            .ok()
    }

    /// The current token, or why there is none, for a command's reply. The
    /// driver has just set the state itself, so the class is certain.
    pub(super) fn outcome(&self) -> Result<Arc<Token>, DriverError> {
        let snap = self.current();
        if let (Some(t), State::Fresh) = (&snap.token, snap.state) {
            return Ok(Arc::clone(t));
        }
        let reason = snap
            .last_error
            .clone()
            .unwrap_or_else(|| "no token was obtained".into());
        Err(match snap.state {
            State::NeedsLogin => DriverError::NeedsLogin(reason),
            State::Misconfigured => DriverError::Misconfigured(reason),
            _ => DriverError::Unavailable(reason),
        })
    }
}
