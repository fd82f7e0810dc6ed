//! The fleet: hosts sharing a credential through etcd, with exactly one of
//! them refreshing it.
//!
//! A refresh token that rotates may be presented once. Hosts that each
//! refresh a shared grant present one another's consumed tokens, and a
//! server with reuse detection then revokes the grant for everyone. So for a
//! `shared` credential one node is elected per credential (etcd's v3
//! election, bound to the node's lease) and only it calls the token endpoint;
//! the others serve what it publishes.
//!
//! Keys, under `<prefix><credential>/`:
//! - `leader/<lease>`: the election (etcd's own keys; value: node name).
//! - `record`: the credential's [`Record`], sealed with the fleet key under
//!   the credential's key name. It carries no lease, so it outlives every
//!   leader.
//! - `record.inflight`: the [`Marker`] of the refresh in flight, no lease,
//!   so that a node taking over after a crash knows an answer may have been
//!   lost.
//!
//! A node watches the two `record` keys and observes the election (one
//! report per change of leader), never the candidates' keys: its traffic
//! does not grow with the number of nodes.
//!
//! The protocol, whose failure analysis is in `docs/fleet.md`:
//! 1. The leader writes the marker in a transaction that holds only while
//!    its election key (and so its lease) stands and the record is the one
//!    it read: leadership is checked by etcd at that instant, not assumed.
//! 2. It presents the refresh token only while its lease is alive and
//!    within half a lease TTL of the marker's start ([`Fence`]); it drops
//!    the request at that deadline.
//! 3. It commits the answer in a transaction guarded by its marker's
//!    revision, which also deletes the marker. The marker, not the lease,
//!    fences the commit: nobody else presents the token while it stands.
//! 4. A new leader finding another node's marker waits until a whole lease
//!    TTL has passed since the marker's start (by then its owner can no
//!    longer send), then replaces it and refreshes, reporting a refused
//!    token as an answer lost in exactly that window.
//!
//! Parts: this file (the connection and the node's lease) and `seat` (one
//! credential's election, its view of the keys, and the transactions).

mod seat;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::clock::SharedClock;
use crate::store::{Sealer, StoreKey};

pub use seat::{Fence, Marker, Role, Seat, Stored, View};

/// How long one call to etcd may take before the node counts etcd as
/// unreachable (campaigns and watches wait as long as they need).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between attempts to reach etcd again.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// The associated-data context of shared records: a value sealed for the
/// fleet never opens as a local record, even under the same key.
const SEAL_CONTEXT: &str = "tokend/fleet/v1/";

/// The `[fleet]` table, validated by `config`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// etcd v3 client URLs.
    pub endpoints: Vec<String>,
    /// Every key tokend writes starts with it; ends with `/`.
    pub prefix: String,
    /// This host's name in elections and status; default the host name.
    pub node: String,
    /// How long this node stays leader after its last keep-alive reached
    /// etcd; whole seconds.
    pub lease_ttl: Duration,
    /// The key sealing shared records, the same on every node; `None` uses
    /// the store key (which the nodes then share).
    pub key_file: Option<PathBuf>,
    /// etcd user and password, when etcd has authentication on.
    pub auth: Option<(String, SecretString)>,
    /// TLS settings for `https://` endpoints.
    pub tls: Tls,
}

/// TLS to etcd, read from the configured files when the config is loaded
/// (so a missing file is a config error naming it, not a connection that
/// keeps failing). The system roots are not used: etcd clusters run their
/// own CA.
#[derive(Clone, Default)]
pub struct Tls {
    /// Whether any TLS file was configured.
    pub configured: bool,
    /// The CA that signed etcd's server certificates (PEM).
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its private key (PEM), for etcd's
    /// `--client-cert-auth`. The key is wiped from memory when dropped.
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Why a fleet operation did not happen.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// etcd did not answer (down, partitioned, timed out).
    #[error("etcd is unreachable: {0}")]
    Unreachable(String),
    /// The guard of a transaction failed: this node no longer leads, or
    /// another node wrote first. Nothing was written.
    #[error("{0}")]
    Lost(String),
}

/// This node's membership: the etcd connection and its lease, shared by
/// every shared credential's [`Seat`].
#[derive(Debug)]
pub struct Fleet {
    settings: Settings,
    sealer: Sealer,
    session: watch::Receiver<Session>,
    clock: SharedClock,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The node's connection and lease as last seen.
#[derive(Clone, Default)]
pub struct Session {
    /// Present once connected (lazily; etcd may still be down).
    client: Option<Client>,
    /// The node's lease while etcd confirms it.
    lease: Option<Lease>,
    /// Since when etcd has not confirmed the lease; `None` while it does.
    pub unreachable_since: Option<jiff::Timestamp>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("connected", &self.client.is_some())
            .field("lease", &self.lease)
            .field("unreachable_since", &self.unreachable_since)
            .finish()
    }
}

/// A lease etcd has confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// etcd's lease id.
    pub id: i64,
    /// Until when etcd keeps it at the least, by this host's monotonic
    /// clock: measured from when the last confirmed keep-alive was sent.
    pub alive_until: Instant,
}

