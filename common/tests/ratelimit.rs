//! The rate limiter against a real Redis: counts shared by replicas, windows that end, the
//! per-request quotas counted between flushes, and the per-process fallback when Redis is gone.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use common::metrics::Metrics;
use common::ratelimit::{Quota, RateLimitSettings, RateLimiter};
use common::redis::RedisSettings;
use std::time::Duration;

fn limiter(redis_url: &str, prefix: &str) -> (RateLimiter, Metrics) {
    flushing_every(Duration::from_millis(100), redis_url, prefix)
}

fn flushing_every(period: Duration, redis_url: &str, prefix: &str) -> (RateLimiter, Metrics) {
    let redis = RedisSettings {
        url: redis_url.to_owned(),
        pool_size: 2,
        timeout: Duration::from_millis(200),
        key_prefix: prefix.to_owned(),
    };
    let settings = RateLimitSettings {
        account: Quota::per_seconds(300, 300),
        anonymous: Quota::per_seconds(300, 300),
        trusted_proxy_hops: 0,
        flush_every: period,
    };
    let metrics = Metrics::new().unwrap();
    let limiter = RateLimiter::new(
        redis.pool().unwrap(),
        redis.timeout,
        prefix,
        settings,
        &metrics,
    )
    .unwrap();
    (limiter, metrics)
}

fn unique_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// A connection to the tests' Redis, to look behind the limiter.
async fn redis() -> common::redis::Connection {
    let pool = RedisSettings {
        url: "redis://127.0.0.1:6379".to_owned(),
        pool_size: 1,
        timeout: Duration::from_millis(200),
        key_prefix: String::new(),
    }
    .pool()
    .unwrap();
    pool.get().await.unwrap()
}

async fn set_in_redis(key: &str, value: &str) {
    deadpool_redis::redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut *redis().await)
        .await
        .unwrap();
}

/// The count Redis holds for `subject` under the per-account quota.
async fn count_in_redis(prefix: &str, subject: &str) -> Option<u64> {
    deadpool_redis::redis::cmd("GET")
        .arg(format!("{prefix}rl:account:{subject}"))
        .query_async(&mut *redis().await)
        .await
        .unwrap()
}

