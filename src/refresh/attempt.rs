//! One refresh attempt: mark it in the store, ask the token endpoint, commit
//! the answer, publish it; or classify the failure into a retry with backoff
//! or a state only a person can leave.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{Driver, schedule};
use crate::clock;
use crate::credential::OAuthGrant;
use crate::oauth::{self, TokenError};
use crate::token::State;

impl Driver {
    /// One refresh attempt, with its outcome published.
    pub(super) async fn refresh(&mut self) {
        let now = self.now();
        match self.shared_turn(now).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return self.failed(e, now).await,
        }
        // A retry after failures stays `Stale`: that is what a person
        // needs to see, not the attempt flickering by.
        if self.failures == 0 {
            self.set_refreshing();
        }
        let endpoint = match self.endpoint().await {
            Ok(e) => e,
            Err(e) => return self.failed(e, now).await,
        };
        let refresh_token = match self.oauth().grant {
            OAuthGrant::ClientCredentials => None,
            OAuthGrant::RefreshToken => match &self.record.refresh_token {
                Some(rt) => Some(SecretString::from(rt.as_str())),
                None => {
                    let message =
                        format!("no refresh token yet; run `tokenctl login {}`", self.name());
                    return self.stop(State::NeedsLogin, message);
                }
            },
        };
        if self.seat.is_some() {
            // In the fleet the marker is also the right to send.
            match self.mark_shared(now).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return self.failed(e, now).await,
            }
        } else if refresh_token.is_some()
            && let Err(e) = self.mark_in_flight(now).await
        {
            // Refreshing without the marker would risk an unexplained loss.
            return self.failed(e, now).await;
        }
        let started = std::time::Instant::now();
        let result = match self.fence_deadline() {
            None => self.exchange(&endpoint, refresh_token.as_ref(), now).await,
            Some(Err(e)) => Err(e),
            Some(Ok(deadline)) => {
                let exchange = self.exchange(&endpoint, refresh_token.as_ref(), now);
                tokio::time::timeout_at(deadline, exchange)
                    .await
                    .unwrap_or_else(|_| {
                        Err(TokenError::Transient {
                            reason: "no answer within half a lease TTL; the request was dropped \
                                     so that no other node can overlap it"
                                .into(),
                            retry_after: None,
                            answered: false,
                        })
                    })
            }
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(TokenError::Permanent { .. }) => "permanent",
            Err(_) => "transient",
        };
        self.deps.metrics.refresh(outcome, started);
        match result {
            Ok(tokens) => {
                crash_hook();
                self.succeeded(tokens, refresh_token, now, started.elapsed())
                    .await;
            }
            Err(TokenError::Unusable {
                reason,
                refresh_token: Some(rotated),
            }) => {
                // The server may have rotated the grant already: keep the
                // new refresh token before anything else.
                self.commit_rotation(&rotated, refresh_token.as_ref()).await;
                self.failed(
                    TokenError::Unusable {
                        reason,
                        refresh_token: None,
                    },
                    now,
                )
                .await;
            }
            Err(e) => {
                self.settle_marker(&e, now).await;
                self.failed(e, now).await;
            }
        }
    }

    /// Stores a refresh token from an answer that was otherwise unusable,
    /// keeping the one presented as the fallback.
    async fn commit_rotation(&mut self, new: &SecretString, used: Option<&SecretString>) {
        let mut record = self.record.clone();
        record.refreshing_since = None;
        if used.is_some_and(|old| old.expose_secret() != new.expose_secret()) {
            record.previous_refresh_token = used
                .filter(|_| self.oauth().retry_previous_refresh_token)
                .map(|old| Zeroizing::new(old.expose_secret().to_owned()));
            record.refresh_token = Some(Zeroizing::new(new.expose_secret().to_owned()));
            tracing::warn!("the token answer was unusable, but its rotated refresh token is kept");
        }
        self.unconfirmed_refresh = None;
        if let Err(e) = self.persist(record).await {
            tracing::error!(error = %e, "cannot store the rotated refresh token");
        }
    }

    /// Commits the in-flight marker (see the module docs of `refresh`).
    async fn mark_in_flight(&mut self, now: jiff::Timestamp) -> Result<(), TokenError> {
        let mut marked = self.record.clone();
        marked.refreshing_since = Some(now.as_second());
        self.persist(marked)
            .await
            .map_err(|e| TokenError::Transient {
                reason: format!("cannot write to the store: {e}"),
                retry_after: None,
                answered: true,
            })
    }

    /// After a failed request: an answered one clears the marker; an
    /// unanswered one may have rotated the token, which is remembered.
    async fn settle_marker(&mut self, e: &TokenError, now: jiff::Timestamp) {
        let answered = !matches!(
            e,
            TokenError::Transient {
                answered: false,
                ..
            }
        );
        if !answered {
            self.unconfirmed_refresh.get_or_insert(now);
        }
        if self.seat.is_some() {
            // A dead grant keeps the fence: `grant_gone` commits the reason
            // for every node, and removes the marker with it.
            if !e.is_invalid_grant() {
                self.settle_shared(answered).await;
            }
            return;
        }
        let mut record = self.record.clone();
        if answered {
            record.refreshing_since = None;
        }
        if let Err(store) = self.persist(record).await {
            tracing::error!(error = %store, "cannot update the store");
        }
    }

    /// The token request. With `retry_previous_refresh_token` (and only
    /// then) a refused refresh token is retried once with the one from
    /// before the last rotation: a server with a reuse grace period still
    /// accepts it if the new one was lost. Off by default, because on a
    /// server with reuse detection that retry is a replay that revokes the
    /// grant and buries the first `invalid_grant` under a second.
    async fn exchange(
        &self,
        endpoint: &str,
        refresh_token: Option<&SecretString>,
        now: jiff::Timestamp,
    ) -> Result<oauth::Tokens, TokenError> {
        let result = self.request(endpoint, refresh_token, now).await;
        if let (Err(e), Some(previous)) = (&result, &self.record.previous_refresh_token)
            && e.is_invalid_grant()
            && self.oauth().retry_previous_refresh_token
        {
            tracing::warn!("refresh token refused; trying the one from before the last rotation");
            let previous = SecretString::from(previous.as_str());
            return self.request(endpoint, Some(&previous), now).await;
        }
        result
    }

    async fn request(
        &self,
        endpoint: &str,
        refresh_token: Option<&SecretString>,
        now: jiff::Timestamp,
    ) -> Result<oauth::Tokens, TokenError> {
        let grant = match refresh_token {
            Some(rt) => oauth::Grant::RefreshToken(rt),
            None => oauth::Grant::ClientCredentials,
        };
        let gate = self.deps.settings.gates.of(endpoint);
        let _turn = gate.enter().await;
        if let Some(wait) = gate.paused_for() {
            // Another credential of this issuer was told to wait: so is
            // this one. Nothing was sent, so nothing can have rotated.
            return Err(TokenError::Transient {
                reason: format!(
                    "the issuer asked its clients to wait (Retry-After) for {} more",
                    clock::human(wait)
                ),
                retry_after: Some(wait),
                answered: true,
            });
        }
        let oauth = self.oauth();
        let result = self
            .deps
            .endpoint
            .request(
                endpoint,
                &oauth.client,
                grant,
                oauth.schedule.default_lifetime,
                now,
            )
            .await;
        if let Err(TokenError::Transient {
            retry_after: Some(wait),
            ..
        }) = &result
        {
            gate.pause(*wait);
        }
        result
    }

    /// Commits the new tokens, then publishes them.
    pub(super) async fn succeeded(
        &mut self,
        tokens: oauth::Tokens,
        used: Option<SecretString>,
        now: jiff::Timestamp,
        elapsed: Duration,
    ) {
        let mut record = self.record.clone();
        record.refreshing_since = None;
        match (&tokens.refresh_token, &used) {
            (Some(new), Some(old)) if new.expose_secret() != old.expose_secret() => {
                // Kept only for the opt-in retry (see `exchange`).
                record.previous_refresh_token = self
                    .oauth()
                    .retry_previous_refresh_token
                    .then(|| Zeroizing::new(old.expose_secret().to_owned()));
                record.refresh_token = Some(Zeroizing::new(new.expose_secret().to_owned()));
            }
            // The refresh token in use has now worked: the older one can go.
            _ => record.previous_refresh_token = None,
        }
        record.access_token = Some(Zeroizing::new(
            tokens.access_token.expose_secret().to_owned(),
        ));
        record.access_expires_at = Some(tokens.expires_at.as_second());
        record.access_issued_at = Some(now.as_second());
        record.scope.clone_from(&tokens.scope);
        if let Err(e) = self.persist(record).await {
            // The token works, so serve it; but a crash now would lose a
            // rotated refresh token, which a person must hear about.
            tracing::error!(error = %e, "new tokens could not be stored; serving them from memory");
        }
        let lifetime = clock::between(now, tokens.expires_at);
        let usable = lifetime > self.credential.min_valid;
        if usable {
            self.forget_failures();
        } else {
            self.unconfirmed_refresh = None;
        }
        let token = self.new_token(
            tokens.access_token.expose_secret(),
            Some(tokens.expires_at),
            now,
            tokens.scope,
        );
        tracing::info!(
            expires_at = %tokens.expires_at,
            fingerprint = %token.fingerprint,
            rotated = tokens.refresh_token.is_some(),
            took_ms = elapsed.as_millis() as u64,
            "refreshed"
        );
        self.publish_token(token, now);
        if !usable {
            // Such a token can never be served. Asking again at once would
            // get another like it (a refresh storm): it is a failure, backed
            // off like any other, and says why.
            let message = format!(
                "the issuer's access tokens live {}, no longer than min_valid ({}); lower \
                 min_valid for `{}`",
                clock::human(lifetime),
                clock::human(self.credential.min_valid),
                self.name()
            );
            self.back_off(message, None, now);
        }
    }

    /// Publishes a failure: permanent ones stop the driver until a person
    /// acts; transient ones schedule a retry with backoff.
    pub(super) async fn failed(&mut self, e: TokenError, now: jiff::Timestamp) {
        match e {
            TokenError::Permanent { .. } if e.is_invalid_grant() => self.grant_gone(&e).await,
            TokenError::Permanent { .. } => {
                let message = format!(
                    "the authorization server refuses this client ({e}); check client_id, \
                     client_secret (rotated upstream?), scopes and approvals for `{}`, then \
                     reload tokend",
                    self.name()
                );
                self.stop(State::Misconfigured, message);
            }
            TokenError::Transient {
                reason,
                retry_after,
                ..
            } => self.back_off(reason, retry_after, now),
            TokenError::Unusable { reason, .. } => self.back_off(reason, None, now),
        }
    }

    /// Schedules the next attempt after a failure, with backoff (at least
    /// the server's `Retry-After`), and publishes why.
    fn back_off(&mut self, reason: String, retry_after: Option<Duration>, now: jiff::Timestamp) {
        let delay = schedule::backoff(
            self.failures,
            self.deps.settings.max_backoff,
            retry_after,
            fastrand::f64(),
        );
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + delay);
        tracing::warn!(
            error = %reason,
            retry_in_ms = delay.as_millis() as u64,
            failures = self.failures,
            "refresh failed; will retry"
        );
        self.set_failing(format!("refresh failing: {reason}"), now, delay);
    }

    /// `invalid_grant`: the grant is gone. Records why (a restart must not
    /// present the dead token again), stops, and withdraws the access token.
    async fn grant_gone(&mut self, e: &TokenError) {
        let message = match self.unconfirmed_refresh {
            Some(at) => format!(
                "refresh token rotated by the server but lost in a crash or a lost response{} \
                 at {at} ({e}); run `tokenctl login {}`",
                self.unconfirmed_node
                    .as_ref()
                    .map(|n| format!(" on node {n}"))
                    .unwrap_or_default(),
                self.name()
            ),
            None => format!(
                "the authorization server refused the refresh token ({e}): the grant was \
                 revoked or expired; run `tokenctl login {}`",
                self.name()
            ),
        };
        let mut record = self.record.clone();
        record.needs_login = Some(message.clone());
        if let Err(store) = self.persist(record).await {
            tracing::error!(error = %store, "cannot record that the grant is gone");
        }
        self.stop(State::NeedsLogin, message);
        // The grant is gone, and its access tokens with it (servers revoke
        // them together): stop handing this one out.
        self.update(|next| next.token = None);
    }

    /// The token endpoint: configured, or discovered once from the issuer.
    pub(super) async fn endpoint(&mut self) -> Result<String, TokenError> {
        if let Some(e) = &self.token_endpoint {
            return Ok(e.clone());
        }
        let endpoint = self.metadata().await?.token_endpoint.clone();
        self.token_endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }
}

/// Test builds only (feature `test-hooks`): abort right after a successful
/// token response, before it is stored, when
/// `TOKEND_TEST_CRASH_AFTER_TOKEN_RESPONSE` is set, to exercise the crash
/// window. Release builds contain no trace of it.
#[cfg(feature = "test-hooks")]
fn crash_hook() {
    if std::env::var_os("TOKEND_TEST_CRASH_AFTER_TOKEN_RESPONSE").is_some() {
        tracing::error!("test hook: aborting after a token response, before storing it");
        std::process::abort();
    }
}

#[cfg(not(feature = "test-hooks"))]
fn crash_hook() {}
