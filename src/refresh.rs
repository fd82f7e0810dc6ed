//! The refresh driver: one task per OAuth credential that keeps a valid
//! access token published, renewing it ahead of expiry.
//!
//! The driver is the only code that talks to the token endpoint for its
//! credential, so any number of callers waiting for a token share one
//! request: single-flight by construction, as in google-cloud-rust's
//! `token_cache.rs`. It sleeps until the next refresh time, or until woken
//! by a caller that needs a token now, an `Invalidate` report or an admin
//! command; nothing polls.
//!
//! Order of a refresh-token refresh, chosen so a crash loses as little as
//! possible: (1) commit an in-flight marker, (2) call the endpoint, (3) commit
//! the new refresh and access tokens (fsync), (4) publish. A crash between
//! (2) and (3) is the one window where a rotated refresh token can be lost;
//! the marker lets the next start say exactly that instead of a vague error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use zeroize::Zeroizing;

use crate::clock;
use crate::credential::{Credential, Kind, OAuthCredential, OAuthGrant, Schedule};
use crate::metrics::Metrics;
use crate::oauth::{self, TokenError};
use crate::store::{Durability, Record, Store};
use crate::token::{Snapshot, State, Token};

/// Settings shared by every driver.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_backoff: Duration,
    /// Test hook: abort the process right after a successful token response,
    /// before it is stored, to exercise the crash window. Set from the
    /// `TOKEND_TEST_CRASH_AFTER_TOKEN_RESPONSE` environment variable.
    pub crash_after_token_response: bool,
}

/// A request to a driver from the rest of the daemon.
pub enum Command {
    /// Refresh now, whatever the schedule says, and report the outcome.
    Refresh {
        reply: oneshot::Sender<Result<Arc<Token>, String>>,
    },
    /// Use this refresh token from now on (from `tokenctl login`); with an
    /// access token, serve it at once.
    PutRefreshToken {
        refresh_token: SecretString,
        access_token: Option<(SecretString, Timestamp)>,
        reply: oneshot::Sender<Result<Arc<Token>, String>>,
    },
    /// Discover what a login needs, checking the server supports it.
    BeginLogin {
        reply: oneshot::Sender<Result<LoginInfo, String>>,
    },
    /// Exchange an authorization code and store the tokens it yields.
    CompleteLogin {
        code: SecretString,
        verifier: SecretString,
        redirect_uri: String,
        reply: oneshot::Sender<Result<Arc<Token>, String>>,
    },
    /// Forget the refresh token, optionally revoking it first; answers
    /// whether the issuer confirmed the revocation.
    Logout {
        revoke: bool,
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// What `tokenctl login` needs to build the authorization URL.
#[derive(Clone, Debug)]
pub struct LoginInfo {
    pub authorization_endpoint: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
}

/// How the rest of the daemon reaches a running driver.
#[derive(Debug)]
pub struct Handle {
    /// Wakes the driver to check whether it must refresh now. Permits
    /// coalesce, so a thousand wakes cause at most one extra check.
    pub wake: Arc<Notify>,
    pub commands: mpsc::Sender<Command>,
    /// Generation of a token an API rejected (`Invalidate`); the driver
    /// replaces that token at once if it is still current.
    pub invalidated: Arc<AtomicU64>,
}

/// The driver of one credential. Build with [`Driver::new`], then `run`.
pub struct Driver {
    credential: Arc<Credential>,
    publish: watch::Sender<Arc<Snapshot>>,
    commands: mpsc::Receiver<Command>,
    wake: Arc<Notify>,
    invalidated: Arc<AtomicU64>,
    store: Arc<Store>,
    http: reqwest::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// The last committed record.
    record: Record,
    token_endpoint: Option<String>,
    /// The issuer's metadata, fetched once when needed.
    metadata: Option<oauth::Metadata>,
    generation: u64,
    failures: u32,
    retry_at: Option<Instant>,
    /// When a refresh may have been answered without the answer being
    /// stored (crash or lost response): explains a later `invalid_grant`.
    unconfirmed_refresh: Option<Timestamp>,
}

impl Driver {
    pub fn new(
        credential: Arc<Credential>,
        publish: watch::Sender<Arc<Snapshot>>,
        store: Arc<Store>,
        http: reqwest::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> (Self, Handle) {
        let (tx, rx) = mpsc::channel(16);
        let wake = Arc::new(Notify::new());
        let invalidated = Arc::new(AtomicU64::new(0));
        let handle = Handle {
            wake: Arc::clone(&wake),
            commands: tx,
            invalidated: Arc::clone(&invalidated),
        };
        let token_endpoint = oauth_of(&credential).token_endpoint.clone();
        // Continue the generations of a channel taken over from a replaced
        // driver, so watchers and `Invalidate` never see one repeat.
        let generation = publish.borrow().token.as_ref().map_or(0, |t| t.generation);
        let driver = Self {
            credential,
            publish,
            commands: rx,
            wake,
            invalidated,
            store,
            http,
            settings,
            metrics,
            record: Record::default(),
            token_endpoint,
            metadata: None,
            generation,
            failures: 0,
            retry_at: None,
            unconfirmed_refresh: None,
        };
        (driver, handle)
    }

    /// Runs until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let span = tracing::info_span!("credential", name = %self.credential.name);
        async move {
            self.resume().await;
            loop {
                let next = self.next_wake();
                tokio::select! {
                    () = cancel.cancelled() => break,
                    Some(cmd) = self.commands.recv() => self.command(cmd).await,
                    () = self.wake.notified() => {
                        if self.wants_refresh_now() {
                            self.refresh().await;
                        }
                    }
                    () = sleep_until(next) => self.refresh().await,
                }
            }
        }
        .instrument(span)
        .await;
    }

    fn oauth(&self) -> &OAuthCredential {
        oauth_of(&self.credential)
    }

    fn name(&self) -> &str {
        &self.credential.name
    }

    fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.publish.borrow())
    }

