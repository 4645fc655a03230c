//! The per-request quotas' counts, kept in this process between flushes to Redis.
//!
//! Every API request counts against `RATE_LIMIT_ACCOUNT` or `RATE_LIMIT_ANONYMOUS`. Waiting for
//! Redis on each of them cost a round trip per request. Instead, a subject's first request in a
//! window is counted in Redis as before, and the ones after it are counted here while what this
//! process has counted and Redis has not yet confirmed stays within a tenth of what Redis says
//! is left of the quota. A flush every `RATE_LIMIT_FLUSH_MS` adds them to Redis (one `INCRBY` per
//! subject, pipelined) and learns from the answer what the other replicas counted. Near the
//! limit that tenth is nothing, so every request is counted in Redis, as exactly as before;
//! once Redis has counted past the limit, refusals are decided here. See
//! docs/adr/0024-request-quotas-counted-between-flushes.md.

use super::{Decision, Quota};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// At most this many subjects are tallied; past it (until a flush sweeps ended windows) a new
/// subject is counted in Redis on every request, as the handlers' quotas are.
const MAX_SUBJECTS: usize = 100_000;

/// At most this many subjects' counts go to Redis in one round trip.
pub(super) const FLUSH_CHUNK: usize = 500;

/// One subject's count in the current window.
#[derive(Debug)]
struct Tally {
    /// Tells this window's tally from a later one under the same key: an answer for an
    /// earlier generation is ignored.
    generation: u64,
    quota: Quota,
    /// The highest count Redis has answered in this window (all replicas' requests).
    settled: u64,
    /// Requests sent to Redis and not answered yet.
    in_flight: u64,
    /// Requests counted here and not yet sent.
    pending: u64,
    /// When the window ends, as Redis said when the tally began.
    ends: Instant,
}

impl Tally {
    fn estimate(&self) -> u64 {
        self.settled + self.in_flight + self.pending
    }

    /// Whether one more request may be counted here: Redis has counted past the limit (so it is
    /// refused whatever the others counted), or what Redis has not confirmed stays within a
    /// tenth of what it says is left.
    fn may_count_here(&self) -> bool {
        let limit = u64::from(self.quota.limit);
        self.settled > limit
            || self.in_flight + self.pending < limit.saturating_sub(self.settled) / 10
    }

    fn is_current(&self, quota: Quota, now: Instant) -> bool {
        self.ends > now && self.quota == quota
    }
}

/// What [`Tallies::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Counted in this process: the decision comes from the estimate.
    Counted(Decision),
    /// To be counted in Redis now: this request and `taken` requests counted here before it
    /// (`INCRBY taken + 1`), then settled with [`Tallies::settle`].
    Ask {
        /// The tally the requests were taken from; `None` for a subject not tallied yet.
        generation: Option<u64>,
        /// Requests counted here and sent along.
        taken: u64,
    },
}

/// One subject's requests sent by a flush.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) key: String,
    generation: u64,
    pub(super) count: u64,
    pub(super) quota: Quota,
}

/// The tallies of one limiter.
#[derive(Debug, Default)]
pub(super) struct Tallies {
    subjects: Mutex<HashMap<String, Tally>>,
    generations: AtomicU64,
    /// The last flush failed: what is counted here meanwhile is kept here (and sent again).
    failing: AtomicBool,
    /// Told whenever there is something for a flush to do, and when the tallies are dropped:
    /// the flusher waits on it instead of waking every period while nothing is counted here.
    work: Arc<Notify>,
}

impl Drop for Tallies {
    fn drop(&mut self) {
        // The flusher, waiting for work, finds the tallies gone and ends.
        self.work.notify_one();
    }
}

