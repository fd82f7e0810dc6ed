//! The header decision, the daemon's hot path.
//!
//! Checks run in the order a person fixes them: does the credential exist,
//! may this caller use it, is the request well-formed for its kind, may the
//! caller act as whom it asks, does the token have the scopes, is it still
//! valid. The cached path borrows the published [`Snapshot`] (an `Arc`
//! clone) and allocates nothing; only a caller that finds no usable token
//! waits, on the credential's `watch` channel, for the refresh its wake-up
//! triggers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::{Broker, BrokerError, Slot};
use crate::clock;
use crate::credential::{Credential, GleanToken, Kind, OAuthCredential};
use crate::glean::{self, Permission, Scope, ScopeSet};
use crate::peer::Peer;
use crate::token::{Snapshot, State, Token};

/// Reported tokens a credential replaces at once, and how often one more
/// may be replaced after that: one caller reporting every new token could
/// otherwise keep it refreshing without pause (227 refreshes in 10 s).
pub const REPLACEMENT_BURST: f64 = 3.0;
/// See [`REPLACEMENT_BURST`].
pub const REPLACEMENT_INTERVAL: Duration = Duration::from_secs(2);

/// A caller's request for the headers of one credential.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadersRequest<'a> {
    /// The credential's name.
    pub credential: &'a str,
    /// Empty when not acting as anyone.
    pub act_as: &'a str,
    /// Scopes the caller's API call needs.
    pub required_scopes: &'a [String],
    /// A margin beyond the credential's own `min_valid`, which is a floor:
    /// a caller may ask for more time, never for less.
    pub min_valid: Option<Duration>,
}

/// Headers granted to a caller.
#[derive(Debug)]
pub struct Grant<'a> {
    /// The token served.
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

impl Broker {
    /// The slot for `name` if `peer` may use it.
    pub(super) fn allowed_slot(&self, peer: &Peer, name: &str) -> Result<Arc<Slot>, BrokerError> {
        let slot = match self.slot(name) {
            Ok(slot) => slot,
            // Only an admin learns that a name is not configured; anyone
            // else gets the answer a credential they may not use gives.
            Err(e) if self.is_admin(peer) => return Err(e),
            Err(_) => {
                return Err(BrokerError::CallerDenied {
                    name: name.into(),
                    uid: peer.uid,
                    gid: peer.gid,
                    pid: peer.pid.unwrap_or(0),
                });
            }
        };
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
        self.headers_within(peer, req, wait, false).await
    }

    /// Like [`Broker::get_headers`], but once a refresh has failed and no
    /// usable token is held, answers `Unavailable` at once instead of
    /// waiting through retries: for callers that cannot say how long they
    /// are willing to wait (the proxy's HTTP clients), a prompt 503 with the
    /// reason beats a hung request.
    pub async fn get_headers_unless_failing<'a>(
        &'a self,
        peer: &Peer,
        req: HeadersRequest<'a>,
        wait: Duration,
    ) -> Result<Grant<'a>, BrokerError> {
        self.headers_within(peer, req, wait, true).await
    }

    async fn headers_within<'a>(
        &'a self,
        peer: &Peer,
        req: HeadersRequest<'a>,
        wait: Duration,
        fail_fast: bool,
    ) -> Result<Grant<'a>, BrokerError> {
        let now = tokio::time::Instant::now();
        // Far enough to never fire if a caller's wait does not fit.
        let deadline = now
            .checked_add(wait)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let slot = self.allowed_slot(peer, req.credential)?;
        let clock = &self.services.clock;
        let mut rx = None;
        loop {
            if let Some(grant) = try_get(&slot, peer, req, clock.now())? {
                return Ok(grant);
            }
            let rx = rx.get_or_insert_with(|| slot.current.subscribe());
            rx.borrow_and_update();
            // Re-check after subscribing: a refresh may have landed between.
            if let Some(grant) = try_get(&slot, peer, req, clock.now())? {
                return Ok(grant);
            }
            let failing = fail_fast && slot.current.borrow().last_error.is_some();
            if !failing && let Some(d) = &slot.driver {
                d.wake.notify_one();
            }
            let changed = if failing {
                None
            } else {
                tokio::time::timeout_at(deadline, rx.changed()).await.ok()
            };
            if !matches!(changed, Some(Ok(()))) {
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
        try_get(&slot, peer, req, now)
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
    /// still the current one, at most [`REPLACEMENT_BURST`] at once and one
    /// per [`REPLACEMENT_INTERVAL`] after that. Returns whether a refresh
    /// was triggered.
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
        // Many callers reporting the same token: one replacement.
        if driver.invalidated.load(Ordering::Acquire) == token.generation {
            return Ok(true);
        }
        take_replacement(&slot)?;
        driver
            .invalidated
            .store(token.generation, Ordering::Release);
        driver.wake.notify_one();
        tracing::info!(credential = %slot.credential.name, fingerprint, "token reported rejected; refreshing");
        Ok(true)
    }
}

