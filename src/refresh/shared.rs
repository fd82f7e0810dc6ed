//! The driver's side of the fleet (`crate::fleet`) for `shared`
//! credentials: followers adopt the shared record and never call the token
//! endpoint; the leader marks, refreshes within its fence and commits to
//! etcd before it publishes. Every other step (the request, classifying the
//! answer, backoff, publishing) is the single-host driver's own.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::Driver;
use crate::credential::OAuthGrant;
use crate::fleet::{FleetError, Role, View};
use crate::oauth::TokenError;
use crate::store::{Durability, Record, blocking};
use crate::token::{FleetStatus, State};

/// How often a commit that found etcd unreachable is retried before the
/// answer is kept locally and the commit left for later.
const COMMIT_ATTEMPTS: u32 = 3;

impl Driver {
    /// The seat's latest view (shared credentials only).
    pub(super) fn view(&self) -> Option<Arc<View>> {
        self.views.as_ref().map(|v| Arc::clone(&v.borrow()))
    }

    /// Whether this node may refresh: not shared, or the elected leader.
    pub(super) fn may_refresh(&self) -> bool {
        self.view()
            .is_none_or(|v| matches!(v.role, Role::Leader(_)))
    }

    /// After the seat's view changed: show the role, adopt a newer shared
    /// record.
    pub(super) async fn seat_changed(&mut self) {
        let Some(view) = self.view() else { return };
        let fleet = Some(FleetStatus {
            node: self.seat.as_ref().map_or("".into(), |s| s.node().into()),
            role: view.role.as_str(),
            leader: view.leader.clone(),
            unreachable_since: view.unreachable_since,
        });
        if self.current().fleet != fleet {
            self.update(|s| s.fleet = fleet);
        }
        if let Some(e) = &view.record_error {
            return self.stop(State::Misconfigured, e.to_string());
        }
        self.adopt_newer(&view).await;
        // A follower's caller reported the token this leader published
        // rejected: replace it now, as for a local `Invalidate`.
        if matches!(view.role, Role::Leader(_))
            && view.wanted.is_some_and(|w| w == self.applied)
            && view.marker.is_none()
            && self.retry_at.is_none_or(|at| at <= Instant::now())
        {
            tracing::info!("a follower reported the access token rejected; refreshing");
            self.refresh().await;
        }
    }

    /// On a follower: asks the leader to replace the current token, which
    /// a caller here reported rejected. Answers whether it asked.
    pub(super) async fn ask_leader(&mut self) -> bool {
        let (Some(seat), Some(view)) = (&self.seat, self.view()) else {
            return false;
        };
        if matches!(view.role, Role::Leader(_)) || view.wanted == Some(self.applied) {
            return false;
        }
        if let Err(e) = Box::pin(seat.want_refresh(self.applied)).await {
            tracing::warn!(error = %e, "cannot ask the leader for a new token");
        }
        true
    }

    /// Adopts `view`'s record if it is newer than the one held; answers
    /// whether it did.
    async fn adopt_newer(&mut self, view: &View) -> bool {
        let Some(shared) = view.record.as_ref().filter(|r| r.revision > self.applied) else {
            return false;
        };
        self.applied = shared.revision;
        self.adopt(shared.value.clone()).await;
        true
    }

    /// Takes `record` from the fleet as this node's: a new grant, a new
    /// access token, or the news that the grant is gone.
    async fn adopt(&mut self, record: Record) {
        self.cache(&record).await;
        let changed_grant = record.refresh_token != self.record.refresh_token;
        self.record = record;
        if changed_grant {
            self.forget_failures();
        }
        let login_expires_at = self.login_expires_at();
        self.update(|s| s.login_expires_at = login_expires_at);
        if let Some(reason) = self.record.needs_login.clone() {
            self.stop(State::NeedsLogin, reason);
            return self.update(|s| s.token = None);
        }
        if self.serves_record_token() || self.serve_stored_access_token() {
            return;
        }
        // A grant without a usable access token: the leader refreshes now,
        // followers wait for it.
        self.update(|s| {
            s.state = State::Refreshing;
            s.last_error = None;
            s.next_refresh = None;
        });
    }

    /// Whether the token published already is the record's.
    fn serves_record_token(&self) -> bool {
        let (Some(access), Some(current)) = (&self.record.access_token, &self.current().token)
        else {
            return false;
        };
        current.fingerprint == crate::oauth::fingerprint(access)
            && self.current().state == State::Fresh
    }

    /// Keeps a copy of the shared record in the local store, so a restart
    /// serves its access token while etcd is down. Only a cache: etcd's copy
    /// is the one refreshed.
    async fn cache(&self, record: &Record) {
        let name = self.credential.name.to_string();
        let record = record.clone();
        let stored = blocking(&self.deps.store, move |s| {
            s.put_with(&name, &record, Durability::Cached)
        })
        .await;
        if let Err(e) = stored {
            tracing::warn!(error = %e, "cannot cache the shared record locally");
        }
    }

