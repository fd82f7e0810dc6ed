//! One shared credential's place in the fleet: its election, its view of
//! the credential's keys (kept current by one watch), and the transactions
//! of the protocol in the module docs of `fleet`.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue, LeaderKey, Txn, TxnOp,
    WatchOptions,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use zeroize::Zeroizing;

use super::{FleetError, call};
use crate::store::Record;

/// What this node is for one credential.
#[derive(Clone, Debug)]
pub enum Role {
    /// Not (yet) connected: refresh nothing, serve what is held.
    Unreachable,
    /// Another node leads, or the election is under way.
    Follower,
    /// This node leads: it alone may write a marker and refresh.
    Leader(LeaderKey),
}

impl Role {
    /// The name shown in status.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Follower => "follower",
            Self::Leader(_) => "leader",
        }
    }
}

/// A value read from etcd with the revision it was last written at (the
/// guard of the next compare-and-swap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored<T> {
    /// The key's `mod_revision`.
    pub revision: i64,
    /// The value.
    pub value: T,
}

/// The in-flight marker: who is refreshing, since when. No secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The node presenting the refresh token.
    pub node: String,
    /// When it wrote the marker, Unix milliseconds (its wall clock).
    pub started_at_ms: i64,
}

impl Marker {
    /// When the marker was written.
    pub fn started_at(&self) -> Timestamp {
        Timestamp::from_millisecond(self.started_at_ms).unwrap_or_default()
    }
}

/// One credential's keys and this node's role, as last seen.
#[derive(Clone, Debug)]
pub struct View {
    /// This node's role.
    pub role: Role,
    /// The leading node's name, when one is known.
    pub leader: Option<Arc<str>>,
    /// The shared record; `None` when nobody has logged in through the
    /// fleet yet.
    pub record: Option<Stored<Record>>,
    /// Why the record cannot be read (another fleet key, damage).
    pub record_error: Option<Arc<str>>,
    /// The refresh in flight, if any.
    pub marker: Option<Stored<Marker>>,
    /// The record revision whose access token a follower's caller reported
    /// rejected (`Invalidate`): the leader replaces it if it still holds it.
    pub wanted: Option<i64>,
    /// Since when etcd has been unreachable.
    pub unreachable_since: Option<Timestamp>,
}

/// The right to present a refresh token, obtained by writing the marker.
#[derive(Clone, Debug)]
pub struct Fence {
    /// The marker's revision: the guard of the commit.
    marker_revision: i64,
    /// After this, the token is not presented (and a request in flight is
    /// dropped): a node taking over waits a whole TTL from the start.
    pub deadline: Instant,
}

/// One shared credential's seat: follow its keys, campaign, and run the
/// protocol's transactions. Dropping it resigns (the task stops).
#[derive(Debug)]
pub struct Seat {
    keys: Keys,
    fleet: Arc<super::Fleet>,
    view: watch::Receiver<Arc<View>>,
    _stop: DropGuard,
}

#[derive(Clone, Debug)]
struct Keys {
    election: String,
    record: String,
    marker: String,
    wanted: String,
}

impl Keys {
    fn new(prefix: &str, name: &str) -> Self {
        let base = format!("{prefix}{name}/");
        Self {
            election: format!("{base}leader"),
            // Record and marker share a prefix that the election's keys do
            // not: a node watches two keys, not every candidate's.
            record: format!("{base}record"),
            marker: format!("{base}record.inflight"),
            wanted: format!("{base}record.wanted"),
        }
    }
}

impl super::Fleet {
    /// Takes a seat for the credential `name`: watches its keys and
    /// campaigns for it until the seat is dropped.
    pub fn seat(self: &Arc<Self>, name: &str) -> Seat {
        let keys = Keys::new(&self.settings.prefix, name);
        let (tx, rx) = watch::channel(Arc::new(View {
            role: Role::Unreachable,
            leader: None,
            record: None,
            record_error: None,
            marker: None,
            wanted: None,
            unreachable_since: None,
        }));
        let stop = self.cancel.child_token();
        let task = Campaign {
            fleet: Arc::clone(self),
            name: name.to_owned(),
            keys: keys.clone(),
            tx,
            stop: stop.clone(),
        };
        self.tasks.spawn(task.run());
        Seat {
            keys,
            fleet: Arc::clone(self),
            view: rx,
            _stop: stop.drop_guard(),
        }
    }
}

