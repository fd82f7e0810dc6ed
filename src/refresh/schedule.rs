//! When to renew and when to retry: pure functions of the token's lifetime,
//! the credential's schedule and a jitter draw, property-tested.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::clock;
use crate::credential::Schedule;

/// When to renew a token issued at `issued` that expires at `expires`:
/// `expires − max(refresh_before, lifetime × refresh_fraction)`, minus up to
/// a sixth of the lifetime of jitter (`jitter` in 0..1) so that tokens issued
/// together do not renew together, and never later than `expires − min_valid`.
/// A token that lives less than `min_valid` is renewed at half its life.
pub fn refresh_at(
    issued: Timestamp,
    expires: Timestamp,
    schedule: &Schedule,
    min_valid: Duration,
    jitter: f64,
) -> Timestamp {
    let lifetime = clock::between(issued, expires);
    let lead = schedule
        .refresh_before
        .max(lifetime.mul_f64(schedule.refresh_fraction.clamp(0.0, 1.0)));
    let jitter = lifetime.mul_f64(jitter.clamp(0.0, 1.0) / 6.0);
    let back = |d: Duration| {
        expires
            .checked_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
            .unwrap_or(issued)
    };
    let at = back(lead.saturating_add(jitter)).min(back(min_valid));
    if at > issued {
        at
    } else if lifetime > min_valid {
        issued
    } else {
        back(lifetime / 2)
    }
}

pub use crate::clock::backoff;
