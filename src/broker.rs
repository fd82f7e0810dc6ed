//! The broker: every configured credential by name, and the decision whether
//! a caller gets headers for one.
//!
//! Checks run in the order a person fixes them: does the credential exist, may
//! this caller use it, is the request well-formed for its kind, may the caller
//! act as whom it asks, does the token have the scopes, is it still valid.
//! The cached path borrows the published [`Snapshot`] (an `Arc` clone) and
//! allocates nothing; only a caller that finds no usable token waits, on the
//! credential's `watch` channel, for the refresh its wake-up triggers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use secrecy::ExposeSecret;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::clock;
use crate::config::Config;
use crate::credential::{Admins, Credential, GleanSecret, GleanToken, Kind};
use crate::glean::{self, Permission, Scope, ScopeSet};
use crate::peer::Peer;
use crate::refresh::{self, Command, Driver, Handle, LoginInfo};
use crate::store::{Record, Store, StoreError};
use crate::token::{Snapshot, State, Token};

/// A caller's request for the headers of one credential.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadersRequest<'a> {
    pub credential: &'a str,
    /// Empty when not acting as anyone.
    pub act_as: &'a str,
    pub required_scopes: &'a [String],
    /// A margin beyond the credential's own `min_valid`, which is a floor:
    /// a caller may ask for more time, never for less.
    pub min_valid: Option<Duration>,
}

/// Headers granted to a caller.
#[derive(Debug)]
pub struct Grant<'a> {
    pub token: Arc<Token>,
    /// Value for `X-Glean-ActAs`, for global Glean tokens.
    pub act_as: Option<&'a str>,
    /// The credential served, for its configured extra headers.
    pub credential: Arc<Credential>,
    /// The token has less than `min_valid` left and refreshing is failing;
    /// served only where the credential allows `serve_stale`.
    pub stale: bool,
}

impl Grant<'_> {
    /// The headers in the order to send them.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once(("Authorization", self.token.authorization()))
            .chain(self.act_as.map(|a| (glean::ACT_AS_HEADER, a)))
            .chain(
                self.extra_headers()
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str())),
            )
    }

    fn extra_headers(&self) -> &[(String, String)] {
        match &self.credential.kind {
            Kind::OAuth(o) => &o.extra_headers,
            Kind::Glean(_) => &[],
        }
    }
}