impl Seat {
    /// The view as last seen; `changed()` on it wakes on every update.
    pub fn view(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        self.fleet.node()
    }

    /// The lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        self.fleet.lease_ttl()
    }

    /// Whether this node's lease is confirmed to outlive `margin` from now.
    pub fn lease_alive_for(&self, margin: Duration) -> bool {
        self.fleet
            .session
            .borrow()
            .lease
            .is_some_and(|l| l.alive_until > Instant::now() + margin)
    }

    fn client(&self) -> Result<Client, FleetError> {
        self.fleet
            .session
            .borrow()
            .client
            .clone()
            .ok_or_else(|| FleetError::Unreachable("not connected yet".into()))
    }

    /// Writes this node's marker, if it still leads (checked by etcd), the
    /// record is still at `record_revision` (the one whose refresh token
    /// this node holds; 0 for none), and the marker is the one `view` saw
    /// (absent, or one this node may replace).
    pub async fn mark(
        &self,
        view: &View,
        record_revision: i64,
        now: Timestamp,
    ) -> Result<Fence, FleetError> {
        let Role::Leader(leader) = &view.role else {
            return Err(FleetError::Lost("this node does not lead".into()));
        };
        let marker = Marker {
            node: self.node().to_owned(),
            started_at_ms: now.as_millisecond(),
        };
        let started = Instant::now();
        let value = serde_json::to_vec(&marker).unwrap_or_default();
        let txn = Txn::new()
            .when([
                Compare::create_revision(leader.key(), CompareOp::Equal, leader.rev()),
                Compare::mod_revision(self.keys.record.as_str(), CompareOp::Equal, record_revision),
                Compare::mod_revision(
                    self.keys.marker.as_str(),
                    CompareOp::Equal,
                    view.marker.as_ref().map_or(0, |m| m.revision),
                ),
            ])
            .and_then([TxnOp::put(self.keys.marker.as_str(), value, None)]);
        let answer = call(self.client()?.txn(txn)).await?;
        if !answer.succeeded() {
            return Err(FleetError::Lost(
                "leadership or the shared record changed before the refresh; not refreshing".into(),
            ));
        }
        let revision = answer.header().map_or(0, |h| h.revision());
        Ok(Fence {
            marker_revision: revision,
            deadline: started + self.lease_ttl() / 2,
        })
    }

    /// Commits `record` and removes the marker, if the marker is still
    /// `fence`'s: no other node has taken over. Returns the record's new
    /// revision.
    pub async fn commit(&self, fence: &Fence, record: &Record) -> Result<i64, FleetError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.keys.marker.as_str(),
                CompareOp::Equal,
                fence.marker_revision,
            )])
            .and_then([
                TxnOp::put(self.keys.record.as_str(), self.seal(record), None),
                TxnOp::delete(self.keys.marker.as_str(), None),
                TxnOp::delete(self.keys.wanted.as_str(), None),
            ]);
        let answer = call(self.client()?.txn(txn)).await?;
        if !answer.succeeded() {
            return Err(FleetError::Lost(
                "another node took over this refresh (its marker was replaced)".into(),
            ));
        }
        Ok(answer.header().map_or(0, |h| h.revision()))
    }

    /// Asks the leader to replace the access token of the record at
    /// `revision`, which a caller on this node reported rejected.
    pub async fn want_refresh(&self, revision: i64) -> Result<(), FleetError> {
        let mut client = self.client()?;
        let put = client.put(self.keys.wanted.as_str(), revision.to_string(), None);
        call(put).await.map(drop)
    }

    /// Removes the marker (the server answered; nothing changed), if it is
    /// still `fence`'s.
    pub async fn clear(&self, fence: &Fence) -> Result<(), FleetError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.keys.marker.as_str(),
                CompareOp::Equal,
                fence.marker_revision,
            )])
            .and_then([TxnOp::delete(self.keys.marker.as_str(), None)]);
        call(self.client()?.txn(txn)).await.map(drop)
    }

    /// Replaces the record whatever it was, and any marker: a login or a
    /// logout, which supersede the grant being refreshed.
    pub async fn replace(&self, record: &Record) -> Result<i64, FleetError> {
        let txn = Txn::new().and_then([
            TxnOp::put(self.keys.record.as_str(), self.seal(record), None),
            TxnOp::delete(self.keys.marker.as_str(), None),
        ]);
        let answer = call(self.client()?.txn(txn)).await?;
        Ok(answer.header().map_or(0, |h| h.revision()))
    }

    fn seal(&self, record: &Record) -> Vec<u8> {
        let plain = Zeroizing::new(serde_json::to_vec(record).unwrap_or_default());
        self.fleet.sealer.seal(&self.keys.record, &plain)
    }
}

