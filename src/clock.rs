//! Time as the daemon reads it and as people read it.
//!
//! Everything that decides by the wall clock (the refresh drivers, the
//! broker's validity checks, the alert engine) reads it through a [`Clock`]
//! handed in at construction, as rustls' `TimeProvider` is: production uses
//! [`System`], and tests put the daemon at any instant ([`Manual`]) or let
//! wall time follow tokio's paused clock ([`Tokio`]) so that a schedule of
//! hours runs in microseconds.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A shared clock, as the daemon's parts hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct System;

impl Clock for System {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(System)
}

/// A clock that moves only when told to: for tests of decisions over days.
#[derive(Debug)]
pub struct Manual(Mutex<Timestamp>);

impl Manual {
    /// A clock standing at `at`.
    pub fn new(at: Timestamp) -> Arc<Self> {
        Arc::new(Self(Mutex::new(at)))
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now = after(*now, d);
    }
}

impl Clock for Manual {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wall time that advances with tokio's clock from a fixed origin: under
/// `tokio::time::pause()` it moves only when the test advances time (or the
/// runtime auto-advances to the next timer), so timers and timestamps agree.
#[derive(Debug)]
pub struct Tokio {
    origin: Timestamp,
    start: tokio::time::Instant,
}

impl Tokio {
    /// A clock reading `origin` now and moving with tokio's time.
    pub fn new(origin: Timestamp) -> Arc<Self> {
        Arc::new(Self {
            origin,
            start: tokio::time::Instant::now(),
        })
    }
}

impl Clock for Tokio {
    fn now(&self) -> Timestamp {
        after(self.origin, self.start.elapsed())
    }
}

/// `at + d`, saturating at the end of time.
pub fn after(at: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// A short, rounded form for messages and tables: `3d 4h`, `5m 12s`, `42s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match () {
        () if days > 0 => format!("{days}d {hours}h"),
        () if hours > 0 => format!("{hours}h {mins}m"),
        () if mins > 0 => format!("{mins}m {secs}s"),
        () => format!("{secs}s"),
    }
}

/// How long until `at` from `now`, as people read it: "3d 4h", "expired
/// 5m ago", or "never" for a token without expiry.
pub fn expires_in(at: Option<Timestamp>, now: Timestamp) -> String {
    match at {
        None => "never".into(),
        Some(at) if at > now => human(between(now, at)),
        Some(at) => format!("expired {} ago", human(between(at, now))),
    }
}

/// `later - earlier` as an unsigned duration, zero when `later` is earlier.
pub fn between(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or_default()
}

/// The longest a server's `Retry-After` is honoured: a server asking for
/// more (days, by mistake or malice) is asked again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Delay before retry number `failures + 1`: exponential from 1 s, capped,
/// with full jitter (`unit` in 0..1), at least 100 ms, and never shorter
/// than the server's `Retry-After` (itself capped at [`MAX_RETRY_AFTER`]).
pub fn backoff(failures: u32, cap: Duration, retry_after: Option<Duration>, unit: f64) -> Duration {
    let exp = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.min(20))
        .min(cap);
    let jittered = exp
        .mul_f64(unit.clamp(0.0, 1.0))
        .max(Duration::from_millis(100));
    match retry_after {
        Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_forms() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(312)), "5m 12s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 60)), "3h 1m");
        assert_eq!(
            human(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5)),
            "3d 4h"
        );
    }

    #[test]
    fn between_clamps_at_zero() {
        let a = Timestamp::from_second(100).unwrap();
        let b = Timestamp::from_second(160).unwrap();
        assert_eq!(between(a, b), Duration::from_secs(60));
        assert_eq!(between(b, a), Duration::ZERO);
    }

    #[test]
    fn expiry_reads_forward_backward_and_never() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(expires_in(None, now), "never");
        let later = Timestamp::from_second(1_090).unwrap();
        assert_eq!(expires_in(Some(later), now), "1m 30s");
        assert_eq!(expires_in(Some(now), later), "expired 1m 30s ago");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let at = Timestamp::from_second(1_000).unwrap();
        let clock = Manual::new(at);
        assert_eq!(clock.now(), at);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now().as_second(), 1_090);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let at = Timestamp::from_second(1_000).unwrap();
        let clock = Tokio::new(at);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now().as_second(), 4_600);
    }
}
