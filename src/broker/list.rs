//! What callers may see of the credentials: status listings and visibility.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::Broker;
use crate::credential::Credential;
use crate::peer::Peer;
use crate::status::Status;

impl Broker {
    /// Status of each credential `peer` may use (of all, for admins), by name.
    pub fn list(&self, peer: &Peer, now: Timestamp) -> Vec<Status> {
        let admin = self.is_admin(peer);
        self.statuses(now, |c| admin || c.admits(peer))
    }

    /// Status of every credential, for alerts, metrics and systemd.
    pub fn list_all(&self, now: Timestamp) -> Vec<Status> {
        self.statuses(now, |_| true)
    }

    /// How many credentials are in each state at `now`, by the state's
    /// name: the status line systemd shows, every second. Counted in place,
    /// because a full listing of 10 000 credentials allocated megabytes each
    /// time, which glibc then kept.
    pub fn count_states(&self, now: Timestamp) -> BTreeMap<&'static str, usize> {
        let slots = self.slots.load();
        let mut counts = BTreeMap::new();
        for slot in slots.map.values() {
            *counts
                .entry(slot.current.borrow().state_at(now).as_str())
                .or_default() += 1;
        }
        counts
    }

    /// The names of the credentials `peer` may fetch (admin or not), sorted.
    pub fn fetchable(&self, peer: &Peer) -> Vec<String> {
        let slots = self.slots.load();
        slots
            .names
            .iter()
            .filter(|n| slots.map.get(*n).is_some_and(|s| s.credential.admits(peer)))
            .map(ToString::to_string)
            .collect()
    }

    /// Whether credential `name` is a Glean-issued token, whose `scopes`
    /// are Glean's scope names (an OAuth credential's are the
    /// authorization server's).
    pub fn is_glean_token(&self, name: &str) -> bool {
        self.slots
            .load()
            .map
            .get(name)
            .is_some_and(|s| matches!(s.credential.kind, crate::credential::Kind::Glean(_)))
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
            .map(|s| Status::of(&s.credential, &s.current.borrow(), now))
            .collect()
    }
}