/// The seat's background task.
struct Campaign {
    fleet: Arc<super::Fleet>,
    name: String,
    keys: Keys,
    tx: watch::Sender<Arc<View>>,
    stop: CancellationToken,
}

/// The credential's keys as the watch last left them, and the leader as
/// the election's observer last reported it.
#[derive(Default)]
struct Keyspace {
    record: Option<KeyValue>,
    marker: Option<KeyValue>,
    wanted: Option<KeyValue>,
    leader: Option<Arc<str>>,
}

impl Campaign {
    async fn run(self) {
        let mut session = self.fleet.session();
        let mut failures = 0u32;
        while !self.stop.is_cancelled() {
            let current = session.borrow_and_update().clone();
            let (Some(client), Some(lease)) = (current.client, current.lease) else {
                self.publish_unreachable(current.unreachable_since);
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    r = session.changed() => if r.is_err() { return },
                }
                continue;
            };
            match self.follow(client, lease.id, &mut session).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    tracing::warn!(credential = %self.name, error = %e, "fleet: following the credential's keys failed; retrying");
                    let since = self.fleet.clock.now();
                    self.publish_unreachable(Some(since));
                    let delay =
                        crate::clock::backoff(failures, super::MAX_RETRY, None, fastrand::f64());
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn publish_unreachable(&self, since: Option<Timestamp>) {
        self.tx.send_modify(|v| {
            let mut next = View::clone(v);
            next.role = Role::Unreachable;
            next.unreachable_since = since.or(next.unreachable_since);
            *v = Arc::new(next);
        });
    }

    /// Reads the keys, watches them and campaigns, while the lease `lease`
    /// holds. `Ok` when the lease changed (start over), `Err` on etcd
    /// trouble.
    async fn follow(
        &self,
        mut client: Client,
        lease: i64,
        session: &mut watch::Receiver<super::Session>,
    ) -> Result<(), FleetError> {
        let watched = self.keys.record.as_str();
        let got = call(client.get(watched, Some(GetOptions::new().with_prefix()))).await?;
        let mut keys = Keyspace::default();
        for kv in got.kvs() {
            keys.apply(&self.keys, kv.clone(), true);
        }
        let revision = got.header().map_or(0, |h| h.revision());
        let mut role = Role::Follower;
        self.publish(&keys, &role);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut watch = call(client.watch(watched, Some(options))).await?;
        // One leader report per change, not one event per candidate. etcd
        // answers the call only once there is a leader, so it is opened
        // alongside the campaign rather than awaited first.
        let mut observer = client.election_client();
        let observed_name = self.keys.election.clone();
        let opening = async move { observer.observe(observed_name).await };
        tokio::pin!(opening);
        let mut observe: Option<etcd_client::ObserveStream> = None;
        let mut election = client.election_client();
        let node = self.fleet.node().to_owned();
        let name = self.keys.election.clone();
        let campaign = async move { election.campaign(name, node, lease).await };
        tokio::pin!(campaign);
        let mut campaigning = true;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => {
                    if let Role::Leader(key) = &role {
                        // Hand over now rather than a TTL later.
                        let _ = call(client.delete(key.key(), None)).await;
                    }
                    return Ok(());
                }
                changed = session.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if session.borrow().lease.map(|l| l.id) != Some(lease) {
                        return Ok(());
                    }
                }
                won = &mut campaign, if campaigning => {
                    campaigning = false;
                    let won = won.map_err(|e| super::unreachable(&e))?;
                    let key = won.leader().cloned().ok_or_else(|| {
                        FleetError::Unreachable("etcd elected without a leader key".into())
                    })?;
                    tracing::info!(credential = %self.name, "fleet: this node leads");
                    keys.leader = Some(Arc::from(self.fleet.node()));
                    role = Role::Leader(key);
                    self.publish(&keys, &role);
                }
                opened = &mut opening, if observe.is_none() => {
                    observe = Some(opened.map_err(|e| super::unreachable(&e))?);
                }
                leader = next_leader(&mut observe) => {
                    let leader = leader
                        .map_err(|e| super::unreachable(&e))?
                        .ok_or_else(|| FleetError::Unreachable("the election observer ended".into()))?;
                    let Some(kv) = leader.kv() else { continue };
                    if let Role::Leader(key) = &role
                        && kv.key() != key.key()
                    {
                        // Another key leads (ours expired or was deleted):
                        // leadership ended with it.
                        tracing::warn!(credential = %self.name, "fleet: leadership lost");
                        return Ok(());
                    }
                    keys.leader = kv.value_str().ok().map(Arc::from);
                    self.publish(&keys, &role);
                }
                event = watch.message() => {
                    let answer = event
                        .map_err(|e| super::unreachable(&e))?
                        .ok_or_else(|| FleetError::Unreachable("the watch ended".into()))?;
                    if answer.canceled() {
                        return Err(FleetError::Unreachable(format!(
                            "the watch was cancelled ({})", answer.cancel_reason()
                        )));
                    }
                    for e in answer.events() {
                        if let Some(kv) = e.kv() {
                            keys.apply(&self.keys, kv.clone(), e.event_type() == EventType::Put);
                        }
                    }
                    self.publish(&keys, &role);
                }
            }
        }
    }

    fn publish(&self, keys: &Keyspace, role: &Role) {
        let leader = keys.leader.clone();
        let (record, record_error) = match &keys.record {
            None => (None, None),
            Some(kv) => match self.open(kv) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            },
        };
        let marker = keys.marker.as_ref().and_then(|kv| {
            serde_json::from_slice(kv.value()).ok().map(|value| Stored {
                revision: kv.mod_revision(),
                value,
            })
        });
        let wanted = keys
            .wanted
            .as_ref()
            .and_then(|kv| kv.value_str().ok()?.parse().ok());
        self.tx.send_replace(Arc::new(View {
            role: role.clone(),
            leader,
            record,
            record_error,
            marker,
            wanted,
            unreachable_since: None,
        }));
    }

    fn open(&self, kv: &KeyValue) -> Result<Stored<Record>, Arc<str>> {
        let plain = self
            .fleet
            .sealer
            .open(&self.keys.record, kv.value())
            .ok_or_else(|| {
                Arc::from(format!(
                    "the shared record of `{}` does not open with this node's fleet key; every \
                 node needs the same key_file (or store key)",
                    self.name
                ))
            })?;
        let value = serde_json::from_slice(&plain).map_err(|e| {
            Arc::from(format!(
                "the shared record of `{}` is unreadable: {e}",
                self.name
            ))
        })?;
        Ok(Stored {
            revision: kv.mod_revision(),
            value,
        })
    }
}

impl Keyspace {
    fn apply(&mut self, keys: &Keys, kv: KeyValue, put: bool) {
        let key = kv.key().to_vec();
        if key == keys.record.as_bytes() {
            self.record = put.then_some(kv);
        } else if key == keys.marker.as_bytes() {
            self.marker = put.then_some(kv);
        } else if key == keys.wanted.as_bytes() {
            self.wanted = put.then_some(kv);
        }
    }
}

/// The observer's next report; pending until the observer is open.
async fn next_leader(
    observe: &mut Option<etcd_client::ObserveStream>,
) -> Result<Option<etcd_client::LeaderResponse>, etcd_client::Error> {
    match observe {
        Some(o) => o.message().await,
        None => std::future::pending().await,
    }
}