/// Why a caller gets no headers. Every message names the credential and what
/// to do; none carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No credential has this name.
    #[error(
        "no credential named `{name}` is configured; `tokenctl status` lists those you may use"
    )]
    NotFound { name: String },
    /// The caller is admitted by none of the credential's `allow` rules.
    #[error(
        "uid {uid} (gid {gid}, pid {pid}) may not use credential `{name}`; add the uid or one of \
         its groups to the credential's `allow` in tokend's config"
    )]
    CallerDenied {
        name: Arc<str>,
        uid: u32,
        gid: u32,
        pid: i32,
    },
    /// The caller may not use administrative methods.
    #[error(
        "uid {uid} may not {action}; only root and the config's daemon.admin_uids / \
         daemon.admin_groups may"
    )]
    NotAdmin { uid: u32, action: &'static str },
    /// A global Glean token was asked for without `act_as`.
    #[error(
        "credential `{name}` is a global Glean token, which requires the {header} header: \
         set act_as to the email of the user to act as",
        header = glean::ACT_AS_HEADER
    )]
    ActAsRequired { name: Arc<str> },
    /// A token that cannot act as others was asked for with `act_as`.
    #[error(
        "credential `{name}` is {what}, for which {header} must be empty; drop act_as (only \
         global Glean tokens act as other users)",
        header = glean::ACT_AS_HEADER
    )]
    ActAsRefused { name: Arc<str>, what: String },
    /// `act_as` is not an email address.
    #[error("act_as {act_as:?} for credential `{name}` is not an email address")]
    ActAsInvalid { name: Arc<str>, act_as: String },
    /// The caller's `allow.act_as` patterns do not cover `act_as`.
    #[error(
        "uid {uid} may not act as `{act_as}` with credential `{name}`; add a matching pattern \
         to `allow.act_as` for that caller in tokend's config"
    )]
    ActAsDenied {
        name: Arc<str>,
        uid: u32,
        act_as: String,
    },
    /// A required scope is not one of Glean's.
    #[error(
        "required scope `{scope}` for credential `{name}` is not a Glean scope; Glean's scopes \
         are {}", Scope::names().join(", ")
    )]
    UnknownScope { name: Arc<str>, scope: String },
    /// The token lacks scopes the caller needs.
    #[error("credential `{name}` lacks scope(s) {missing}; {fix}")]
    MissingScopes {
        name: Arc<str>,
        missing: String,
        fix: &'static str,
    },
    /// The token has expired.
    #[error(
        "credential `{name}` expired at {at} ({ago} ago); it must be rotated: create a new \
         token in Glean's admin console{owner} and update its secret in tokend",
        ago = clock::human(*ago),
        owner = owner.as_deref().map(|o| format!(" (owner: {o})")).unwrap_or_default()
    )]
    Expired {
        name: Arc<str>,
        at: Timestamp,
        ago: Duration,
        owner: Option<String>,
    },
    /// The token expires sooner than the caller needs it.
    #[error(
        "credential `{name}` expires at {at}, in {left}, sooner than the {min_valid} required \
         (min_valid); it must be rotated soon",
        left = clock::human(*left),
        min_valid = clock::human(*min_valid)
    )]
    ExpiresTooSoon {
        name: Arc<str>,
        at: Timestamp,
        left: Duration,
        min_valid: Duration,
    },
    /// A Glean token kept in the store has not been imported yet.
    #[error("credential `{name}` has no secret yet; run `tokenctl import {name}`")]
    NotImported { name: Arc<str> },
    /// A person must log in again (or for the first time).
    #[error("credential `{name}` needs login: {reason}")]
    NeedsLogin { name: Arc<str>, reason: Arc<str> },
    /// The source refuses the client or its configuration.
    #[error("credential `{name}` is misconfigured: {reason}")]
    Misconfigured { name: Arc<str>, reason: Arc<str> },
    /// No valid token arrived in time; refreshing is failing or slow.
    #[error(
        "credential `{name}` has no token valid for the required time yet: {reason}; \
         tokend keeps retrying"
    )]
    Unavailable { name: Arc<str>, reason: String },
    /// The operation does not apply to this kind of credential.
    #[error("credential `{name}` is a {kind} credential: {what}")]
    WrongKind {
        name: Arc<str>,
        kind: &'static str,
        what: &'static str,
    },
    /// A value sent to an admin method is unusable.
    #[error("{0}")]
    InvalidInput(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What `ListCredentials` reports of one credential; no secrets.
#[derive(Clone, Debug)]
pub struct Status {
    pub name: Arc<str>,
    pub kind: &'static str,
    pub permission: Option<Permission>,
    pub state: State,
    pub expires_at: Option<Timestamp>,
    pub scopes: Vec<String>,
    pub owner: Option<String>,
    pub instance: Option<String>,
    pub last_error: Option<Arc<str>>,
    pub last_refresh: Option<Timestamp>,
    pub next_refresh: Option<Timestamp>,
    pub login_expires_at: Option<Timestamp>,
    pub failing_since: Option<Timestamp>,
}

/// One credential and what is served for it.
#[derive(Debug)]
struct Slot {
    credential: Arc<Credential>,
    /// Of the credential's definition and secrets: equal means unchanged
    /// by a reload.
    fingerprint: [u8; 32],
    /// Kept across reloads that change the credential, so watchers follow.
    current: watch::Sender<Arc<Snapshot>>,
    /// Present for credentials that renew (OAuth).
    driver: Option<Handle>,
    /// The driver task, awaited before a replacement driver starts: two
    /// drivers must never refresh one rotating refresh token at once.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Stops this credential's driver (a child of the broker's).
    cancel: CancellationToken,
}

/// The credentials in force: replaced whole by a reload.
#[derive(Debug, Default)]
struct Slots {
    map: HashMap<Arc<str>, Arc<Slot>>,
    /// Sorted, for stable listings.
    names: Vec<Arc<str>>,
}

/// What the broker needs beyond the config.
#[derive(Clone, Debug)]
pub struct Services {
    /// Required when the config names OAuth or stored credentials.
    pub store: Option<Arc<Store>>,
    pub http: reqwest::Client,
    pub refresh: refresh::Settings,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// What a reload changed, by credential name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
}

/// Every configured credential, by name.
#[derive(Debug)]
pub struct Broker {
    /// Read lock-free on every call; swapped whole by `reload`.
    slots: ArcSwap<Slots>,
    admins: Admins,
    store: Option<Arc<Store>>,
    services: Services,
    drivers: TaskTracker,
    stop: CancellationToken,
}

impl Broker {
    /// Builds the broker and starts the refresh drivers of its OAuth
    /// credentials (which needs a tokio runtime when there are any). Reads
    /// imported Glean secrets from the store (blocking; at startup).
    pub fn start(config: Config, services: Services) -> Result<Self, BrokerError> {
        let broker = Self {
            slots: ArcSwap::default(),
            admins: config.daemon.admins.clone(),
            store: services.store.clone(),
            services,
            drivers: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        broker.reload(config)?;
        Ok(broker)
    }

    /// Applies `config`'s credentials: unchanged ones keep their slot (token,
    /// timers, watchers); changed ones restart their lifecycle on the same
    /// channel, so watchers see the new token; removed ones stop, which ends
    /// their watchers. Daemon-wide settings are not reloaded.
    pub fn reload(&self, config: Config) -> Result<Reloaded, BrokerError> {
        let old = self.slots.load_full();
        let mut slots = Slots::default();
        let mut report = Reloaded::default();
        // Build everything first: a failure leaves the running set untouched.
        let mut fresh = Vec::new();
        for credential in config.credentials {
            let fingerprint = credential.fingerprint();
            let name = Arc::clone(&credential.name);
            match old.map.get(&name) {
                Some(slot) if slot.fingerprint == fingerprint => {
                    report.unchanged += 1;
                    slots.map.insert(Arc::clone(&name), Arc::clone(slot));
                }
                previous => {
                    let current = previous.map(|p| p.current.clone());
                    let (slot, driver) =
                        self.new_slot(Arc::new(credential), fingerprint, current)?;
                    match previous {
                        Some(_) => report.changed.push(name.to_string()),
                        None => report.added.push(name.to_string()),
                    }
                    fresh.push((Arc::clone(&slot), driver, previous.cloned()));
                    slots.map.insert(Arc::clone(&name), slot);
                }
            }
            slots.names.push(name);
        }
        slots.names.sort();
        for (name, slot) in &old.map {
            if !slots.map.contains_key(name) {
                report.removed.push(name.to_string());
                slot.cancel.cancel();
            }
        }
        for (slot, driver, previous) in fresh {
            let before = previous.and_then(|p| {
                p.cancel.cancel();
                p.task.lock().ok()?.take()
            });
            let Some(driver) = driver else { continue };
            // The replaced driver finishes any refresh in flight first.
            let cancel = slot.cancel.clone();
            let task = self.drivers.spawn(async move {
                if let Some(before) = before {
                    let _ = before.await;
                }
                driver.run(cancel).await;
            });
            *slot.task.lock().expect("not poisoned") = Some(task);
        }
        self.slots.store(Arc::new(slots));
        Ok(report)
    }

    /// A slot for `credential`; a changed credential passes its old
    /// channel as `current`, so its watchers see the new token.
    fn new_slot(
        &self,
        credential: Arc<Credential>,
        fingerprint: [u8; 32],
        current: Option<watch::Sender<Arc<Snapshot>>>,
    ) -> Result<(Arc<Slot>, Option<Driver>), BrokerError> {
        let store = self.services.store.as_ref();
        let (snapshot, renews) = match &credential.kind {
            Kind::Glean(g) => {
                // Generations keep rising across a change, for watchers and
                // `Invalidate`.
                let generation = current
                    .as_ref()
                    .and_then(|tx| tx.borrow().token.as_ref().map(|t| t.generation))
                    .unwrap_or(0)
                    + 1;
                (
                    glean_snapshot(&credential.name, g, store, generation)?,
                    false,
                )
            }
            Kind::OAuth(_) => (Snapshot::new(State::Refreshing), true),
        };
        let current = match current {
            Some(tx) => {
                tx.send_replace(Arc::new(snapshot));
                tx
            }
            None => watch::channel(Arc::new(snapshot)).0,
        };
        let (driver, handle) = if renews {
            let store = store.ok_or_else(|| {
                BrokerError::InvalidInput("OAuth credentials need the store".into())
            })?;
            let (driver, handle) = Driver::new(
                Arc::clone(&credential),
                current.clone(),
                Arc::clone(store),
                self.services.http.clone(),
                self.services.refresh.clone(),
                Arc::clone(&self.services.metrics),
            );
            (Some(driver), Some(handle))
        } else {
            (None, None)
        };
        let slot = Arc::new(Slot {
            credential,
            fingerprint,
            current,
            driver: handle,
            task: std::sync::Mutex::new(None),
            cancel: self.stop.child_token(),
        });
        Ok((slot, driver))
    }

    /// Stops every refresh driver and waits for them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.drivers.close();
        self.drivers.wait().await;
    }

    /// Whether `peer` may call administrative methods and see everything.
    pub fn is_admin(&self, peer: &Peer) -> bool {
        self.admins.admits(peer)
    }

    pub fn len(&self) -> usize {
        self.slots.load().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, BrokerError> {
        self.slots
            .load()
            .map
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::NotFound {
                name: name.to_owned(),
            })
    }

    /// The slot for `name` if `peer` may use it.
    fn allowed_slot(&self, peer: &Peer, name: &str) -> Result<Arc<Slot>, BrokerError> {
        let slot = self.slot(name)?;
        if slot.credential.admits(peer) {
            Ok(slot)
        } else {
            Err(BrokerError::CallerDenied {
                name: Arc::clone(&slot.credential.name),
                uid: peer.uid,
                gid: peer.gid,
                pid: peer.pid.unwrap_or(0),
            })
        }
    }

    /// The headers `peer` should send for `req`, waiting up to `wait` for a
    /// refresh when no token valid for long enough is held.
    pub async fn get_headers<'a>(
        &'a self,
        peer: &Peer,
        req: HeadersRequest<'a>,
        wait: Duration,
    ) -> Result<Grant<'a>, BrokerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let slot = self.allowed_slot(peer, req.credential)?;
        let mut rx = None;
        loop {
            if let Some(grant) = self.try_get(&slot, peer, req, clock::now())? {
                return Ok(grant);
            }
            let rx = rx.get_or_insert_with(|| slot.current.subscribe());
            rx.borrow_and_update();
            // Re-check after subscribing: a refresh may have landed between.
            if let Some(grant) = self.try_get(&slot, peer, req, clock::now())? {
                return Ok(grant);
            }
            if let Some(d) = &slot.driver {
                d.wake.notify_one();
            }
            let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                let snap = slot.current.borrow();
                return Err(BrokerError::Unavailable {
                    name: Arc::clone(&slot.credential.name),
                    reason: snap
                        .last_error
                        .as_deref()
                        .unwrap_or("the refresh did not finish in time")
                        .to_owned(),
                });
            }
        }
    }

    /// The headers for `req` if they can be served at `now` without waiting;
    /// `Ok(None)` when a refresh must come first.
    pub fn try_get_headers<'a>(
        &'a self,
        peer: &Peer,
        req: HeadersRequest<'a>,
        now: Timestamp,
    ) -> Result<Option<Grant<'a>>, BrokerError> {
        let slot = self.allowed_slot(peer, req.credential)?;
        self.try_get(&slot, peer, req, now)
    }

    fn try_get<'a>(
        &self,
        slot: &Slot,
        peer: &Peer,
        req: HeadersRequest<'a>,
        now: Timestamp,
    ) -> Result<Option<Grant<'a>>, BrokerError> {
        let c = &slot.credential;
        let name = || Arc::clone(&c.name);
        let min_valid = req.min_valid.map_or(c.min_valid, |m| m.max(c.min_valid));
        let snap = Arc::clone(&slot.current.borrow());
        match &c.kind {
            Kind::Glean(g) => {
                let act_as = glean_act_as(c, g, peer, req.act_as)?;
                let required = glean_scopes(c, req.required_scopes)?;
                let missing = required.missing_from(g.scopes);
                if !missing.is_empty() {
                    return Err(BrokerError::MissingScopes {
                        name: name(),
                        missing: missing.to_string(),
                        fix: "a Glean token's scopes are fixed when it is created: create one \
                              with them in Glean's admin console and rotate it into tokend",
                    });
                }
                let token = snap
                    .token
                    .clone()
                    .ok_or_else(|| BrokerError::NotImported { name: name() })?;
                if let Some(at) = token.expires_at {
                    if at <= now {
                        return Err(BrokerError::Expired {
                            name: name(),
                            at,
                            ago: clock::between(at, now),
                            owner: g.owner.clone(),
                        });
                    }
                    let left = clock::between(now, at);
                    if left < min_valid {
                        return Err(BrokerError::ExpiresTooSoon {
                            name: name(),
                            at,
                            left,
                            min_valid,
                        });
                    }
                }
                Ok(Some(Grant {
                    token,
                    act_as,
                    credential: Arc::clone(&slot.credential),
                    stale: false,
                }))
            }
            Kind::OAuth(o) => {
                if !req.act_as.is_empty() {
                    return Err(BrokerError::ActAsRefused {
                        name: name(),
                        what: format!("an {} credential", c.kind.name()),
                    });
                }
                let granted: Vec<&str> = match snap.token.as_ref().and_then(|t| t.scope.as_deref())
                {
                    Some(scope) => scope.split(' ').collect(),
                    None => o.client.scopes.iter().map(String::as_str).collect(),
                };
                let missing: Vec<&str> = req
                    .required_scopes
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !granted.contains(s))
                    .collect();
                if !missing.is_empty() {
                    return Err(BrokerError::MissingScopes {
                        name: name(),
                        missing: missing.join(", "),
                        fix: "add them to the credential's scopes (and have them granted), \
                              then log in again",
                    });
                }
                let grant = |token: &Arc<Token>, stale| Grant {
                    token: Arc::clone(token),
                    act_as: None,
                    credential: Arc::clone(&slot.credential),
                    stale,
                };
                if let Some(t) = &snap.token
                    && t.valid_for(min_valid, now)
                {
                    return Ok(Some(grant(t, false)));
                }
                match snap.state {
                    State::NeedsLogin => Err(BrokerError::NeedsLogin {
                        name: name(),
                        reason: snap.last_error.clone().unwrap_or_else(|| "".into()),
                    }),
                    State::Misconfigured => Err(BrokerError::Misconfigured {
                        name: name(),
                        reason: snap.last_error.clone().unwrap_or_else(|| "".into()),
                    }),
                    State::Stale if o.serve_stale => Ok(snap
                        .token
                        .as_ref()
                        .filter(|t| t.valid_for(Duration::ZERO, now))
                        .map(|t| grant(t, true))),
                    _ => Ok(None),
                }
            }
        }
    }

    /// A receiver of `name`'s snapshots, for streaming updates to `peer`.
    pub fn watch(
        &self,
        peer: &Peer,
        name: &str,
    ) -> Result<watch::Receiver<Arc<Snapshot>>, BrokerError> {
        Ok(self.allowed_slot(peer, name)?.current.subscribe())
    }

    /// An API rejected the token with `fingerprint`: replace it now if it is
    /// still the current one. Returns whether a refresh was triggered.
    pub fn invalidate(
        &self,
        peer: &Peer,
        name: &str,
        fingerprint: &str,
    ) -> Result<bool, BrokerError> {
        let slot = self.allowed_slot(peer, name)?;
        let snap = slot.current.borrow();
        let (Some(driver), Some(token)) = (&slot.driver, &snap.token) else {
            return Ok(false);
        };
        if token.fingerprint != fingerprint {
            return Ok(false);
        }
        driver
            .invalidated
            .store(token.generation, Ordering::Release);
        driver.wake.notify_one();
        tracing::info!(credential = %slot.credential.name, fingerprint, "token reported rejected; refreshing");
        Ok(true)
    }

    fn admin_slot(
        &self,
        peer: &Peer,
        name: &str,
        action: &'static str,
    ) -> Result<Arc<Slot>, BrokerError> {
        if !self.is_admin(peer) {
            return Err(BrokerError::NotAdmin {
                uid: peer.uid,
                action,
            });
        }
        self.slot(name)
    }

    fn driver<'a>(&self, slot: &'a Slot, what: &'static str) -> Result<&'a Handle, BrokerError> {
        slot.driver.as_ref().ok_or_else(|| BrokerError::WrongKind {
            name: Arc::clone(&slot.credential.name),
            kind: slot.credential.kind.name(),
            what,
        })
    }

    /// Refreshes `name` now (admin only) and returns the new token.
    pub async fn refresh(&self, peer: &Peer, name: &str) -> Result<Arc<Token>, BrokerError> {
        let slot = self.admin_slot(peer, name, "refresh credentials")?;
        let driver = self.driver(&slot, "it does not refresh; rotate its secret instead")?;
        let (reply, answer) = oneshot::channel();
        self.ask(&slot, driver, Command::Refresh { reply }, answer)
            .await
    }

    /// Stores a refresh token (and optionally an access token) from a login.
    pub async fn put_refresh_token(
        &self,
        peer: &Peer,
        name: &str,
        refresh_token: secrecy::SecretString,
        access_token: Option<(secrecy::SecretString, Timestamp)>,
    ) -> Result<Arc<Token>, BrokerError> {
        let slot = self.admin_slot(peer, name, "store refresh tokens")?;
        let driver = self.driver(&slot, "it does not use refresh tokens")?;
        for t in std::iter::once(&refresh_token).chain(access_token.as_ref().map(|(a, _)| a)) {
            if !header_safe(t.expose_secret()) {
                return Err(BrokerError::InvalidInput(format!(
                    "the token for `{name}` is empty or holds characters that cannot go in a header"
                )));
            }
        }
        let (reply, answer) = oneshot::channel();
        let cmd = Command::PutRefreshToken {
            refresh_token,
            access_token,
            reply,
        };
        self.ask(&slot, driver, cmd, answer).await
    }

    /// What a login for `name` needs (admin only); checks the issuer.
    pub async fn begin_login(&self, peer: &Peer, name: &str) -> Result<LoginInfo, BrokerError> {
        let slot = self.admin_slot(peer, name, "log credentials in")?;
        let driver = self.driver(&slot, "it is not an OAuth credential")?;
        let (reply, answer) = oneshot::channel();
        self.ask(&slot, driver, Command::BeginLogin { reply }, answer)
            .await
    }

    /// Exchanges a login's authorization code and stores the tokens.
    pub async fn complete_login(
        &self,
        peer: &Peer,
        name: &str,
        code: secrecy::SecretString,
        verifier: secrecy::SecretString,
        redirect_uri: String,
    ) -> Result<Arc<Token>, BrokerError> {
        let slot = self.admin_slot(peer, name, "log credentials in")?;
        let driver = self.driver(&slot, "it is not an OAuth credential")?;
        let (reply, answer) = oneshot::channel();
        let cmd = Command::CompleteLogin {
            code,
            verifier,
            redirect_uri,
            reply,
        };
        self.ask(&slot, driver, cmd, answer).await
    }

    /// Forgets `name`'s refresh token, revoking it first if asked.
    pub async fn logout(&self, peer: &Peer, name: &str, revoke: bool) -> Result<bool, BrokerError> {
        let slot = self.admin_slot(peer, name, "log credentials out")?;
        let driver = self.driver(&slot, "it is not an OAuth credential")?;
        let (reply, answer) = oneshot::channel();
        self.ask(&slot, driver, Command::Logout { revoke, reply }, answer)
            .await
    }

    async fn ask<T>(
        &self,
        slot: &Slot,
        driver: &Handle,
        cmd: Command,
        answer: oneshot::Receiver<Result<T, String>>,
    ) -> Result<T, BrokerError> {
        let name = || Arc::clone(&slot.credential.name);
        let gone = || BrokerError::Unavailable {
            name: name(),
            reason: "its refresh task has stopped (tokend is shutting down)".into(),
        };
        driver.commands.send(cmd).await.map_err(|_| gone())?;
        let result = answer.await.map_err(|_| gone())?;
        result.map_err(|reason| {
            let snap = slot.current.borrow();
            match snap.state {
                State::NeedsLogin => BrokerError::NeedsLogin {
                    name: name(),
                    reason: reason.into(),
                },
                State::Misconfigured => BrokerError::Misconfigured {
                    name: name(),
                    reason: reason.into(),
                },
                _ => BrokerError::Unavailable {
                    name: name(),
                    reason,
                },
            }
        })
    }

    /// Stores a Glean secret imported with `tokenctl import` (admin only) and
    /// serves it from now on.
    pub async fn import_secret(
        &self,
        peer: &Peer,
        name: &str,
        secret: secrecy::SecretString,
        expires_at: Option<Timestamp>,
    ) -> Result<(), BrokerError> {
        let slot = self.admin_slot(peer, name, "import secrets")?;
        let wrong = |what| BrokerError::WrongKind {
            name: Arc::clone(&slot.credential.name),
            kind: slot.credential.kind.name(),
            what,
        };
        let Kind::Glean(g) = &slot.credential.kind else {
            return Err(wrong(
                "only glean_token secrets are imported; use `tokenctl login`",
            ));
        };
        if !matches!(g.secret, GleanSecret::Stored) {
            return Err(wrong(
                "its secret is read from the config's source; set secret = { store = true } to import",
            ));
        }
        if !header_safe(secret.expose_secret()) {
            return Err(BrokerError::InvalidInput(format!(
                "the secret for `{name}` is empty or holds characters that cannot go in a header"
            )));
        }
        let store = self
            .store
            .clone()
            .ok_or_else(|| BrokerError::InvalidInput("no store".into()))?;
        let record = Record {
            secret: Some(Zeroizing::new(secret.expose_secret().to_owned())),
            secret_expires_at: expires_at.map(Timestamp::as_second),
            ..Record::default()
        };
        let key = name.to_owned();
        tokio::task::spawn_blocking(move || store.put(&key, &record))
            .await
            .map_err(|e| BrokerError::InvalidInput(e.to_string()))??;
        let generation = slot
            .current
            .borrow()
            .token
            .as_ref()
            .map_or(0, |t| t.generation)
            + 1;
        let token = Token::new(
            secret.expose_secret(),
            expires_at.or(g.expires_at),
            clock::now(),
            generation,
            None,
        );
        slot.current.send_replace(Arc::new(Snapshot {
            token: Some(Arc::new(token)),
            last_refresh: Some(clock::now()),
            ..Snapshot::new(State::Fresh)
        }));
        tracing::info!(credential = name, "secret imported");
        Ok(())
    }

    /// Status of each credential `peer` may use (of all, for admins), by name.
    pub fn list(&self, peer: &Peer, now: Timestamp) -> Vec<Status> {
        let admin = self.is_admin(peer);
        self.statuses(now, |c| admin || c.admits(peer))
    }

    /// Status of every credential, for alerts and metrics.
    pub fn list_all(&self, now: Timestamp) -> Vec<Status> {
        self.statuses(now, |_| true)
    }

    /// Whether `peer` may see credential `name` (alerts about it, say).
    pub fn visible(&self, peer: &Peer, name: &str) -> bool {
        self.is_admin(peer)
            || self
                .slots
                .load()
                .map
                .get(name)
                .is_some_and(|s| s.credential.admits(peer))
    }

    fn statuses(&self, now: Timestamp, keep: impl Fn(&Credential) -> bool) -> Vec<Status> {
        let slots = self.slots.load();
        slots
            .names
            .iter()
            .filter_map(|n| slots.map.get(n))
            .filter(|s| keep(&s.credential))
            .map(|s| {
                let c = &s.credential;
                let snap = Arc::clone(&s.current.borrow());
                let (permission, scopes, owner, instance) = match &c.kind {
                    Kind::Glean(g) => (
                        Some(g.permission),
                        g.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                        g.owner.clone(),
                        g.instance.clone(),
                    ),
                    Kind::OAuth(o) => (None, o.client.scopes.clone(), None, None),
                };
                let state = snap.state_at(now);
                let last_error = match (state, &snap.last_error, &c.kind) {
                    (State::Expired, None, Kind::Glean(_)) => {
                        Some("expired; rotate the token".into())
                    }
                    (_, e, _) => e.clone(),
                };
                Status {
                    name: Arc::clone(&c.name),
                    kind: c.kind.name(),
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
                }
            })
            .collect()
    }
}