impl Fleet {
    /// Joins the fleet: keeps a lease alive (and reconnects) in the
    /// background until `cancel`. Never waits for etcd: a node starts and
    /// serves its cached tokens while etcd is down.
    pub fn start(
        settings: Settings,
        key: &StoreKey,
        clock: SharedClock,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let (tx, rx) = watch::channel(Session {
            unreachable_since: None,
            ..Session::default()
        });
        let fleet = Arc::new(Self {
            sealer: Sealer::new(key, SEAL_CONTEXT),
            session: rx,
            clock,
            cancel,
            tasks: TaskTracker::new(),
            settings,
        });
        let keeper = Arc::clone(&fleet);
        fleet
            .tasks
            .spawn(async move { keeper.keep_session(tx).await });
        fleet
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// The lease TTL: how long a leader outlives its last keep-alive.
    pub fn lease_ttl(&self) -> Duration {
        self.settings.lease_ttl
    }

    /// The session as last seen.
    pub fn session(&self) -> watch::Receiver<Session> {
        self.session.clone()
    }

    /// Waits for the background tasks after `cancel`.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Connects, then grants and keeps alive the node's lease, forever:
    /// every failure is published (unreachable since…) and retried.
    async fn keep_session(&self, tx: watch::Sender<Session>) {
        let mut failures = 0u32;
        let mut client: Option<Client> = None;
        while !self.cancel.is_cancelled() {
            let result = match &client {
                Some(c) => self.hold_lease(c.clone(), &tx).await,
                None => match self.connect().await {
                    Ok(c) => {
                        tx.send_modify(|s| s.client = Some(c.clone()));
                        client = Some(c);
                        failures = 0;
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            if self.cancel.is_cancelled() {
                break;
            }
            let now = self.clock.now();
            let reason = match result {
                Ok(()) => "the lease ended".to_owned(),
                Err(e) => e.to_string(),
            };
            let first = tx.borrow().unreachable_since.is_none();
            tx.send_modify(|s| {
                s.lease = None;
                s.unreachable_since.get_or_insert(now);
            });
            if first {
                tracing::warn!(error = %reason, "fleet: etcd unreachable; serving cached tokens, refreshing none of the shared credentials");
            }
            let delay = crate::clock::backoff(failures, MAX_RETRY, None, fastrand::f64());
            failures = failures.saturating_add(1);
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// A client for the configured endpoints. Without a user this does not
    /// touch the network; with one it authenticates.
    async fn connect(&self) -> Result<Client, FleetError> {
        let s = &self.settings;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), CALL_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &s.auth {
            options = options
                .with_user(user.clone(), password.expose_secret())
                .with_auto_token_refresh(true);
        }
        if s.endpoints.iter().any(|e| e.starts_with("https://")) {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &s.tls.ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &s.tls.identity {
                tls = tls.identity(Identity::from_pem(cert, key.as_slice()));
            }
            options = options.with_tls(tls);
        }
        let connect = Client::connect(s.endpoints.clone(), Some(options));
        match tokio::time::timeout(CALL_TIMEOUT, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(unreachable(&e)),
            Err(_) => Err(FleetError::Unreachable("connecting timed out".into())),
        }
    }

    /// Grants a lease and keeps it alive (a keep-alive every third of the
    /// TTL) until etcd stops confirming it.
    async fn hold_lease(
        &self,
        mut client: Client,
        tx: &watch::Sender<Session>,
    ) -> Result<(), FleetError> {
        let ttl = self.settings.lease_ttl;
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let sent = Instant::now();
        let grant = call(client.lease_grant(ttl_secs, None)).await?;
        let id = grant.id();
        let (mut keeper, mut answers) = call(client.lease_keep_alive(id)).await?;
        let mut alive_until = sent + ttl;
        tx.send_modify(|s| {
            s.lease = Some(Lease { id, alive_until });
            s.unreachable_since = None;
        });
        tracing::info!(lease = id, node = %self.settings.node, "fleet: joined");
        let mut tick = tokio::time::interval(ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => {
                    // Leadership ends at once rather than a TTL later.
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(id)).await;
                    return Ok(());
                }
                _ = tick.tick() => {
                    last_sent = Instant::now();
                    if let Err(e) = keeper.keep_alive().await {
                        return Err(unreachable(&e));
                    }
                }
                answer = answers.message() => match answer {
                    Ok(Some(a)) if a.ttl() > 0 => {
                        let ttl = Duration::from_secs(u64::try_from(a.ttl()).unwrap_or(0));
                        alive_until = last_sent + ttl;
                        tx.send_modify(|s| s.lease = Some(Lease { id, alive_until }));
                    }
                    Ok(Some(_)) => return Err(FleetError::Lost("etcd expired the node's lease".into())),
                    Ok(None) => return Err(FleetError::Unreachable("the keep-alive stream ended".into())),
                    Err(e) => return Err(unreachable(&e)),
                },
                () = tokio::time::sleep_until(alive_until) => {
                    return Err(FleetError::Unreachable(format!(
                        "no keep-alive confirmed for {}", crate::clock::human(ttl)
                    )));
                }
            }
        }
    }
}

/// A unary etcd call, bounded by [`CALL_TIMEOUT`].
async fn call<T>(f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, FleetError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unreachable(&e)),
        Err(_) => Err(FleetError::Unreachable(format!(
            "no answer within {}",
            crate::clock::human(CALL_TIMEOUT)
        ))),
    }
}

/// An etcd client error as a message that names no secret (they carry
/// none: requests hold sealed values only).
fn unreachable(e: &etcd_client::Error) -> FleetError {
    FleetError::Unreachable(e.to_string())
}