    /// Loads the stored record: an unexpired access token is served at once;
    /// otherwise the first loop turn refreshes.
    async fn resume(&mut self) {
        let store = Arc::clone(&self.store);
        let name = self.credential.name.to_string();
        match tokio::task::spawn_blocking(move || store.get(&name)).await {
            Ok(Ok(Some(record))) => self.record = record,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return self.stop(State::Misconfigured, e.to_string()),
            Err(e) => return self.stop(State::Misconfigured, e.to_string()),
        }
        let login_expires_at = self.login_expires_at();
        self.publish.send_modify(|s| {
            let mut next = Snapshot::clone(s);
            next.login_expires_at = login_expires_at;
            *s = Arc::new(next);
        });
        if let Some(reason) = self.record.needs_login.clone() {
            // Known dead before the restart: say why again, call nobody.
            return self.stop(State::NeedsLogin, reason);
        }
        if let Some(at) = self.record.refreshing_since {
            let at = Timestamp::from_second(at).unwrap_or_default();
            tracing::warn!(since = %at, "a refresh was in flight when tokend last stopped; trying the stored refresh token");
            self.unconfirmed_refresh = Some(at);
        }
        let now = clock::now();
        if let (Some(access), Some(exp)) =
            (&self.record.access_token, self.record.access_expires_at)
        {
            let expires_at = Timestamp::from_second(exp).ok();
            let issued_at = self
                .record
                .access_issued_at
                .and_then(|t| Timestamp::from_second(t).ok())
                .unwrap_or(now);
            self.generation += 1;
            let token = Token::new(
                access,
                expires_at,
                issued_at,
                self.generation,
                self.record.scope.clone(),
            );
            if token.valid_for(self.credential.min_valid, now) {
                tracing::info!(expires_at = ?token.expires_at, "serving the stored access token");
                self.publish_token(Arc::new(token), now);
                return;
            }
        }
        if self.oauth().grant == OAuthGrant::RefreshToken && self.record.refresh_token.is_none() {
            self.stop(
                State::NeedsLogin,
                format!("no refresh token yet; run `tokenctl login {}`", self.name()),
            );
        }
    }

