//! Per-uid quotas on what a local caller can hold open: connections on the
//! socket, `WatchHeaders` streams, calls in flight. One uid at its maximum
//! cannot starve the others, and its refusals are logged at the 1st, 2nd,
//! 4th, 8th… so a flood cannot flood the log either.
//!
//! Each uid's count is an atomic that a connection can hold ([`Quota::of`])
//! so that counting a call costs no lock or lookup: calls are counted on
//! every request, at tens of thousands a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A quota of `max` open things of one kind per uid.
#[derive(Debug, Clone)]
pub(crate) struct Quota {
    what: &'static str,
    max: usize,
    /// The counts of uids with something open or a holder of their count;
    /// entries whose count is gone are pruned when a new uid arrives.
    uids: Arc<Mutex<HashMap<u32, Weak<Count>>>>,
}

/// One uid's count under a [`Quota`].
#[derive(Debug)]
pub(crate) struct Count {
    what: &'static str,
    max: usize,
    uid: u32,
    open: AtomicUsize,
    /// Refusals since the uid last had nothing open, for the log's pacing.
    refused: AtomicU64,
}

/// One thing's place in its uid's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    count: Arc<Count>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.count.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.count.refused.store(0, Ordering::Relaxed);
        }
    }
}

impl Quota {
    /// At most `max` open `what`s (e.g. "connections") per uid.
    pub(crate) fn new(what: &'static str, max: usize) -> Self {
        Self {
            what,
            max,
            uids: Arc::default(),
        }
    }

    /// `uid`'s count, shared with every other holder of it.
    pub(crate) fn of(&self, uid: u32) -> Arc<Count> {
        let mut uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = uids.get(&uid).and_then(Weak::upgrade) {
            return count;
        }
        uids.retain(|_, count| count.strong_count() > 0);
        let count = Arc::new(Count {
            what: self.what,
            max: self.max,
            uid,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        });
        uids.insert(uid, Arc::downgrade(&count));
        count
    }

    /// Takes a place for `uid`, or `None` when it holds its maximum.
    pub(crate) fn admit(&self, uid: u32) -> Option<Place> {
        self.of(uid).admit()
    }
}

impl Count {
    /// Takes a place, or `None` when the uid holds its maximum.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Place> {
        let max = self.max;
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
        {
            return Some(Place {
                count: Arc::clone(self),
            });
        }
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if refused.is_power_of_two() {
            tracing::warn!(
                uid = self.uid,
                refused,
                "uid holds {} {}, the most one uid may; refusing more",
                self.max,
                self.what
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_uid_and_given_back() {
        let q = Quota::new("streams", 2);
        let a = [q.admit(1).unwrap(), q.admit(1).unwrap()];
        assert!(q.admit(1).is_none());
        assert!(q.admit(2).is_some(), "another uid is not affected");
        drop(a);
        assert!(q.admit(1).is_some());
        let held = q.of(3);
        assert!(held.admit().is_some());
        assert!(
            q.uids.lock().unwrap().len() <= 2,
            "no entry kept for uids whose count nobody holds"
        );
    }

    #[test]
    fn a_held_count_is_the_uids_count() {
        let q = Quota::new("calls", 3);
        let held = q.of(7);
        let places: Vec<Place> = (0..3).map(|_| held.admit().unwrap()).collect();
        assert!(q.admit(7).is_none(), "places taken through the held count");
        assert!(held.admit().is_none());
        drop(places);
        assert!(q.admit(7).is_some());
        assert_eq!(held.open.load(Ordering::Relaxed), 0);
        assert_eq!(
            held.refused.load(Ordering::Relaxed),
            0,
            "reset once none open"
        );
    }
}
