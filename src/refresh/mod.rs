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
//!
//! The driver's parts: [`schedule`] (when), `gate` (per-issuer limits on
//! requests in flight and `Retry-After`), `attempt` (one refresh and its
//! outcome), `login` (commands a person starts), `record` (the store
//! protocol; every store call off the async threads) and `publish` (the one
//! writer of the credential's `watch` channel).

mod attempt;
mod gate;
mod login;
mod publish;
pub(crate) mod record;
pub mod schedule;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::clock::{self, SharedClock};
use crate::credential::{Credential, Kind, OAuthCredential};
use crate::fleet::{Fence, Fleet, Seat, View};
use crate::metrics::Metrics;
use crate::oauth::{self, TokenEndpoint};
use crate::store::{Record, Store};
use crate::token::{Snapshot, State, Token};

pub use gate::Gates;
pub use schedule::{backoff, refresh_at};

/// Settings shared by every driver.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Longest wait between retries of a failing refresh.
    pub max_backoff: Duration,
    /// Per-issuer limits on token requests, shared by every driver.
    pub gates: Arc<Gates>,
}

/// What every driver shares: where records live, how to reach token
/// endpoints, what time it is, and where outcomes are counted.
#[derive(Clone, Debug)]
pub struct Deps {
    /// The encrypted store of refresh and access tokens.
    pub store: Arc<Store>,
    /// Token, discovery and revocation endpoints.
    pub endpoint: Arc<dyn TokenEndpoint>,
    /// Backoff settings.
    pub settings: Settings,
    /// Refresh outcomes and durations.
    pub metrics: Arc<Metrics>,
    /// Wall-clock time.
    pub clock: SharedClock,
    /// The fleet, when `[fleet]` is configured: shared credentials take a
    /// seat in it.
    pub fleet: Option<Arc<Fleet>>,
}

/// Why a driver could not do what it was asked. The driver knows which
/// class a failure is when it happens, so callers never guess from a state
/// read later (which may already have changed).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A person must log in (again): no refresh token, or the grant is gone.
    #[error("{0}")]
    NeedsLogin(Arc<str>),
    /// The source refuses the client or its configuration.
    #[error("{0}")]
    Misconfigured(Arc<str>),
    /// No token now; retrying may help (the source is down or slow).
    #[error("{0}")]
    Unavailable(Arc<str>),
    /// The request does not apply to this credential or its issuer (a login
    /// for client credentials, a revocation the issuer cannot do).
    #[error("{0}")]
    NotApplicable(String),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

/// A driver's answer to a command.
pub type Reply<T> = oneshot::Sender<Result<T, DriverError>>;

/// A request to a driver from the rest of the daemon.
pub enum Command {
    /// Refresh now, whatever the schedule says, and report the outcome.
    Refresh {
        /// The new token, or why there is none.
        reply: Reply<Arc<Token>>,
    },
    /// Use this refresh token from now on (from `tokenctl login`); with an
    /// access token, serve it at once.
    PutRefreshToken {
        /// The refresh token to keep.
        refresh_token: SecretString,
        /// An access token and its expiry, to serve before the first refresh.
        access_token: Option<(SecretString, Timestamp)>,
        /// The token served afterwards.
        reply: Reply<Arc<Token>>,
    },
    /// Discover what a login needs, checking the server supports it.
    BeginLogin {
        /// What the person's side of the login needs.
        reply: Reply<LoginInfo>,
    },
    /// Exchange an authorization code and store the tokens it yields.
    CompleteLogin {
        /// The authorization code from the redirect.
        code: SecretString,
        /// The PKCE verifier of the login.
        verifier: SecretString,
        /// The redirect URI the code was issued for.
        redirect_uri: String,
        /// The first access token.
        reply: Reply<Arc<Token>>,
    },
    /// Forget the refresh token, optionally revoking it first.
    Logout {
        /// Revoke at the issuer before forgetting.
        revoke: bool,
        /// Whether the issuer confirmed the revocation.
        reply: Reply<bool>,
    },
}

/// What `tokenctl login` needs to build the authorization URL.
#[derive(Clone, Debug)]
pub struct LoginInfo {
    /// Where the person's browser goes.
    pub authorization_endpoint: String,
    /// The OAuth client.
    pub client_id: String,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
    /// Where the code is delivered.
    pub redirect_uri: String,
}

/// How the rest of the daemon reaches a running driver.
#[derive(Debug)]
pub struct Handle {
    /// Wakes the driver to check whether it must refresh now. Permits
    /// coalesce, so a thousand wakes cause at most one extra check.
    pub wake: Arc<Notify>,
    /// Commands, answered in order.
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
    deps: Deps,
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
    /// The node whose refresh may have been lost, when not this one.
    unconfirmed_node: Option<String>,
    /// A shared credential's seat in the fleet, and its view.
    seat: Option<Seat>,
    views: Option<watch::Receiver<Arc<View>>>,
    /// The revision of the shared record this driver holds.
    applied: i64,
    /// The right to present the shared refresh token, while marked.
    fence: Option<Fence>,
    /// An answer etcd did not take yet (unreachable), to commit first.
    pending: Option<(Fence, Record)>,
}