/// Takes one of `slot`'s replacements (a token bucket refilled one per
/// [`REPLACEMENT_INTERVAL`]), or says how long until there is one.
fn take_replacement(slot: &Slot) -> Result<(), BrokerError> {
    let mut bucket = slot.replacements.lock().unwrap_or_else(|e| e.into_inner());
    let now = tokio::time::Instant::now();
    let (left, counted) = &mut *bucket;
    let refill = now.duration_since(*counted).as_secs_f64() / REPLACEMENT_INTERVAL.as_secs_f64();
    *left = (*left + refill).min(REPLACEMENT_BURST);
    *counted = now;
    if *left < 1.0 {
        let wait = REPLACEMENT_INTERVAL.mul_f64(1.0 - *left);
        return Err(BrokerError::TooSoon {
            name: Arc::clone(&slot.credential.name),
            interval: clock::human(REPLACEMENT_INTERVAL),
            wait: clock::human(wait),
        });
    }
    *left -= 1.0;
    Ok(())
}

/// The headers for `req` from `slot` at `now`; `Ok(None)` when a refresh
/// must come first.
fn try_get<'a>(
    slot: &Slot,
    peer: &Peer,
    req: HeadersRequest<'a>,
    now: Timestamp,
) -> Result<Option<Grant<'a>>, BrokerError> {
    let c = &slot.credential;
    let min_valid = req.min_valid.map_or(c.min_valid, |m| m.max(c.min_valid));
    let snap = Arc::clone(&slot.current.borrow());
    let grant = |token: &Arc<Token>, act_as, stale| Grant {
        token: Arc::clone(token),
        act_as,
        credential: Arc::clone(c),
        stale,
    };
    match &c.kind {
        Kind::Glean(g) => {
            let act_as = glean_act_as(c, g, peer, req.act_as)?;
            let token = glean_token(c, g, &snap, req.required_scopes, min_valid, now)?;
            Ok(Some(grant(token, act_as, false)))
        }
        Kind::OAuth(o) => {
            // A token an API rejected (reported with `Invalidate`) is never
            // handed out again: callers wait for its replacement.
            let reported = slot
                .driver
                .as_ref()
                .map(|d| d.invalidated.load(Ordering::Acquire));
            if snap
                .token
                .as_ref()
                .is_some_and(|t| Some(t.generation) == reported)
            {
                return Ok(None);
            }
            oauth_token(c, o, &snap, req, min_valid, now)
                .map(|found| found.map(|(token, stale)| grant(token, None, stale)))
        }
    }
}

/// A Glean token's checks: scopes, then presence and expiry.
fn glean_token<'s>(
    c: &Credential,
    g: &GleanToken,
    snap: &'s Snapshot,
    required_scopes: &[String],
    min_valid: Duration,
    now: Timestamp,
) -> Result<&'s Arc<Token>, BrokerError> {
    let name = || Arc::clone(&c.name);
    let missing = glean_scopes(c, required_scopes)?.missing_from(g.scopes);
    if !missing.is_empty() {
        return Err(BrokerError::MissingScopes {
            name: name(),
            missing: missing.to_string(),
            fix: "a Glean token's scopes are fixed when it is created: create one with them in \
                  Glean's admin console and rotate it into tokend",
        });
    }
    let token = snap
        .token
        .as_ref()
        .ok_or_else(|| BrokerError::NotImported { name: name() })?;
    let Some(at) = token.expires_at else {
        return Ok(token);
    };
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
    Ok(token)
}

/// An OAuth token's checks: no act-as, granted scopes, then validity; a
/// token (and whether it is served stale), or `None` to wait for a refresh.
fn oauth_token<'s>(
    c: &Credential,
    o: &OAuthCredential,
    snap: &'s Snapshot,
    req: HeadersRequest<'_>,
    min_valid: Duration,
    now: Timestamp,
) -> Result<Option<(&'s Arc<Token>, bool)>, BrokerError> {
    let name = || Arc::clone(&c.name);
    if !req.act_as.is_empty() {
        return Err(BrokerError::ActAsRefused {
            name: name(),
            what: format!("an {} credential", c.kind.name()),
        });
    }
    let granted: Vec<&str> = match snap.token.as_ref().and_then(|t| t.scope.as_deref()) {
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
            fix: "add them to the credential's scopes (and have them granted), then log in again",
        });
    }
    if let Some(t) = &snap.token
        && t.valid_for(min_valid, now)
    {
        return Ok(Some((t, false)));
    }
    let reason = || snap.last_error.clone().unwrap_or_else(|| "".into());
    match snap.state {
        State::NeedsLogin => Err(BrokerError::NeedsLogin {
            name: name(),
            reason: reason(),
        }),
        State::Misconfigured => Err(BrokerError::Misconfigured {
            name: name(),
            reason: reason(),
        }),
        State::Stale if o.serve_stale => Ok(snap
            .token
            .as_ref()
            .filter(|t| t.valid_for(Duration::ZERO, now))
            .map(|t| (t, true))),
        _ => Ok(None),
    }
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