    /// When the loop should next refresh on its own; `None` waits for a
    /// command (the credential needs a person).
    fn next_wake(&self) -> Option<Instant> {
        let snap = self.publish.borrow();
        if matches!(snap.state, State::NeedsLogin | State::Misconfigured) {
            return None;
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        Some(snap.next_refresh.map_or_else(Instant::now, instant_at))
    }

    /// On a wake: refresh now only if a caller cannot be served or the
    /// current token was reported rejected, and never during a backoff.
    fn wants_refresh_now(&self) -> bool {
        if self.retry_at.is_some_and(|at| at > Instant::now()) {
            return false;
        }
        let snap = self.publish.borrow();
        if matches!(snap.state, State::NeedsLogin | State::Misconfigured) {
            return false;
        }
        match &snap.token {
            None => true,
            Some(t) => {
                t.generation == self.invalidated.load(Ordering::Acquire)
                    || !t.valid_for(self.credential.min_valid, clock::now())
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Refresh { reply } => {
                self.retry_at = None;
                self.refresh().await;
                let _ = reply.send(self.outcome());
            }
            Command::PutRefreshToken {
                refresh_token,
                access_token,
                reply,
            } => {
                let result = self.put_refresh_token(refresh_token, access_token).await;
                let _ = reply.send(result);
            }
            Command::BeginLogin { reply } => {
                let _ = reply.send(self.begin_login().await);
            }
            Command::CompleteLogin {
                code,
                verifier,
                redirect_uri,
                reply,
            } => {
                let result = self.complete_login(&code, &verifier, &redirect_uri).await;
                let _ = reply.send(result);
            }
            Command::Logout { revoke, reply } => {
                let _ = reply.send(self.logout(revoke).await);
            }
        }
    }

    fn login_only(&self) -> Result<(), String> {
        match self.oauth().grant {
            OAuthGrant::RefreshToken => Ok(()),
            OAuthGrant::ClientCredentials => Err(format!(
                "credential `{}` uses client credentials; there is nothing to log in to",
                self.name()
            )),
        }
    }

    /// Checks that the issuer can run the login tokend will ask for: an
    /// authorization endpoint, S256 PKCE, and the configured client
    /// authentication (RFC 8414's default is client_secret_basic).
    async fn begin_login(&mut self) -> Result<LoginInfo, String> {
        self.login_only()?;
        let name = self.name().to_owned();
        let auth_method = self.oauth().client.auth_method;
        let metadata = self.metadata().await.map_err(|e| e.to_string())?;
        let authorization_endpoint = metadata.authorization_endpoint.clone().ok_or_else(|| {
            format!("the issuer advertises no authorization_endpoint; `{name}` cannot log in there")
        })?;
        supports_login(metadata, auth_method, &name)?;
        let oauth = self.oauth();
        Ok(LoginInfo {
            authorization_endpoint,
            client_id: oauth.client.client_id.clone(),
            scopes: oauth.client.scopes.clone(),
            redirect_uri: oauth.redirect_uri.clone(),
        })
    }

    async fn complete_login(
        &mut self,
        code: &SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
    ) -> Result<Arc<Token>, String> {
        self.login_only()?;
        let endpoint = self.endpoint().await.map_err(|e| e.to_string())?;
        let now = clock::now();
        let oauth = self.oauth();
        let grant = oauth::Grant::AuthorizationCode {
            code,
            verifier,
            redirect_uri,
        };
        let tokens = oauth::request_token(
            &self.http,
            &endpoint,
            &oauth.client,
            grant,
            oauth.schedule.default_lifetime,
            now,
        )
        .await
        .map_err(|e| format!("the code exchange failed: {e}"))?;
        let Some(refresh_token) = tokens.refresh_token.as_ref() else {
            return Err(
                "the authorization server issued no refresh token; it may need the \
                        `offline_access` scope in the credential's scopes"
                    .into(),
            );
        };
        let record = Record {
            refresh_token: Some(Zeroizing::new(refresh_token.expose_secret().to_owned())),
            logged_in_at: Some(now.as_second()),
            ..Record::default()
        };
        // The refresh token is committed before anything is served.
        self.persist(record).await.map_err(|e| e.to_string())?;
        self.unconfirmed_refresh = None;
        self.failures = 0;
        self.retry_at = None;
        tracing::info!("logged in");
        self.succeeded(tokens, None, now, Duration::ZERO).await;
        self.outcome()
    }

    async fn logout(&mut self, revoke: bool) -> Result<bool, String> {
        self.login_only()?;
        let mut revoked = false;
        if revoke && let Some(rt) = self.record.refresh_token.clone() {
            let endpoint = self
                .metadata()
                .await
                .map_err(|e| e.to_string())?
                .revocation_endpoint
                .clone()
                .ok_or("the issuer advertises no revocation_endpoint; nothing was changed")?;
            let rt = SecretString::from(rt.as_str());
            oauth::revoke(
                &self.http,
                &endpoint,
                &self.oauth().client,
                &rt,
                "refresh_token",
            )
            .await
            .map_err(|e| format!("revocation failed, nothing was changed: {e}"))?;
            revoked = true;
        }
        let store = Arc::clone(&self.store);
        let name = self.credential.name.to_string();
        tokio::task::spawn_blocking(move || store.remove(&name))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.record = Record::default();
        self.unconfirmed_refresh = None;
        tracing::info!(revoked, "logged out");
        let message = format!("logged out; run `tokenctl login {}`", self.name());
        self.publish.send_replace(Arc::new(Snapshot {
            last_error: Some(message.into()),
            ..Snapshot::new(State::NeedsLogin)
        }));
        Ok(revoked)
    }

    /// The issuer's metadata (RFC 8414), fetched on first use.
    async fn metadata(&mut self) -> Result<&oauth::Metadata, TokenError> {
        if self.metadata.is_none() {
            let Some(issuer) = self.oauth().issuer.clone() else {
                return Err(TokenError::Permanent {
                    code: "no_issuer".into(),
                    description: Some(format!(
                        "credential `{}` has only a token_endpoint; set issuer so the \
                         authorization and revocation endpoints can be discovered",
                        self.name()
                    )),
                });
            };
            let metadata = oauth::discover(&self.http, &issuer).await?;
            tracing::info!(token_endpoint = %metadata.token_endpoint, "discovered");
            self.metadata = Some(metadata);
        }
        Ok(self.metadata.as_ref().expect("set above"))
    }

    /// The current token, or why there is none, for an admin's reply.
    fn outcome(&self) -> Result<Arc<Token>, String> {
        let snap = self.current();
        match (&snap.token, snap.state) {
            (Some(t), State::Fresh) => Ok(Arc::clone(t)),
            _ => Err(snap
                .last_error
                .as_deref()
                .unwrap_or("no token was obtained")
                .to_owned()),
        }
    }

    async fn put_refresh_token(
        &mut self,
        refresh_token: SecretString,
        access_token: Option<(SecretString, Timestamp)>,
    ) -> Result<Arc<Token>, String> {
        if self.oauth().grant != OAuthGrant::RefreshToken {
            return Err(format!(
                "credential `{}` does not use refresh tokens",
                self.name()
            ));
        }
        let now = clock::now();
        let mut record = Record {
            refresh_token: Some(Zeroizing::new(refresh_token.expose_secret().to_owned())),
            logged_in_at: Some(now.as_second()),
            ..Record::default()
        };
        if let Some((access, exp)) = &access_token {
            record.access_token = Some(Zeroizing::new(access.expose_secret().to_owned()));
            record.access_expires_at = Some(exp.as_second());
            record.access_issued_at = Some(now.as_second());
        }
        self.persist(record).await.map_err(|e| e.to_string())?;
        self.unconfirmed_refresh = None;
        self.failures = 0;
        self.retry_at = None;
        tracing::info!("new refresh token stored");
        match access_token {
            Some((access, exp)) => {
                self.generation += 1;
                let token = Arc::new(Token::new(
                    access.expose_secret(),
                    Some(exp),
                    now,
                    self.generation,
                    None,
                ));
                self.publish_token(Arc::clone(&token), now);
                Ok(token)
            }
            None => {
                self.refresh().await;
                self.outcome()
            }
        }
    }

    /// One refresh attempt, with its outcome published.
    async fn refresh(&mut self) {
        let now = clock::now();
        // A retry after failures stays `Stale`: that is what a person
        // needs to see, not the attempt flickering by.
        if self.failures == 0 {
            self.set_refreshing();
        }
        let endpoint = match self.endpoint().await {
            Ok(e) => e,
            Err(e) => return self.failed(e, now).await,
        };
        let grant = self.oauth().grant;
        let refresh_token = match grant {
            OAuthGrant::ClientCredentials => None,
            OAuthGrant::RefreshToken => match &self.record.refresh_token {
                Some(rt) => Some(SecretString::from(rt.as_str())),
                None => {
                    return self.stop(
                        State::NeedsLogin,
                        format!("no refresh token yet; run `tokenctl login {}`", self.name()),
                    );
                }
            },
        };
        if refresh_token.is_some() {
            let mut marked = self.record.clone();
            marked.refreshing_since = Some(now.as_second());
            if let Err(e) = self.persist(marked).await {
                // Refreshing without the marker would risk an unexplained loss.
                return self
                    .failed(
                        TokenError::Transient {
                            reason: format!("cannot write to the store: {e}"),
                            retry_after: None,
                            answered: true,
                        },
                        now,
                    )
                    .await;
            }
        }
        let started = std::time::Instant::now();
        let mut result = self.request(&endpoint, refresh_token.as_ref(), now).await;
        // A server with a reuse grace period still accepts the refresh token
        // from before the last rotation if the new one never worked.
        if let (Err(e), Some(previous)) = (&result, &self.record.previous_refresh_token)
            && e.is_invalid_grant()
        {
            tracing::warn!("refresh token refused; trying the one from before the last rotation");
            let previous = SecretString::from(previous.as_str());
            result = self.request(&endpoint, Some(&previous), now).await;
        }
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(TokenError::Permanent { .. }) => "permanent",
            Err(_) => "transient",
        };
        self.metrics.refresh(outcome, started);
        match result {
            Ok(tokens) => {
                if self.settings.crash_after_token_response {
                    tracing::error!(
                        "test hook: aborting after a token response, before storing it"
                    );
                    std::process::abort();
                }
                self.succeeded(tokens, refresh_token, now, elapsed).await;
            }
            Err(e) => {
                let answered = !matches!(
                    e,
                    TokenError::Transient {
                        answered: false,
                        ..
                    }
                );
                let mut record = self.record.clone();
                if answered {
                    record.refreshing_since = None;
                } else {
                    self.unconfirmed_refresh.get_or_insert(now);
                }
                if let Err(store) = self.persist(record).await {
                    tracing::error!(error = %store, "cannot update the store");
                }
                self.failed(e, now).await;
            }
        }
    }

    async fn request(
        &self,
        endpoint: &str,
        refresh_token: Option<&SecretString>,
        now: Timestamp,
    ) -> Result<oauth::Tokens, TokenError> {
        let grant = match refresh_token {
            Some(rt) => oauth::Grant::RefreshToken(rt),
            None => oauth::Grant::ClientCredentials,
        };
        let oauth = self.oauth();
        oauth::request_token(
            &self.http,
            endpoint,
            &oauth.client,
            grant,
            oauth.schedule.default_lifetime,
            now,
        )
        .await
    }

    /// Commits the new tokens, then publishes them.
    async fn succeeded(
        &mut self,
        tokens: oauth::Tokens,
        used: Option<SecretString>,
        now: Timestamp,
        elapsed: Duration,
    ) {
        let mut record = self.record.clone();
        record.refreshing_since = None;
        match (&tokens.refresh_token, &used) {
            (Some(new), Some(old)) if new.expose_secret() != old.expose_secret() => {
                record.previous_refresh_token =
                    Some(Zeroizing::new(old.expose_secret().to_owned()));
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
        self.unconfirmed_refresh = None;
        self.failures = 0;
        self.retry_at = None;
        self.generation += 1;
        let token = Arc::new(Token::new(
            tokens.access_token.expose_secret(),
            Some(tokens.expires_at),
            now,
            self.generation,
            tokens.scope,
        ));
        tracing::info!(
            expires_at = %tokens.expires_at,
            fingerprint = %token.fingerprint,
            rotated = tokens.refresh_token.is_some(),
            took_ms = elapsed.as_millis() as u64,
            "refreshed"
        );
        let lifetime = clock::between(now, tokens.expires_at);
        self.publish_token(token, now);
        if lifetime <= self.credential.min_valid {
            // Such a token can never be served; say why instead of letting
            // callers time out without a reason.
            let message = format!(
                "the issuer's access tokens live {}, no longer than min_valid ({}); lower \
                 min_valid for `{}`",
                clock::human(lifetime),
                clock::human(self.credential.min_valid),
                self.name()
            );
            tracing::error!("{message}");
            self.publish.send_modify(|s| {
                let mut next = Snapshot::clone(s);
                next.last_error = Some(message.into());
                *s = Arc::new(next);
            });
        }
    }

    async fn failed(&mut self, e: TokenError, now: Timestamp) {
        match e {
            TokenError::Permanent { .. } if e.is_invalid_grant() => {
                let message = match self.unconfirmed_refresh {
                    Some(at) => format!(
                        "refresh token rotated by the server but lost in a crash or a lost \
                         response at {at} ({e}); run `tokenctl login {}`",
                        self.name()
                    ),
                    None => format!(
                        "the authorization server refused the refresh token ({e}): the grant \
                         was revoked or expired; run `tokenctl login {}`",
                        self.name()
                    ),
                };
                let mut record = self.record.clone();
                record.needs_login = Some(message.clone());
                if let Err(store) = self.persist(record).await {
                    tracing::error!(error = %store, "cannot record that the grant is gone");
                }
                self.stop(State::NeedsLogin, message);
                // The grant is gone, and its access tokens with it (servers
                // revoke them together): stop handing this one out.
                self.publish.send_modify(|s| {
                    let mut next = Snapshot::clone(s);
                    next.token = None;
                    *s = Arc::new(next);
                });
            }
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
            } => {
                let delay = backoff(
                    self.failures,
                    self.settings.max_backoff,
                    retry_after,
                    fastrand::f64(),
                );
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(Instant::now() + delay);
                let snap = self.current();
                let state = match &snap.token {
                    Some(t) if t.valid_for(Duration::ZERO, now) => State::Stale,
                    _ => State::Expired,
                };
                tracing::warn!(
                    error = %reason,
                    retry_in_ms = delay.as_millis() as u64,
                    failures = self.failures,
                    "refresh failed; will retry"
                );
                let message = format!("refresh failing: {reason}");
                self.publish.send_modify(|s| {
                    let mut next = Snapshot::clone(s);
                    next.state = state;
                    next.failing_since.get_or_insert(now);
                    next.last_error = Some(message.into());
                    next.next_refresh = now
                        .checked_add(SignedDuration::try_from(delay).unwrap_or_default())
                        .ok();
                    *s = Arc::new(next);
                });
            }
        }
    }

    /// Enters a state only a person (or a config change) can leave, and
    /// stops calling the endpoint.
    fn stop(&mut self, state: State, message: String) {
        tracing::error!(state = state.as_str(), "{message}");
        self.retry_at = None;
        self.publish.send_modify(|s| {
            let mut next = Snapshot::clone(s);
            next.state = state;
            next.last_error = Some(message.into());
            next.next_refresh = None;
            *s = Arc::new(next);
        });
    }

    /// Marks a refresh in progress; the current token stays served.
    fn set_refreshing(&self) {
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

    fn publish_token(&mut self, token: Arc<Token>, now: Timestamp) {
        let next_refresh = token.expires_at.map(|exp| {
            refresh_at(
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
        }));
    }

    /// When the login's refresh token reaches the source's lifetime limit.
    fn login_expires_at(&self) -> Option<Timestamp> {
        let lifetime = SignedDuration::try_from(self.oauth().refresh_token_lifetime?).ok()?;
        Timestamp::from_second(self.record.logged_in_at?)
            .ok()?
            .checked_add(lifetime)
            .ok()
    }

    /// The token endpoint: configured, or discovered once from the issuer.
    async fn endpoint(&mut self) -> Result<String, TokenError> {
        if let Some(e) = &self.token_endpoint {
            return Ok(e.clone());
        }
        let endpoint = self.metadata().await?.token_endpoint.clone();
        self.token_endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Refresh-token state is fsync'd; a client-credentials token is only a
    /// cache (losing it costs one request), so it skips the fsync.
    async fn persist(&mut self, record: Record) -> Result<(), crate::store::StoreError> {
        let store = Arc::clone(&self.store);
        let name = self.credential.name.to_string();
        let to_store = record.clone();
        let durability = match self.oauth().grant {
            OAuthGrant::RefreshToken => Durability::Immediate,
            OAuthGrant::ClientCredentials => Durability::Cached,
        };
        tokio::task::spawn_blocking(move || store.put_with(&name, &to_store, durability))
            .await
            .map_err(|e| crate::store::StoreError::Database {
                path: "(store task)".into(),
                message: e.to_string(),
            })??;
        self.record = record;
        Ok(())
    }
}

/// Whether an issuer can run tokend's login: S256 PKCE, and the configured
/// client authentication (RFC 8414's default when it lists none is
/// client_secret_basic).
fn supports_login(
    metadata: &oauth::Metadata,
    auth_method: oauth::AuthMethod,
    name: &str,
) -> Result<(), String> {
    if !metadata
        .code_challenge_methods_supported
        .iter()
        .any(|m| m == "S256")
    {
        return Err(format!(
            "the issuer does not advertise S256 PKCE (code_challenge_methods_supported: {:?}); \
             tokend will not log in without it",
            metadata.code_challenge_methods_supported
        ));
    }
    let methods = &metadata.token_endpoint_auth_methods_supported;
    let supported = if methods.is_empty() {
        auth_method == oauth::AuthMethod::ClientSecretBasic
    } else {
        methods.iter().any(|m| m == auth_method.as_str())
    };
    if supported {
        Ok(())
    } else {
        Err(format!(
            "the issuer does not support auth_method `{}` (it offers {methods:?}); set \
             auth_method for `{name}` to one of those",
            auth_method.as_str()
        ))
    }
}

fn oauth_of(credential: &Credential) -> &OAuthCredential {
    match &credential.kind {
        Kind::OAuth(o) => o,
        // Drivers are only built for OAuth credentials (see broker).
        Kind::Glean(_) => unreachable!("refresh driver started for a Glean token"),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn instant_at(t: Timestamp) -> Instant {
    Instant::now() + clock::between(clock::now(), t)
}

/// When to renew a token issued at `issued` that expires at `expires`:
/// `expires − max(refresh_before, lifetime × refresh_fraction)`, minus up to
/// a sixth of the lifetime of jitter (`jitter` in 0..1) so that tokens issued
/// together do not renew together, and never later than `expires − min_valid`.
/// A token that lives less than `min_valid` is renewed at half its life.
pub fn refresh_at(
    issued: Timestamp,
    expires: Timestamp,
    schedule: &Schedule,
    min_valid: Duration,
    jitter: f64,
) -> Timestamp {
    let lifetime = clock::between(issued, expires);
    let lead = schedule
        .refresh_before
        .max(lifetime.mul_f64(schedule.refresh_fraction.clamp(0.0, 1.0)));
    let jitter = lifetime.mul_f64(jitter.clamp(0.0, 1.0) / 6.0);
    let back = |d: Duration| {
        expires
            .checked_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
            .unwrap_or(issued)
    };
    let at = back(lead.saturating_add(jitter)).min(back(min_valid));
    if at > issued {
        at
    } else if lifetime > min_valid {
        issued
    } else {
        back(lifetime / 2)
    }
}

/// Delay before retry number `failures + 1`: exponential from 1 s, capped,
/// with full jitter (`unit` in 0..1), at least 100 ms, and never shorter
/// than the server's `Retry-After` (itself capped at an hour).
pub fn backoff(failures: u32, cap: Duration, retry_after: Option<Duration>, unit: f64) -> Duration {
    let exp = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.min(20))
        .min(cap);
    let jittered = exp
        .mul_f64(unit.clamp(0.0, 1.0))
        .max(Duration::from_millis(100));
    match retry_after {
        Some(ra) => jittered.max(ra.min(Duration::from_secs(3600))),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const SCHEDULE: Schedule = Schedule {
        refresh_before: Duration::ZERO,
        refresh_fraction: 1.0 / 3.0,
        default_lifetime: Duration::from_secs(3600),
    };

    #[test]
    fn refresh_lands_between_half_and_two_thirds_of_the_lifetime() {
        for jitter in [0.0, 0.5, 1.0] {
            let at = refresh_at(ts(0), ts(3600), &SCHEDULE, Duration::from_secs(60), jitter);
            assert!((1800..=2400).contains(&at.as_second()), "{jitter}: {at}");
        }
        assert_eq!(
            refresh_at(ts(0), ts(3600), &SCHEDULE, Duration::ZERO, 0.0).as_second(),
            2400
        );
        assert_eq!(
            refresh_at(ts(0), ts(3600), &SCHEDULE, Duration::ZERO, 1.0).as_second(),
            1800
        );
    }

    #[test]
    fn refresh_respects_min_valid_and_refresh_before() {
        // min_valid later than the fraction would allow: min_valid wins.
        let at = refresh_at(ts(0), ts(60), &SCHEDULE, Duration::from_secs(50), 0.0);
        assert_eq!(at.as_second(), 10);
        let s = Schedule {
            refresh_before: Duration::from_secs(3000),
            ..SCHEDULE
        };
        assert_eq!(
            refresh_at(ts(0), ts(3600), &s, Duration::ZERO, 0.0).as_second(),
            600
        );
        // A token shorter-lived than min_valid: renew at half-life, not in a loop.
        assert_eq!(
            refresh_at(ts(0), ts(10), &SCHEDULE, Duration::from_secs(60), 0.0).as_second(),
            5
        );
    }

    #[test]
    fn logins_need_s256_and_the_configured_client_authentication() {
        use oauth::AuthMethod::{ClientSecretBasic, ClientSecretPost};
        let metadata = |pkce: &[&str], auth: &[&str]| oauth::Metadata {
            issuer: None,
            token_endpoint: "https://as.example/token".into(),
            authorization_endpoint: Some("https://as.example/auth".into()),
            revocation_endpoint: None,
            code_challenge_methods_supported: pkce.iter().map(|s| s.to_string()).collect(),
            token_endpoint_auth_methods_supported: auth.iter().map(|s| s.to_string()).collect(),
        };
        assert!(
            supports_login(
                &metadata(&["S256"], &["client_secret_post"]),
                ClientSecretPost,
                "x"
            )
            .is_ok()
        );
        let e = supports_login(&metadata(&["plain"], &[]), ClientSecretBasic, "x").unwrap_err();
        assert!(e.contains("does not advertise S256 PKCE"), "{e}");
        let e = supports_login(
            &metadata(&["S256"], &["client_secret_basic"]),
            ClientSecretPost,
            "x",
        )
        .unwrap_err();
        assert!(
            e.contains("does not support auth_method `client_secret_post`"),
            "{e}"
        );
        // Nothing listed: RFC 8414's default, client_secret_basic, only.
        assert!(supports_login(&metadata(&["S256"], &[]), ClientSecretBasic, "x").is_ok());
        assert!(supports_login(&metadata(&["S256"], &[]), ClientSecretPost, "x").is_err());
    }

    proptest::proptest! {
        /// For any lifetime, clock and jitter the refresh time lies within
        /// the token's life, never later than `expires − min_valid` when the
        /// token lives longer than that, and never later than the schedule's
        /// lead unless that would be before issue.
        #[test]
        fn refresh_time_is_inside_the_allowed_window(
            issued in 0i64..4_000_000_000,
            lifetime in 1u64..(10 * 365 * 86_400),
            min_valid in 0u64..(20 * 86_400),
            refresh_before in 0u64..(20 * 86_400),
            fraction in 0.0f64..1.0,
            jitter in 0.0f64..=1.0,
        ) {
            let schedule = Schedule {
                refresh_before: Duration::from_secs(refresh_before),
                refresh_fraction: fraction,
                default_lifetime: Duration::from_secs(3600),
            };
            let (issued_at, expires) = (ts(issued), ts(issued + lifetime as i64));
            let min_valid = Duration::from_secs(min_valid);
            let at = refresh_at(issued_at, expires, &schedule, min_valid, jitter);
            proptest::prop_assert!(at >= issued_at && at <= expires, "{at} outside the life");
            if lifetime > min_valid.as_secs() {
                let latest = expires.as_second() - min_valid.as_secs() as i64;
                proptest::prop_assert!(at.as_second() <= latest, "{at} later than expires - min_valid");
                let lead = refresh_before.max((lifetime as f64 * fraction) as u64) as i64;
                if expires.as_second() - lead > issued {
                    proptest::prop_assert!(at.as_second() <= expires.as_second() - lead + 1);
                }
            } else {
                proptest::prop_assert!(at < expires, "a short-lived token must still be renewed");
            }
        }

        /// Backoff stays between 100 ms and its cap (or Retry-After, capped
        /// at an hour), and never undercuts Retry-After.
        #[test]
        fn backoff_respects_its_cap_and_retry_after(
            failures in 0u32..100,
            cap in 1u64..3600,
            retry_after in proptest::option::of(0u64..100_000),
            unit in 0.0f64..=1.0,
        ) {
            let cap = Duration::from_secs(cap);
            let ra = retry_after.map(Duration::from_secs);
            let d = backoff(failures, cap, ra, unit);
            let honoured = ra.map_or(Duration::ZERO, |r| r.min(Duration::from_secs(3600)));
            proptest::prop_assert!(d >= Duration::from_millis(100));
            proptest::prop_assert!(d >= honoured);
            proptest::prop_assert!(d <= cap.max(honoured).max(Duration::from_millis(100)));
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let cap = Duration::from_secs(300);
        assert_eq!(backoff(0, cap, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, cap, None, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, cap, None, 1.0), cap);
        assert_eq!(backoff(30, cap, None, 0.0), Duration::from_millis(100));
        assert_eq!(
            backoff(0, cap, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(0, cap, Some(Duration::from_secs(99_999)), 0.5),
            Duration::from_secs(3600)
        );
    }
}
