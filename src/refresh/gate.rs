//! Per-issuer limits on token requests. Every driver is the single caller
//! of its own credential's endpoint, but thousands of credentials may share
//! one issuer: at startup every credential without a usable stored token
//! asks at once, and a rate-limited issuer's `Retry-After` concerns all of
//! them, not only the one that was told. So requests to one origin
//! (scheme, host and port of the token endpoint) pass a gate: at most
//! `issuer_concurrency` in flight, and none while the issuer has asked
//! everyone to wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::clock::MAX_RETRY_AFTER;

/// The gates of every issuer, created on first use; shared by all drivers.
#[derive(Debug)]
pub struct Gates {
    limit: usize,
    by_origin: Mutex<HashMap<String, Arc<Gate>>>,
}

/// One issuer's gate.
#[derive(Debug)]
pub(super) struct Gate {
    permits: Semaphore,
    /// Until when the issuer asked every client to wait (`Retry-After`).
    paused_until: Mutex<Option<Instant>>,
}

impl Gates {
    /// Gates letting `limit` requests (at least one) in flight per issuer.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            by_origin: Mutex::default(),
        }
    }

    /// The gate of the issuer serving `endpoint`.
    pub(super) fn of(&self, endpoint: &str) -> Arc<Gate> {
        let origin = origin(endpoint);
        let mut gates = self.by_origin.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(gates.entry(origin).or_insert_with(|| {
            Arc::new(Gate {
                permits: Semaphore::new(self.limit),
                paused_until: Mutex::new(None),
            })
        }))
    }
}

impl Gate {
    /// How long the issuer still wants everyone to wait, if it does.
    pub(super) fn paused_for(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().unwrap_or_else(|e| e.into_inner()))?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Waits for a turn; the request is in flight while the permit lives.
    pub(super) async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        // The semaphore is never closed; `None` would only mean "go ahead".
        self.permits.acquire().await.ok()
    }

    /// Makes every credential of this issuer wait `wait` (capped at
    /// [`MAX_RETRY_AFTER`], as `Retry-After` is everywhere in tokend); a
    /// longer pause already in force stays.
    pub(super) fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_RETRY_AFTER);
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }
}

/// `scheme://host:port` of a URL, or the whole string if it is not one.
fn origin(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => endpoint.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gate_per_origin() {
        let gates = Gates::new(2);
        let a = gates.of("https://as.example/token");
        let b = gates.of("https://as.example:443/other");
        let c = gates.of("https://other.example/token");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
