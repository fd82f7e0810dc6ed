//! The broker: every configured credential by name, and the decision whether
//! a caller gets headers for one.
//!
//! It is built from validated credentials and the admin list, not from the
//! config file, so it knows nothing of where they came from. Its parts:
//! `serve` (the header decision, the hot path), `admin` (operator commands,
//! each checked once and forwarded to the credential's refresh driver),
//! `list` (status for listings, alerts and metrics) and `error`.

mod admin;
mod error;
mod list;
mod serve;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::credential::{Admins, Credential, GleanSecret, GleanToken, Kind};
use crate::metrics::Metrics;
use crate::oauth::TokenEndpoint;
use crate::refresh::{self, Driver, Handle};
use crate::store::Store;
use crate::token::{Snapshot, State, Token};

pub use error::BrokerError;
pub use serve::{Grant, HeadersRequest};

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
    /// Replacements of reported tokens left, and when last counted (see
    /// `Broker::invalidate`).
    replacements: std::sync::Mutex<(f64, tokio::time::Instant)>,
}

/// A slot built for a credential, its driver (for OAuth), and, for a changed
/// credential, the snapshot to publish once the reload applies.
type NewSlot = (Arc<Slot>, Option<Driver>, Option<Arc<Snapshot>>);

/// The credentials in force: replaced whole by a reload.
#[derive(Debug, Default)]
struct Slots {
    map: HashMap<Arc<str>, Arc<Slot>>,
    /// Sorted, for stable listings.
    names: Vec<Arc<str>>,
}

/// What the broker needs beyond its credentials.
#[derive(Clone, Debug)]
pub struct Services {
    /// Required when OAuth or stored credentials are configured.
    pub store: Option<Arc<Store>>,
    /// Token endpoints, for the refresh drivers.
    pub endpoint: Arc<dyn TokenEndpoint>,
    /// The drivers' backoff settings.
    pub refresh: refresh::Settings,
    /// Refresh outcomes.
    pub metrics: Arc<Metrics>,
    /// Wall-clock time, for validity checks and the drivers.
    pub clock: SharedClock,
    /// The fleet, when `[fleet]` is configured.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// What a reload changed, by credential name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// New credentials.
    pub added: Vec<String>,
    /// Credentials whose definition or secret changed.
    pub changed: Vec<String>,
    /// Credentials no longer configured.
    pub removed: Vec<String>,
    /// How many were left as they were.
    pub unchanged: usize,
}

/// Every configured credential, by name.
#[derive(Debug)]
pub struct Broker {
    /// Read lock-free on every call; swapped whole by `reload`.
    slots: ArcSwap<Slots>,
    admins: Admins,
    services: Services,
    drivers: TaskTracker,
    stop: CancellationToken,
}

