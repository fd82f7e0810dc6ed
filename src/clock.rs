//! Time as the daemon reads it and as people read it.

use std::time::Duration;

use jiff::Timestamp;

/// The current time. Decisions in the core take `now` as an argument instead
/// of calling this, so tests can put them at any instant.
pub fn now() -> Timestamp {
    Timestamp::now()
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

/// `later - earlier` as an unsigned duration, zero when `later` is earlier.
pub fn between(earlier: Timestamp, later: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or_default()
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
}