/// The snapshot a Glean token starts with: its configured secret, or the one
/// imported into the store, or none yet.
fn glean_snapshot(
    name: &str,
    g: &GleanToken,
    store: Option<&Arc<Store>>,
    generation: u64,
) -> Result<Snapshot, BrokerError> {
    let now = clock::now();
    let token = match &g.secret {
        GleanSecret::Configured { secret, .. } => Some(Token::new(
            secret.expose_secret(),
            g.expires_at,
            now,
            generation,
            None,
        )),
        GleanSecret::Stored => {
            let store = store.ok_or_else(|| BrokerError::InvalidInput("no store".into()))?;
            store.get(name)?.and_then(|r| {
                let expires_at = r
                    .secret_expires_at
                    .and_then(|t| Timestamp::from_second(t).ok())
                    .or(g.expires_at);
                r.secret
                    .as_ref()
                    .map(|s| Token::new(s, expires_at, now, generation, None))
            })
        }
    };
    Ok(match token {
        Some(t) => Snapshot {
            token: Some(Arc::new(t)),
            ..Snapshot::new(State::Fresh)
        },
        None => Snapshot {
            last_error: Some(format!("no secret yet; run `tokenctl import {name}`").into()),
            ..Snapshot::new(State::NeedsLogin)
        },
    })
}

