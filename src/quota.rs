//! Per-uid quotas on what a local caller can hold open: connections on the
//! socket, `WatchHeaders` streams. One uid at its maximum cannot starve the
//! others, and its refusals are logged at the 1st, 2nd, 4th, 8th… so a
//! flood cannot flood the log either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A quota of `max` open things of one kind per uid.
#[derive(Debug, Clone)]
pub(crate) struct Quota {
    what: &'static str,
    max: usize,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    open: HashMap<u32, usize>,
    refused: HashMap<u32, u64>,
}

/// One thing's place in its uid's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                counts.open.remove(&self.uid);
                counts.refused.remove(&self.uid);
            }
        }
    }
}

impl Quota {
    /// At most `max` open `what`s (e.g. "connections") per uid.
    pub(crate) fn new(what: &'static str, max: usize) -> Self {
        Self {
            what,
            max,
            counts: Arc::default(),
        }
    }

    /// Takes a place for `uid`, or `None` when it holds its maximum.
    pub(crate) fn admit(&self, uid: u32) -> Option<Place> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let open = c.open.entry(uid).or_default();
        if *open >= self.max {
            let refused = c.refused.entry(uid).or_default();
            *refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    uid,
                    refused = *refused,
                    "uid holds {} {}, the most one uid may; refusing more",
                    self.max,
                    self.what
                );
            }
            return None;
        }
        *open += 1;
        Some(Place {
            counts: Arc::clone(&self.counts),
            uid,
        })
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
        assert!(
            q.counts.lock().unwrap().open.len() <= 1,
            "no entry left for uids with none open"
        );
    }
}
