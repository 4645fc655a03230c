//! Lifetimes of cached entries, spread so that entries written together do not expire together.
//!
//! A cache filled in one burst (a process's first requests, or the misses that follow one
//! expiry) expires in one burst too, and every miss of that burst asks the source at once. The
//! benchmark's mix showed it: every 60 s all of its readers' published followee versions
//! expired within half a second, and posts asked users for all of them together. Each entry's
//! lifetime is therefore drawn between three quarters of the configured lifetime and the whole
//! of it: the bound a lifetime promises (how stale an entry may be) still holds, and after one
//! expiry the entries' next ones fall across a quarter of a lifetime.
//!
//! Spreading suits entries that are each asked for alone, as a reader's version is. It does not
//! suit entries fetched in batches, as a page's authors are: spread, they expire one by one, and
//! each page that finds one expired asks for it in a call of its own (measured: five times the
//! calls to users for the same authors), so the author caches keep one lifetime per batch.

use rand::Rng;
use std::time::Duration;

/// A lifetime between 75 % and 100 % of `lifetime`, drawn anew for each call.
pub fn spread(lifetime: Duration) -> Duration {
    lifetime.mul_f64(rand::rng().random_range(0.75..=1.0))
}

/// [`spread`] in whole milliseconds, at least one: what Redis's `PX` takes.
pub fn spread_millis(lifetime: Duration) -> u64 {
    u64::try_from(spread(lifetime).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_stay_within_the_bound_and_differ() {
        let minute = Duration::from_secs(60);
        let draws: Vec<Duration> = (0..200).map(|_| spread(minute)).collect();
        assert!(
            draws
                .iter()
                .all(|d| (Duration::from_secs(45)..=minute).contains(d)),
            "{draws:?}"
        );
        let (min, max) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*max - *min > Duration::from_secs(10), "{min:?}..{max:?}");
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
        assert_eq!(spread_millis(Duration::ZERO), 1);
        assert!((750..=1000).contains(&spread_millis(Duration::from_secs(1))));
    }
}