impl Tallies {
    /// What the flusher waits on between flushes with nothing to send.
    pub(super) fn work(&self) -> Arc<Notify> {
        Arc::clone(&self.work)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tally>> {
        self.subjects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the last flush failed, so that counts are being kept in this process only.
    pub(super) fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Counts one request of the subject `key` here when its tally allows, or says to ask Redis.
    pub(super) fn admit(&self, key: &str, quota: Quota, now: Instant) -> Admission {
        let mut subjects = self.lock();
        let Some(tally) = subjects.get_mut(key).filter(|t| t.is_current(quota, now)) else {
            return Admission::Ask {
                generation: None,
                taken: 0,
            };
        };
        if tally.may_count_here() {
            tally.pending += 1;
            self.work.notify_one();
            return Admission::Counted(Decision::of(quota, tally.estimate(), tally.ends - now));
        }
        let taken = tally.pending;
        tally.pending = 0;
        tally.in_flight += taken + 1;
        Admission::Ask {
            generation: Some(tally.generation),
            taken,
        }
    }

    /// Settles an [`Admission::Ask`]: `answer` is Redis's count and window after `INCRBY taken +
    /// 1`, or its failure. The decision, or `None` when a failure found no tally to keep the
    /// count in (the caller counts it in its own fallback).
    pub(super) fn settle(
        &self,
        key: &str,
        quota: Quota,
        (generation, taken): (Option<u64>, u64),
        answer: Result<(u64, Duration), ()>,
        now: Instant,
    ) -> Option<Decision> {
        let mut subjects = self.lock();
        let asked = taken + 1;
        if let Some(generation) = generation {
            let tally = subjects.get_mut(key).filter(|t| t.generation == generation);
            return match (tally, answer) {
                (Some(tally), Ok((count, _))) => {
                    tally.in_flight -= asked;
                    tally.settled = tally.settled.max(count);
                    Some(Decision::of(quota, count, tally.ends - now))
                }
                (None, Ok((count, ttl))) => Some(Decision::of(quota, count, ttl)),
                (Some(tally), Err(())) => {
                    tally.in_flight -= asked;
                    tally.pending += asked;
                    self.work.notify_one();
                    Some(Decision::of(quota, tally.estimate(), tally.ends - now))
                }
                (None, Err(())) => None,
            };
        }
        if let Some(tally) = subjects.get_mut(key).filter(|t| t.is_current(quota, now)) {
            // Another request of the same subject began the tally meanwhile.
            return Some(match answer {
                Ok((count, ttl)) => {
                    tally.settled = tally.settled.max(count);
                    Decision::of(quota, count, ttl)
                }
                Err(()) => {
                    tally.pending += 1;
                    self.work.notify_one();
                    Decision::of(quota, tally.estimate(), tally.ends - now)
                }
            });
        }
        // Ended windows are swept by each flush (`take_pending`), not here: with the map full of
        // live subjects, a sweep per new subject would cost every such request a full scan.
        let (settled, pending, ttl) = match answer {
            Ok((count, ttl)) => (count, 0, ttl),
            Err(()) => (0, 1, quota.window),
        };
        if pending > 0 || subjects.len() >= MAX_SUBJECTS {
            // Counts to send, or a full map for the next flush to sweep of ended windows.
            self.work.notify_one();
        }
        if subjects.len() < MAX_SUBJECTS {
            let generation = self.generations.fetch_add(1, Ordering::Relaxed);
            subjects.insert(
                key.to_owned(),
                Tally {
                    generation,
                    quota,
                    settled,
                    in_flight: 0,
                    pending,
                    ends: now + ttl,
                },
            );
        } else if pending > 0 {
            return None;
        }
        Some(Decision::of(quota, settled + pending, ttl))
    }

    /// Forgets ended windows and takes every count waiting to be sent.
    pub(super) fn take_pending(&self, now: Instant) -> Vec<Sent> {
        let mut subjects = self.lock();
        subjects.retain(|_, t| t.ends > now);
        subjects
            .iter_mut()
            .filter(|(_, t)| t.pending > 0)
            .map(|(key, t)| {
                let count = std::mem::take(&mut t.pending);
                t.in_flight += count;
                Sent {
                    key: key.clone(),
                    generation: t.generation,
                    count,
                    quota: t.quota,
                }
            })
            .collect()
    }

    /// Settles what a flush sent: Redis's counts after it, in order, or its failure, after which
    /// the counts wait to be sent again.
    pub(super) fn settle_sent(&self, sent: &[Sent], answer: Result<&[u64], ()>) {
        let mut subjects = self.lock();
        for (i, s) in sent.iter().enumerate() {
            let Some(tally) = subjects
                .get_mut(&s.key)
                .filter(|t| t.generation == s.generation)
            else {
                continue;
            };
            tally.in_flight -= s.count;
            match answer {
                Ok(counts) => {
                    if let Some(count) = counts.get(i) {
                        tally.settled = tally.settled.max(*count);
                    }
                }
                Err(()) => {
                    tally.pending += s.count;
                    self.work.notify_one();
                }
            }
        }
        self.failing.store(answer.is_err(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: Quota = Quota::per_seconds(100, 60);

    fn redis_says(count: u64) -> Result<(u64, Duration), ()> {
        Ok((count, Duration::from_secs(60)))
    }

    fn ask(admission: Admission) -> (Option<u64>, u64) {
        match admission {
            Admission::Ask { generation, taken } => (generation, taken),
            Admission::Counted(d) => panic!("counted here: {d:?}"),
        }
    }

    fn counted(admission: Admission) -> Decision {
        match admission {
            Admission::Counted(d) => d,
            Admission::Ask { .. } => panic!("asked Redis"),
        }
    }

    /// A subject tallied at `count`, as after its first request.
    fn tallied_at(count: u64, now: Instant) -> Tallies {
        let tallies = Tallies::default();
        let first = ask(tallies.admit("k", QUOTA, now));
        assert_eq!(first, (None, 0), "a subject's first request asks Redis");
        tallies.settle("k", QUOTA, first, redis_says(count), now);
        tallies
    }

    #[test]
    fn requests_are_counted_here_within_a_tenth_of_what_redis_says_is_left() {
        let now = Instant::now();
        let tallies = tallied_at(3, now);
        // 97 left: nine may be counted here.
        for n in 4..=12 {
            let d = counted(tallies.admit("k", QUOTA, now));
            assert_eq!((d.allowed, d.remaining), (true, 100 - n));
        }
        // The tenth goes to Redis with the nine before it.
        let asked = ask(tallies.admit("k", QUOTA, now));
        assert!(matches!(asked, (Some(_), 9)), "{asked:?}");
        let d = tallies
            .settle("k", QUOTA, asked, redis_says(95), now)
            .unwrap();
        assert_eq!(
            d.remaining, 5,
            "the count is Redis's, other replicas' included"
        );
        // Five left: nothing more is counted here, until Redis has counted past the limit.
        let asked = ask(tallies.admit("k", QUOTA, now));
        assert_eq!(asked.1, 0);
        let d = tallies
            .settle("k", QUOTA, asked, redis_says(101), now)
            .unwrap();
        assert!(!d.allowed);
        assert!(!counted(tallies.admit("k", QUOTA, now)).allowed);
    }

    #[test]
    fn a_small_quota_is_counted_in_redis_every_time() {
        let quota = Quota::per_seconds(9, 60);
        let tallies = Tallies::default();
        let now = Instant::now();
        let first = ask(tallies.admit("k", quota, now));
        tallies.settle("k", quota, first, redis_says(1), now);
        assert!(matches!(
            tallies.admit("k", quota, now),
            Admission::Ask { .. }
        ));
    }

    #[test]
    fn a_flush_sends_what_was_counted_here_and_learns_the_shared_count() {
        let now = Instant::now();
        let tallies = tallied_at(1, now);
        counted(tallies.admit("k", QUOTA, now));
        counted(tallies.admit("k", QUOTA, now));
        let sent = tallies.take_pending(now);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].count, 2);
        // Counted while the flush is out: not sent twice.
        counted(tallies.admit("k", QUOTA, now));
        assert!(tallies.take_pending(now).iter().all(|s| s.count == 1));
        // Redis answered 7 for the flush (others counted 4): the estimate is 7 + 1 in flight.
        tallies.settle_sent(&sent, Ok(&[7]));
        let d = counted(tallies.admit("k", QUOTA, now));
        assert_eq!(d.remaining, 100 - 9);
    }

    #[test]
    fn a_failed_flush_keeps_its_counts_to_send_again() {
        let now = Instant::now();
        let tallies = tallied_at(1, now);
        counted(tallies.admit("k", QUOTA, now));
        let sent = tallies.take_pending(now);
        tallies.settle_sent(&sent, Err(()));
        assert!(tallies.failing());
        counted(tallies.admit("k", QUOTA, now));
        let again = tallies.take_pending(now);
        assert_eq!(again[0].count, 2, "the failed one and the one since");
        tallies.settle_sent(&again, Ok(&[3]));
        assert!(!tallies.failing());
    }

    #[test]
    fn an_ended_window_is_forgotten_and_its_late_answers_ignored() {
        let tallies = Tallies::default();
        let now = Instant::now();
        let first = ask(tallies.admit("k", QUOTA, now));
        tallies.settle("k", QUOTA, first, Ok((10, Duration::from_secs(1))), now);
        counted(tallies.admit("k", QUOTA, now));
        let sent = tallies.take_pending(now);
        let later = now + Duration::from_secs(2);
        // The next window begins with Redis again, and the old flush's answer changes nothing.
        let next = ask(tallies.admit("k", QUOTA, later));
        assert_eq!(next, (None, 0));
        tallies.settle("k", QUOTA, next, redis_says(1), later);
        tallies.settle_sent(&sent, Ok(&[200]));
        assert!(counted(tallies.admit("k", QUOTA, later)).allowed);
    }

    #[test]
    fn a_full_tally_counts_new_subjects_in_redis_until_a_flush_sweeps_ended_windows() {
        let tallies = Tallies::default();
        let now = Instant::now();
        let short = Ok((1, Duration::from_secs(1)));
        for n in 0..MAX_SUBJECTS {
            let key = format!("s{n}");
            let first = ask(tallies.admit(&key, QUOTA, now));
            tallies.settle(&key, QUOTA, first, short, now);
        }
        let first = ask(tallies.admit("new", QUOTA, now));
        let d = tallies
            .settle("new", QUOTA, first, redis_says(1), now)
            .unwrap();
        assert!(d.allowed);
        assert!(
            matches!(tallies.admit("new", QUOTA, now), Admission::Ask { .. }),
            "not tallied: the map is full"
        );
        tallies.take_pending(now + Duration::from_secs(2));
        let later = now + Duration::from_secs(2);
        let first = ask(tallies.admit("new", QUOTA, later));
        tallies.settle("new", QUOTA, first, redis_says(2), later);
        counted(tallies.admit("new", QUOTA, later));
    }

    #[test]
    fn without_redis_a_new_subject_is_counted_here_and_sent_later() {
        let tallies = Tallies::default();
        let now = Instant::now();
        let first = ask(tallies.admit("k", QUOTA, now));
        let d = tallies.settle("k", QUOTA, first, Err(()), now).unwrap();
        assert_eq!(d.remaining, 99);
        let sent = tallies.take_pending(now);
        assert_eq!(
            sent[0].count, 1,
            "the request Redis missed is sent with the flush"
        );
    }
}