impl Driver {
    /// A driver for the OAuth `credential`, publishing on `publish` (a
    /// channel taken over from a replaced driver keeps its watchers).
    pub fn new(
        credential: Arc<Credential>,
        publish: watch::Sender<Arc<Snapshot>>,
        deps: Deps,
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
        let seat = match (&deps.fleet, &credential.kind) {
            (Some(fleet), Kind::OAuth(o)) if o.shared => Some(fleet.seat(&credential.name)),
            _ => None,
        };
        let views = seat.as_ref().map(Seat::view);
        let driver = Self {
            credential,
            publish,
            commands: rx,
            wake,
            invalidated,
            deps,
            record: Record::default(),
            token_endpoint,
            metadata: None,
            generation,
            failures: 0,
            retry_at: None,
            unconfirmed_refresh: None,
            unconfirmed_node: None,
            seat,
            views,
            applied: 0,
            fence: None,
            pending: None,
        };
        (driver, handle)
    }

    /// Runs until `cancel` fires.
    pub fn run(mut self, cancel: CancellationToken) -> impl Future<Output = ()> + Send {
        let span = tracing::info_span!("credential", name = %self.credential.name);
        async move {
            Box::pin(self.resume()).await;
            // The work each arm starts is boxed: an idle driver (most of
            // them, most of the time) then holds only its loop, a few
            // hundred bytes, instead of the largest state any refresh,
            // login or fleet call might need (kilobytes, times thousands of
            // credentials).
            loop {
                let next = self.next_wake();
                tokio::select! {
                    () = cancel.cancelled() => break,
                    Some(cmd) = self.commands.recv() => Box::pin(self.command(cmd)).await,
                    () = self.wake.notified() => {
                        if self.wants_refresh_now() {
                            Box::pin(self.refresh()).await;
                        } else if self.invalidated_current() {
                            // A follower cannot refresh; the leader can.
                            Box::pin(self.ask_leader()).await;
                        }
                    }
                    () = sleep_until(next) => Box::pin(self.refresh()).await,
                    () = view_changed(&mut self.views) => Box::pin(self.seat_changed()).await,
                }
            }
        }
        .instrument(span)
    }

    fn oauth(&self) -> &OAuthCredential {
        oauth_of(&self.credential)
    }

    fn name(&self) -> &str {
        &self.credential.name
    }

    fn now(&self) -> Timestamp {
        self.deps.clock.now()
    }

    /// When the loop should next refresh on its own; `None` waits for a
    /// command (the credential needs a person).
    fn next_wake(&self) -> Option<Instant> {
        let snap = self.current();
        if !self.may_refresh() || matches!(snap.state, State::NeedsLogin | State::Misconfigured) {
            return None;
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        let now = self.now();
        Some(
            snap.next_refresh
                .map_or_else(Instant::now, |t| Instant::now() + clock::between(now, t)),
        )
    }

    /// On a wake: refresh now only if a caller cannot be served or the
    /// current token was reported rejected, and never during a backoff.
    fn wants_refresh_now(&self) -> bool {
        if self.retry_at.is_some_and(|at| at > Instant::now()) || !self.may_refresh() {
            return false;
        }
        let snap = self.current();
        if matches!(snap.state, State::NeedsLogin | State::Misconfigured) {
            return false;
        }
        match &snap.token {
            None => true,
            Some(t) => {
                t.generation == self.invalidated.load(Ordering::Acquire)
                    || !t.valid_for(self.credential.min_valid, self.now())
            }
        }
    }

    /// Whether the token served now was reported rejected (`Invalidate`).
    fn invalidated_current(&self) -> bool {
        self.current()
            .token
            .as_ref()
            .is_some_and(|t| t.generation == self.invalidated.load(Ordering::Acquire))
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Refresh { reply } => {
                // A grant the server declared dead is never presented
                // again, not even when an admin asks: only a login helps.
                if self.record.needs_login.is_none() {
                    self.retry_at = None;
                    self.refresh().await;
                }
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

    /// A new start after a login or a new refresh token: earlier failures
    /// and a suspected lost rotation no longer apply.
    fn forget_failures(&mut self) {
        self.unconfirmed_refresh = None;
        self.unconfirmed_node = None;
        self.failures = 0;
        self.retry_at = None;
    }
}

fn oauth_of(credential: &Credential) -> &OAuthCredential {
    match &credential.kind {
        Kind::OAuth(o) => o,
        // Drivers are only built for OAuth credentials (see broker).
        Kind::Glean(_) => unreachable!("refresh driver started for a Glean token"),
    }
}

/// Resolves when a shared credential's view changes; never otherwise.
async fn view_changed(views: &mut Option<watch::Receiver<Arc<View>>>) {
    let Some(rx) = views else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