impl Broker {
    /// Builds the broker and starts the refresh drivers of its OAuth
    /// credentials (which needs a tokio runtime when there are any). Reads
    /// imported Glean secrets from the store (blocking; at startup).
    pub fn start(
        credentials: Vec<Credential>,
        admins: Admins,
        services: Services,
    ) -> Result<Self, BrokerError> {
        let broker = Self {
            slots: ArcSwap::default(),
            admins,
            services,
            drivers: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        broker.reload(credentials)?;
        Ok(broker)
    }

    /// Applies a new set of credentials: unchanged ones keep their slot
    /// (token, timers, watchers); changed ones restart their lifecycle on
    /// the same channel, so watchers see the new token; removed ones stop,
    /// which ends their watchers.
    pub fn reload(&self, credentials: Vec<Credential>) -> Result<Reloaded, BrokerError> {
        let old = self.slots.load_full();
        let mut slots = Slots::default();
        let mut report = Reloaded::default();
        // Build everything first: a failure leaves the running set untouched.
        let mut fresh = Vec::new();
        for credential in credentials {
            let fingerprint = credential.fingerprint();
            let name = Arc::clone(&credential.name);
            match old.map.get(&name) {
                Some(slot) if slot.fingerprint == fingerprint => {
                    report.unchanged += 1;
                    slots.map.insert(Arc::clone(&name), Arc::clone(slot));
                }
                previous => {
                    let current = previous.map(|p| p.current.clone());
                    let (slot, driver, pending) =
                        self.new_slot(Arc::new(credential), fingerprint, current)?;
                    match previous {
                        Some(_) => report.changed.push(name.to_string()),
                        None => report.added.push(name.to_string()),
                    }
                    fresh.push((Arc::clone(&slot), driver, pending, previous.cloned()));
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
        // Everything built: only now does anything change.
        for (slot, driver, pending, previous) in fresh {
            if let Some(snapshot) = pending {
                slot.current.send_replace(snapshot);
            }
            self.start_driver(&slot, driver, previous);
        }
        self.slots.store(Arc::new(slots));
        Ok(report)
    }

    /// Starts `slot`'s driver once the one it replaces has finished any
    /// refresh in flight.
    fn start_driver(&self, slot: &Slot, driver: Option<Driver>, previous: Option<Arc<Slot>>) {
        let before = previous.and_then(|p| {
            p.cancel.cancel();
            p.task.lock().ok()?.take()
        });
        let Some(driver) = driver else { return };
        let cancel = slot.cancel.clone();
        let task = self.drivers.spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            driver.run(cancel).await;
        });
        *slot.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// A slot for `credential`; a changed credential passes its old
    /// channel as `current`, so its watchers see the new token.
    fn new_slot(
        &self,
        credential: Arc<Credential>,
        fingerprint: [u8; 32],
        current: Option<watch::Sender<Arc<Snapshot>>>,
    ) -> Result<NewSlot, BrokerError> {
        let snapshot = match &credential.kind {
            Kind::Glean(g) => {
                // Generations keep rising across a change, for watchers and
                // `Invalidate`.
                let generation = current.as_ref().map_or(0, generation) + 1;
                self.glean_snapshot(&credential.name, g, generation)?
            }
            Kind::OAuth(_) => Snapshot::new(State::Refreshing),
        };
        // A changed credential keeps its channel (watchers follow), but its
        // new snapshot is published only when the whole reload applies.
        let (current, pending) = match current {
            Some(tx) => (tx, Some(Arc::new(snapshot))),
            None => (watch::channel(Arc::new(snapshot)).0, None),
        };
        let (driver, handle) = match &credential.kind {
            Kind::OAuth(o) if o.shared && self.services.fleet.is_none() => {
                // Refreshing it alone would race the fleet's leader.
                return Err(BrokerError::Internal(format!(
                    "credential `{}` is shared, but this daemon started without [fleet]; \
                     restart tokend to join the fleet",
                    credential.name
                )));
            }
            Kind::OAuth(_) => {
                let (driver, handle) =
                    Driver::new(Arc::clone(&credential), current.clone(), self.deps()?);
                (Some(driver), Some(handle))
            }
            Kind::Glean(_) => (None, None),
        };
        let slot = Arc::new(Slot {
            credential,
            fingerprint,
            current,
            driver: handle,
            task: std::sync::Mutex::new(None),
            cancel: self.stop.child_token(),
            replacements: std::sync::Mutex::new((
                serve::REPLACEMENT_BURST,
                tokio::time::Instant::now(),
            )),
        });
        Ok((slot, driver, pending))
    }

    /// What a refresh driver shares with the others.
    fn deps(&self) -> Result<refresh::Deps, BrokerError> {
        let s = &self.services;
        Ok(refresh::Deps {
            store: Arc::clone(self.store()?),
            endpoint: Arc::clone(&s.endpoint),
            settings: s.refresh.clone(),
            metrics: Arc::clone(&s.metrics),
            clock: Arc::clone(&s.clock),
            fleet: s.fleet.clone(),
        })
    }

    fn store(&self) -> Result<&Arc<Store>, BrokerError> {
        self.services.store.as_ref().ok_or_else(|| {
            BrokerError::Internal(
                "OAuth and stored credentials need the store, and none is open".into(),
            )
        })
    }

    /// The snapshot a Glean token starts with: its configured secret, or
    /// the one imported into the store, or none yet.
    fn glean_snapshot(
        &self,
        name: &str,
        g: &GleanToken,
        generation: u64,
    ) -> Result<Snapshot, BrokerError> {
        let now = self.services.clock.now();
        let token = match &g.secret {
            GleanSecret::Configured { secret, .. } => Some(Token::new(
                secret.expose_secret(),
                g.expires_at,
                now,
                generation,
                None,
            )),
            GleanSecret::Stored => self.store()?.get(name)?.and_then(|r| {
                let expires_at = r
                    .secret_expires_at
                    .and_then(|t| jiff::Timestamp::from_second(t).ok())
                    .or(g.expires_at);
                r.secret
                    .as_ref()
                    .map(|s| Token::new(s, expires_at, now, generation, None))
            }),
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

    /// Stops every refresh driver and waits for them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.drivers.close();
        self.drivers.wait().await;
    }

    /// How many credentials are configured.
    pub fn len(&self) -> usize {
        self.slots.load().map.len()
    }

    /// Whether no credential is configured.
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
}

/// The generation of the token on a channel (0 when none).
fn generation(tx: &watch::Sender<Arc<Snapshot>>) -> u64 {
    tx.borrow().token.as_ref().map_or(0, |t| t.generation)
}

#[cfg(test)]
mod tests;