    /// Before a shared refresh: whether this node may go ahead now. It must
    /// lead; the fleet must hold a grant (for refresh tokens); and another
    /// node's marker must be older than a lease TTL (its owner can no longer
    /// be sending). A marker it replaces explains a later `invalid_grant`.
    pub(super) async fn shared_turn(&mut self, now: Timestamp) -> Result<bool, TokenError> {
        let Some(view) = self.view() else {
            return Ok(true);
        };
        if !matches!(view.role, Role::Leader(_)) {
            return Ok(false);
        }
        // The record this node presents is the fleet's latest, never an
        // older local copy (the view may be ahead of the driver).
        if self.adopt_newer(&view).await && self.record.needs_login.is_some() {
            return Ok(false);
        }
        if let Some((fence, record)) = self.pending.take() {
            // An answer not yet committed: commit it rather than refresh.
            return match self.commit(&fence, &record).await {
                Ok(()) => Ok(false),
                Err(FleetError::Unreachable(e)) => {
                    self.pending = Some((fence, record));
                    Err(unreachable(e))
                }
                Err(FleetError::Lost(e)) => {
                    tracing::error!(error = %e, "the uncommitted answer is discarded");
                    Ok(false)
                }
            };
        }
        if self.oauth().grant == OAuthGrant::RefreshToken && view.record.is_none() {
            let message = format!(
                "no grant in the fleet yet; run `tokenctl login {}` on any node",
                self.name()
            );
            self.stop(State::NeedsLogin, message);
            return Ok(false);
        }
        if let Some(marker) = &view.marker {
            let ttl = self.seat.as_ref().map_or(Duration::ZERO, |s| s.lease_ttl());
            let me = self
                .seat
                .as_ref()
                .is_some_and(|s| s.node() == marker.value.node);
            let started = marker.value.started_at();
            let age = crate::clock::between(started, now);
            if !me && age < ttl {
                let wait = ttl - age;
                self.retry_at = Some(Instant::now() + wait);
                tracing::info!(
                    node = %marker.value.node,
                    since = %started,
                    "waiting for the refresh in flight on another node"
                );
                return Ok(false);
            }
            if self.oauth().grant == OAuthGrant::RefreshToken {
                tracing::warn!(
                    node = %marker.value.node,
                    since = %started,
                    "taking over a refresh that never committed; its answer may be lost"
                );
                self.unconfirmed_refresh.get_or_insert(started);
                self.unconfirmed_node = Some(marker.value.node.clone());
            }
        }
        Ok(true)
    }

    /// Writes this node's marker (etcd checks it still leads).
    pub(super) async fn mark_shared(&mut self, now: Timestamp) -> Result<bool, TokenError> {
        let (Some(seat), Some(view)) = (&self.seat, self.view()) else {
            return Ok(true);
        };
        // Guarded by the revision of the record this driver holds: a newer
        // one (another login) fails the compare rather than being
        // refreshed with an older token.
        match Box::pin(seat.mark(&view, self.applied, now)).await {
            Ok(fence) => {
                self.fence = Some(fence);
                Ok(true)
            }
            Err(FleetError::Lost(e)) => {
                tracing::info!(error = %e, "not refreshing");
                Ok(false)
            }
            Err(FleetError::Unreachable(e)) => Err(unreachable(e)),
        }
    }

    /// Whether the refresh token may still be presented under the fence:
    /// before its deadline and while the lease is confirmed. `None` when
    /// not shared.
    pub(super) fn fence_deadline(&self) -> Option<Result<Instant, TokenError>> {
        let fence = self.fence.as_ref()?;
        let seat = self.seat.as_ref()?;
        if Instant::now() >= fence.deadline || !seat.lease_alive_for(Duration::ZERO) {
            return Some(Err(TokenError::Transient {
                reason: "leadership could not be confirmed before sending; the refresh token \
                         was not presented"
                    .into(),
                retry_after: None,
                answered: true,
            }));
        }
        Some(Ok(fence.deadline))
    }

    /// Commits `record` to the fleet under the fence, if there is one.
    /// etcd unreachable: retried a few times, then kept as pending (never
    /// presented again: the local view already holds the rotated token).
    pub(super) async fn commit_shared(&mut self, record: &Record) -> Result<(), FleetError> {
        let Some(fence) = self.fence.take() else {
            return Ok(());
        };
        let mut attempt = 0;
        loop {
            match self.commit(&fence, record).await {
                Err(FleetError::Unreachable(e)) if attempt + 1 < COMMIT_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot commit to the fleet yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(FleetError::Unreachable(e)) => {
                    tracing::error!(error = %e, "the answer is kept on this node until etcd is back");
                    self.pending = Some((fence, record.clone()));
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    async fn commit(
        &mut self,
        fence: &crate::fleet::Fence,
        record: &Record,
    ) -> Result<(), FleetError> {
        let Some(seat) = &self.seat else {
            return Ok(());
        };
        let revision = Box::pin(seat.commit(fence, record)).await?;
        self.applied = revision;
        Ok(())
    }

    /// After a failed request: an answered one removes the marker; an
    /// unanswered one leaves it standing (the token may have rotated).
    pub(super) async fn settle_shared(&mut self, answered: bool) {
        let Some(fence) = self.fence.take() else {
            return;
        };
        if answered
            && let Some(seat) = &self.seat
            && let Err(e) = Box::pin(seat.clear(&fence)).await
        {
            tracing::warn!(error = %e, "cannot remove the in-flight marker");
        }
    }

    /// A login or logout: the new record replaces the fleet's, whatever a
    /// leader was doing with the old grant.
    pub(super) async fn replace_shared(&mut self, record: &Record) -> Result<(), FleetError> {
        let Some(seat) = &self.seat else {
            return Ok(());
        };
        let revision = Box::pin(seat.replace(record)).await?;
        self.applied = revision;
        self.fence = None;
        self.pending = None;
        Ok(())
    }
}

fn unreachable(e: String) -> TokenError {
    TokenError::Transient {
        reason: format!(
            "etcd is unreachable ({e}); a shared credential is refreshed only by the leader"
        ),
        retry_after: None,
        answered: true,
    }
}
