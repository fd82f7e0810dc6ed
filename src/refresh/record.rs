//! The driver's side of the store protocol: load the record at start, commit
//! each change before publishing what depends on it. Every store call runs
//! on the blocking pool (redb fsyncs), never on an async worker.

use jiff::Timestamp;

use super::{Driver, DriverError};
use crate::credential::OAuthGrant;
use crate::fleet::FleetError;
use crate::store::{Durability, Record, StoreError, blocking};

/// Why a change was not committed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The fleet refused (another node took over) or was unreachable.
    #[error(transparent)]
    Fleet(#[from] FleetError),
}
use crate::token::State;

impl Driver {
    /// Loads the stored record: an unexpired access token is served at once;
    /// otherwise the first loop turn refreshes.
    pub(super) async fn resume(&mut self) {
        let name = self.credential.name.to_string();
        match blocking(&self.deps.store, move |s| s.get(&name)).await {
            Ok(Some(record)) => self.record = record,
            Ok(None) => {}
            Err(e) => return self.stop(State::Misconfigured, e.to_string()),
        }
        let login_expires_at = self.login_expires_at();
        self.update(|next| next.login_expires_at = login_expires_at);
        if let Some(reason) = self.record.needs_login.clone() {
            // Known dead before the restart: say why again, call nobody.
            return self.stop(State::NeedsLogin, reason);
        }
        if let Some(at) = self.record.refreshing_since {
            let at = Timestamp::from_second(at).unwrap_or_default();
            tracing::warn!(since = %at, "a refresh was in flight when tokend last stopped; trying the stored refresh token");
            self.unconfirmed_refresh = Some(at);
        }
        if self.serve_stored_access_token() {
            return;
        }
        if self.oauth().grant == OAuthGrant::RefreshToken
            && self.record.refresh_token.is_none()
            && self.seat.is_none()
        {
            let message = format!("no refresh token yet; run `tokenctl login {}`", self.name());
            self.stop(State::NeedsLogin, message);
        }
    }

    /// Publishes the stored access token if it is still good for
    /// `min_valid`; says whether it did.
    pub(super) fn serve_stored_access_token(&mut self) -> bool {
        let now = self.now();
        let (Some(access), Some(exp)) = (
            self.record.access_token.clone(),
            self.record.access_expires_at,
        ) else {
            return false;
        };
        let issued_at = self
            .record
            .access_issued_at
            .and_then(|t| Timestamp::from_second(t).ok())
            .unwrap_or(now);
        let scope = self.record.scope.clone();
        let token = self.new_token(&access, Timestamp::from_second(exp).ok(), issued_at, scope);
        if !token.valid_for(self.credential.min_valid, now) {
            return false;
        }
        tracing::info!(expires_at = ?token.expires_at, "serving the stored access token");
        self.publish_token(token, now);
        true
    }

    /// Commits `record` and makes it the driver's view. Refresh-token state
    /// is fsync'd; a client-credentials token is only a cache (losing it
    /// costs one request), so it skips the fsync.
    ///
    /// A shared credential commits to the fleet first (under the fence,
    /// when refreshing), and keeps the local copy only as a cache.
    pub(super) async fn persist(&mut self, record: Record) -> Result<(), CommitError> {
        self.commit_shared(&record).await?;
        let name = self.credential.name.to_string();
        let to_store = record.clone();
        let durability = match self.oauth().grant {
            OAuthGrant::RefreshToken if self.seat.is_none() => Durability::Immediate,
            _ => Durability::Cached,
        };
        blocking(&self.deps.store, move |s| {
            s.put_with(&name, &to_store, durability)
        })
        .await?;
        self.record = record;
        Ok(())
    }

    /// Removes the credential's record (a logout).
    pub(super) async fn forget(&mut self) -> Result<(), DriverError> {
        let name = self.credential.name.to_string();
        blocking(&self.deps.store, move |s| s.remove(&name))
            .await
            .map_err(|e| DriverError::Store(e.to_string()))?;
        self.record = Record::default();
        Ok(())
    }
}