/// Waits up to five seconds for Redis to hold `expected` for `subject`.
async fn redis_reaches(prefix: &str, subject: &str, expected: u64) {
    for _ in 0..100 {
        if count_in_redis(prefix, subject).await == Some(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "Redis holds {:?}, not {expected}",
        count_in_redis(prefix, subject).await
    );
}

#[tokio::test]
async fn replicas_sharing_redis_share_one_count() {
    let prefix = unique_prefix();
    let (a, _) = limiter("redis://127.0.0.1:6379", &prefix);
    let (b, metrics) = limiter("redis://127.0.0.1:6379", &prefix);
    let quota = Quota::per_seconds(3, 60);
    assert!(a.check("t", quota, "alice").await.allowed);
    assert!(b.check("t", quota, "alice").await.allowed);
    let third = a.check("t", quota, "alice").await;
    assert!(third.allowed);
    assert_eq!(third.remaining, 0);
    let fourth = b.check("t", quota, "alice").await;
    assert!(
        !fourth.allowed,
        "the second replica saw the first one's requests"
    );
    assert!((1..=60).contains(&fourth.reset_secs), "{fourth:?}");
    // Another subject has its own count.
    assert!(b.check("t", quota, "bob").await.allowed);
    assert!(!metrics.encode().contains("rate_limit_fallback_total{"));
}

#[tokio::test]
async fn a_refusal_is_a_429_problem_with_the_rate_limit_headers() {
    let (limiter, metrics) = limiter("redis://127.0.0.1:6379", &unique_prefix());
    let quota = Quota::per_seconds(1, 60);
    limiter.enforce("signup-ip", quota, "ip").await.unwrap();
    let problem = limiter.enforce("signup-ip", quota, "ip").await.unwrap_err();
    assert_eq!(problem.status, 429);
    assert_eq!(problem.type_uri, "urn:social:problem:rate_limited");
    let retry = problem.retry_after.unwrap();
    assert!((1..=60).contains(&retry));
    let header = |name: &str| {
        problem
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(header("ratelimit-policy"), "\"signup-ip\";q=1;w=60");
    assert_eq!(header("ratelimit"), format!("\"signup-ip\";r=0;t={retry}"));
    assert!(
        metrics
            .encode()
            .contains("rate_limited_total{quota=\"signup-ip\"} 1")
    );
}

#[tokio::test]
async fn a_window_ends_and_the_count_starts_again() {
    let (limiter, _) = limiter("redis://127.0.0.1:6379", &unique_prefix());
    let quota = Quota::per_seconds(1, 1);
    assert!(limiter.check("t", quota, "s").await.allowed);
    assert!(!limiter.check("t", quota, "s").await.allowed);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(limiter.check("t", quota, "s").await.allowed);
}

#[tokio::test]
async fn without_redis_the_quota_is_kept_in_process_and_the_fallback_is_counted() {
    // Nothing listens on port 1: every Redis call fails at once.
    let (limiter, metrics) = limiter("redis://127.0.0.1:1", &unique_prefix());
    let quota = Quota::per_seconds(2, 60);
    assert!(limiter.check("login-ip", quota, "ip").await.allowed);
    assert!(limiter.check("login-ip", quota, "ip").await.allowed);
    let refused = limiter.check("login-ip", quota, "ip").await;
    assert!(!refused.allowed, "neither fails open");
    assert!(
        limiter.check("login-ip", quota, "other").await.allowed,
        "nor closed"
    );
    assert!(
        metrics
            .encode()
            .contains("rate_limit_fallback_total{quota=\"login-ip\"} 4"),
        "{}",
        metrics.encode()
    );
}

#[tokio::test]
async fn a_count_reads_the_keys_asked_for_in_the_same_round_trip() {
    let prefix = unique_prefix();
    let (up, _) = limiter("redis://127.0.0.1:6379", &prefix);
    let set = format!("{prefix}set");
    let missing = format!("{prefix}missing");
    set_in_redis(&set, "value").await;

    let quota = Quota::per_seconds(2, 60);
    let keys = [set.clone(), missing.clone()];
    let (first, values) = up.check_and_read("t", quota, "s", &keys).await;
    assert_eq!(values, Some(vec![Some(b"value".to_vec()), None]));
    assert_eq!(first.remaining, 1, "the read counted the request");
    let (_, values) = up.check_and_read("t", quota, "s", &[]).await;
    assert_eq!(values, None, "nothing asked, nothing read");
    let refused = up.enforce_and_read("t", quota, "s", &keys).await;
    assert_eq!(refused.unwrap_err().status, 429, "the third is refused");

    // Without Redis the count goes on in process and nothing is read.
    let (down, _) = limiter("redis://127.0.0.1:1", &prefix);
    let (decision, values) = down.check_and_read("t", quota, "s", &keys).await;
    assert!(decision.allowed);
    assert_eq!(values, None);
}

#[tokio::test]
async fn a_subjects_later_requests_are_counted_in_process_and_reach_redis_with_the_flush() {
    let prefix = unique_prefix();
    let (limiter, metrics) =
        flushing_every(Duration::from_secs(1), "redis://127.0.0.1:6379", &prefix);
    let quota = Quota::per_seconds(1000, 60);
    limiter.admit("account", quota, "alice", &[]).await.unwrap();
    assert_eq!(
        count_in_redis(&prefix, "alice").await,
        Some(1),
        "a subject's first request is counted in Redis"
    );
    for _ in 0..5 {
        limiter.admit("account", quota, "alice", &[]).await.unwrap();
    }
    assert_eq!(
        count_in_redis(&prefix, "alice").await,
        Some(1),
        "the next ones wait for the flush"
    );
    redis_reaches(&prefix, "alice", 6).await;
    assert!(!metrics.encode().contains("rate_limit_fallback_total{"));
}

#[tokio::test]
async fn counts_made_after_the_flusher_went_idle_still_reach_redis() {
    let prefix = unique_prefix();
    let (limiter, _) = flushing_every(Duration::from_millis(50), "redis://127.0.0.1:6379", &prefix);
    let quota = Quota::per_seconds(1000, 60);
    for _ in 0..3 {
        limiter.admit("account", quota, "alice", &[]).await.unwrap();
    }
    redis_reaches(&prefix, "alice", 3).await;
    // Several periods with nothing counted: the flusher waits for work rather than ticking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        limiter.admit("account", quota, "alice", &[]).await.unwrap();
    }
    assert_eq!(
        count_in_redis(&prefix, "alice").await,
        Some(3),
        "counted here first"
    );
    redis_reaches(&prefix, "alice", 5).await;
}

#[tokio::test]
async fn replicas_counting_between_flushes_still_stop_at_the_shared_limit() {
    let prefix = unique_prefix();
    let (a, _) = limiter("redis://127.0.0.1:6379", &prefix);
    let (b, _) = limiter("redis://127.0.0.1:6379", &prefix);
    let quota = Quota::per_seconds(40, 60);
    for i in 0..40 {
        let replica = if i % 2 == 0 { &a } else { &b };
        replica
            .admit("account", quota, "alice", &[])
            .await
            .unwrap_or_else(|p| panic!("request {i} refused: {p:?}"));
    }
    for replica in [&a, &b] {
        let refused = replica.admit("account", quota, "alice", &[]).await;
        assert_eq!(refused.unwrap_err().status, 429, "the 41st request");
    }
    // Every request, the refused ones too, reaches the shared count.
    redis_reaches(&prefix, "alice", 42).await;
}

#[tokio::test]
async fn keys_are_read_with_a_count_that_goes_to_redis_and_not_without_one() {
    let prefix = unique_prefix();
    let (limiter, _) = limiter("redis://127.0.0.1:6379", &prefix);
    let key = format!("{prefix}version");
    set_in_redis(&key, "7").await;
    let quota = Quota::per_seconds(1000, 60);
    let keys = [key];
    // A subject's first request in a window is counted in Redis, and reads the keys in the
    // same round trip.
    let values = limiter.admit("account", quota, "s", &keys).await.unwrap();
    assert_eq!(values, Some(vec![Some(b"7".to_vec())]));
    // The next ones, far from the limit, are counted in the process: no round trip at all,
    // so nothing is read for the handler, which reads for itself.
    for _ in 0..3 {
        let values = limiter.admit("account", quota, "s", &keys).await.unwrap();
        assert_eq!(values, None);
    }
}

#[tokio::test]
async fn without_redis_the_per_request_quota_is_kept_in_process() {
    let (limiter, metrics) = limiter("redis://127.0.0.1:1", &unique_prefix());
    let quota = Quota::per_seconds(3, 60);
    for _ in 0..3 {
        limiter.admit("account", quota, "alice", &[]).await.unwrap();
    }
    let refused = limiter.admit("account", quota, "alice", &[]).await;
    assert_eq!(refused.unwrap_err().status, 429, "neither fails open");
    limiter
        .admit("account", quota, "bob", &[])
        .await
        .expect("nor closed");
    assert!(
        metrics
            .encode()
            .contains("rate_limit_fallback_total{quota=\"account\"} 5"),
        "{}",
        metrics.encode()
    );
}
