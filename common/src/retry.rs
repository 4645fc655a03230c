//! When to retry a delivery that failed: the one backoff rule of our relays (the users outbox,
//! the posts moderation reports), so that after an outage their retries spread out instead of
//! arriving together.

use rand::Rng;
use std::time::Duration;

/// The wait before attempt `attempts + 1`: `base` × 2^(attempts − 1), capped at `cap`, plus up
/// to 25 % jitter.
pub fn backoff(base: Duration, attempts: i32, cap: Duration) -> chrono::Duration {
    let exp = u32::try_from((attempts - 1).clamp(0, 20)).unwrap_or(20);
    let wait = base.saturating_mul(2u32.pow(exp)).min(cap);
    let jitter = rand::rng().random_range(0.0..0.25);
    chrono::Duration::from_std(wait.mul_f64(1.0 + jitter)).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_spreads() {
        let (second, cap) = (Duration::from_secs(1), Duration::from_secs(300));
        let secs = |a| backoff(second, a, cap).num_milliseconds() as f64 / 1000.0;
        assert!((1.0..1.25).contains(&secs(1)), "{}", secs(1));
        assert!((8.0..10.0).contains(&secs(4)), "{}", secs(4));
        assert!((300.0..375.0).contains(&secs(30)), "{}", secs(30));
        let draws: std::collections::BTreeSet<i64> = (0..20)
            .map(|_| backoff(second, 9, cap).num_milliseconds())
            .collect();
        assert!(draws.len() > 1, "no jitter: {draws:?}");
    }
}