/// Glean's `X-Glean-ActAs` rules for `act_as`.
fn glean_act_as<'a>(
    c: &Credential,
    g: &GleanToken,
    peer: &Peer,
    act_as: &'a str,
) -> Result<Option<&'a str>, BrokerError> {
    let name = || Arc::clone(&c.name);
    match (g.permission, act_as.is_empty()) {
        (Permission::Global, true) => Err(BrokerError::ActAsRequired { name: name() }),
        (Permission::Global, false) => {
            if !glean::is_valid_email(act_as) {
                return Err(BrokerError::ActAsInvalid {
                    name: name(),
                    act_as: act_as.to_owned(),
                });
            }
            if !c.act_as_patterns(peer).any(|p| p.matches(act_as)) {
                return Err(BrokerError::ActAsDenied {
                    name: name(),
                    uid: peer.uid,
                    act_as: act_as.to_owned(),
                });
            }
            Ok(Some(act_as))
        }
        (permission, false) => Err(BrokerError::ActAsRefused {
            name: name(),
            what: format!("a {permission} Glean token"),
        }),
        (_, true) => Ok(None),
    }
}

fn glean_scopes(c: &Credential, required: &[String]) -> Result<ScopeSet, BrokerError> {
    let mut set = ScopeSet::default();
    for s in required {
        let scope = s.parse::<Scope>().map_err(|()| BrokerError::UnknownScope {
            name: Arc::clone(&c.name),
            scope: s.clone(),
        })?;
        set.insert(scope);
    }
    Ok(set)
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;

    const CONFIG: &str = r#"
[[credential]]
name = "user"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
expires_at = "2030-01-01T00:00:00Z"
owner = "ops@corp.example"
secret = { env = "PATH" }
allow = { uids = [1000] }

[[credential]]
name = "global"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH", "CHAT"]
secret = { env = "PATH" }
allow = [{ uids = [1000], act_as = ["*@corp.example"] }, { groups = [50], act_as = ["*@*"] }]
"#;

    fn broker() -> Broker {
        let config = config::parse(Path::new("/etc/tokend.toml"), CONFIG).unwrap();
        let services = Services {
            store: None,
            http: crate::oauth::http_client(Duration::from_secs(1)),
            refresh: refresh::Settings {
                max_backoff: Duration::from_secs(1),
                crash_after_token_response: false,
            },
            metrics: Arc::default(),
        };
        Broker::start(config, services).unwrap()
    }

    /// `try_get_headers`, which must not ask to wait for a Glean token.
    fn get<'a>(
        b: &'a Broker,
        p: &Peer,
        r: HeadersRequest<'a>,
        now: Timestamp,
    ) -> Result<Grant<'a>, BrokerError> {
        b.try_get_headers(p, r, now)
            .map(|g| g.expect("Glean tokens never wait for a refresh"))
    }

    fn peer(uid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid: uid,
            pid: Some(42),
            groups: groups.into(),
            exe: None,
        }
    }

    fn req<'a>(name: &'a str, act_as: &'a str, scopes: &[&str]) -> HeadersRequest<'a> {
        // Leaked: a test's few strings, so requests can be Copy like real ones.
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        HeadersRequest {
            credential: name,
            act_as,
            required_scopes: Vec::leak(scopes),
            min_valid: None,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn user_token_yields_only_authorization() {
        let b = broker();
        let now = at("2029-01-01T00:00:00Z");
        let g = get(&b, &peer(1000, &[]), req("user", "", &["search"]), now).unwrap();
        let names: Vec<&str> = g.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["Authorization"]);
        assert!(g.token.authorization().starts_with("Bearer "));
        assert_eq!(g.token.expires_at, Some(at("2030-01-01T00:00:00Z")));
    }

    #[test]
    fn act_as_rules_follow_the_callers_patterns() {
        let b = broker();
        let now = at("2029-01-01T00:00:00Z");
        let g = get(
            &b,
            &peer(1000, &[]),
            req("global", "a@corp.example", &[]),
            now,
        )
        .unwrap();
        let h: Vec<(&str, &str)> = g.headers().collect();
        assert_eq!(h[1], ("X-Glean-ActAs", "a@corp.example"));
        let e = get(
            &b,
            &peer(1000, &[]),
            req("global", "a@other.example", &[]),
            now,
        )
        .unwrap_err();
        assert!(matches!(e, BrokerError::ActAsDenied { .. }), "{e}");
        // Group 50's rule allows anyone.
        assert!(
            get(
                &b,
                &peer(7, &[50]),
                req("global", "a@other.example", &[]),
                now
            )
            .is_ok()
        );
        let e = get(&b, &peer(1000, &[]), req("global", "", &[]), now).unwrap_err();
        assert!(e.to_string().contains("X-Glean-ActAs"), "{e}");
        let e = get(&b, &peer(1000, &[]), req("global", "nobody", &[]), now).unwrap_err();
        assert!(matches!(e, BrokerError::ActAsInvalid { .. }));
        let e = get(
            &b,
            &peer(1000, &[]),
            req("user", "a@corp.example", &[]),
            now,
        )
        .unwrap_err();
        assert!(matches!(e, BrokerError::ActAsRefused { .. }));
    }

    #[test]
    fn default_deny_and_unknown_names() {
        let b = broker();
        let now = at("2029-01-01T00:00:00Z");
        let e = get(&b, &peer(1001, &[]), req("user", "", &[]), now).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("uid 1001 (gid 1001, pid 42) may not use credential `user`")
        );
        let e = get(&b, &peer(1000, &[]), req("nope", "", &[]), now).unwrap_err();
        assert!(matches!(e, BrokerError::NotFound { .. }));
        assert_eq!(b.list(&peer(1001, &[]), now).len(), 0);
        assert_eq!(b.list(&peer(7, &[50]), now).len(), 1);
        assert_eq!(b.list(&peer(0, &[]), now).len(), 2);
    }

    #[test]
    fn scopes_and_expiry() {
        let b = broker();
        let p = peer(1000, &[]);
        let now = at("2029-01-01T00:00:00Z");
        let e = get(&b, &p, req("user", "", &["SEARCH", "CHAT", "PEOPLE"]), now).unwrap_err();
        assert!(e.to_string().contains("lacks scope(s) CHAT, PEOPLE"), "{e}");
        let e = get(&b, &p, req("user", "", &["SERCH"]), now).unwrap_err();
        assert!(matches!(e, BrokerError::UnknownScope { .. }));
        let e = get(&b, &p, req("user", "", &[]), at("2030-01-01T03:00:00Z")).unwrap_err();
        assert!(
            e.to_string()
                .contains("expired at 2030-01-01T00:00:00Z (3h 0m ago)"),
            "{e}"
        );
        assert!(e.to_string().contains("owner: ops@corp.example"), "{e}");
        let e = get(&b, &p, req("user", "", &[]), at("2029-12-31T23:59:30Z")).unwrap_err();
        assert!(
            e.to_string()
                .contains("in 30s, sooner than the 1m 0s required"),
            "{e}"
        );
        // The credential's 60 s is a floor a caller cannot lower, only raise.
        let mut r = req("user", "", &[]);
        r.min_valid = Some(Duration::from_secs(10));
        assert!(get(&b, &p, r, at("2029-12-31T23:59:30Z")).is_err());
        let two_minutes_left = at("2029-12-31T23:58:00Z");
        assert!(get(&b, &p, r, two_minutes_left).is_ok());
        r.min_valid = Some(Duration::from_secs(300));
        let e = get(&b, &p, r, two_minutes_left).unwrap_err();
        assert!(
            e.to_string().contains("sooner than the 5m 0s required"),
            "{e}"
        );
        let list = b.list(&p, at("2031-01-01T00:00:00Z"));
        let names: Vec<&str> = list.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["global", "user"]);
        assert_eq!(
            (list[0].state, list[1].state),
            (State::Fresh, State::Expired)
        );
    }
}
