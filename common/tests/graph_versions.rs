//! Published followee-set versions against a real Redis: they only ever rise, an equal write
//! renews the lifetime, and a Redis that is gone fails nothing.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use common::graph_versions::{self, Publisher};
use common::metrics::Metrics;
use common::redis::RedisSettings;
use common::redis::deadpool_redis::redis;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn publisher_on(redis_url: &str, prefix: &str, ttl: Duration) -> (Publisher, Arc<Metrics>) {
    let redis = RedisSettings {
        url: redis_url.to_owned(),
        pool_size: 2,
        timeout: Duration::from_millis(200),
        key_prefix: prefix.to_owned(),
    };
    let metrics = Arc::new(Metrics::new().unwrap());
    let publisher = Publisher::new(
        graph_versions::Kind::Followees,
        redis.pool().unwrap(),
        prefix.to_owned(),
        redis.timeout,
        ttl,
        metrics.clone(),
    );
    (publisher, metrics)
}

fn unique_prefix() -> String {
    format!("test:{}:", Uuid::new_v4().simple())
}

/// A pool of one connection that reads what was published, outside any publisher's prefix.
fn observer() -> common::redis::Pool {
    RedisSettings {
        url: "redis://127.0.0.1:6379".to_owned(),
        pool_size: 1,
        timeout: Duration::from_secs(1),
        key_prefix: String::new(),
    }
    .pool()
    .unwrap()
}

/// The answer of `command` (`GET`, `TTL`, `PTTL`…) for `user`'s published version.
async fn ask<T: redis::FromRedisValue>(command: &str, prefix: &str, user: Uuid) -> T {
    let mut conn = observer().get().await.unwrap();
    redis::cmd(command)
        .arg(graph_versions::key(prefix, user))
        .query_async(&mut *conn)
        .await
        .unwrap()
}

async fn stored(prefix: &str, user: Uuid) -> (Option<i64>, i64) {
    let value: Option<Vec<u8>> = ask("GET", prefix, user).await;
    let ttl: i64 = ask("TTL", prefix, user).await;
    (value.and_then(|v| graph_versions::parse(&v)), ttl)
}

#[tokio::test]
async fn a_published_version_only_rises_and_an_equal_one_renews_its_lifetime() {
    let prefix = unique_prefix();
    let (publisher, _) = publisher_on("redis://127.0.0.1:6379", &prefix, Duration::from_secs(60));
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());

    publisher.publish(&[(a, 5), (b, 1)]).await;
    assert_eq!(stored(&prefix, a).await.0, Some(5));
    assert_eq!(stored(&prefix, b).await.0, Some(1));

    // A read that raced a follow offers the version it read: it must not undo the follow's.
    publisher.publish(&[(a, 4)]).await;
    assert_eq!(stored(&prefix, a).await.0, Some(5));
    publisher.publish(&[(a, 6)]).await;
    assert_eq!(stored(&prefix, a).await.0, Some(6));

    // Every write sets the lifetime; an equal version renews it.
    let (longer, _) = publisher_on("redis://127.0.0.1:6379", &prefix, Duration::from_secs(600));
    longer.publish(&[(a, 6)]).await;
    let (version, ttl) = stored(&prefix, a).await;
    assert_eq!(version, Some(6));
    assert!(ttl > 60 && ttl <= 600, "lifetime {ttl}");
    assert!(stored(&prefix, b).await.1 <= 60);
}

#[tokio::test]
async fn versions_published_together_do_not_expire_together() {
    let prefix = unique_prefix();
    let (publisher, _) = publisher_on("redis://127.0.0.1:6379", &prefix, Duration::from_secs(60));
    let versions: Vec<(Uuid, i64)> = (0..50).map(|i| (Uuid::now_v7(), i)).collect();
    publisher.publish(&versions).await;
    let mut lifetimes = Vec::new();
    for (user, _) in &versions {
        lifetimes.push(ask::<i64>("PTTL", &prefix, *user).await);
    }
    // Within the bound the publisher promises, and spread across a quarter of it.
    assert!(
        lifetimes.iter().all(|ms| (44_000..=60_000).contains(ms)),
        "{lifetimes:?}"
    );
    let (min, max) = (
        lifetimes.iter().min().unwrap(),
        lifetimes.iter().max().unwrap(),
    );
    assert!(max - min > 5_000, "{lifetimes:?}");
}

#[tokio::test]
async fn more_accounts_than_one_pipeline_are_all_published() {
    let prefix = unique_prefix();
    let (publisher, _) = publisher_on("redis://127.0.0.1:6379", &prefix, Duration::from_secs(60));
    let versions: Vec<(Uuid, i64)> = (0..1_234).map(|i| (Uuid::now_v7(), i)).collect();
    publisher.publish(&versions).await;
    for (user, version) in [versions[0], versions[499], versions[500], versions[1_233]] {
        assert_eq!(stored(&prefix, user).await.0, Some(version));
    }
}

#[tokio::test]
async fn without_redis_publishing_is_counted_and_returns() {
    // Nothing listens on port 1.
    let (publisher, metrics) = publisher_on(
        "redis://127.0.0.1:1",
        &unique_prefix(),
        Duration::from_secs(60),
    );
    publisher.publish(&[(Uuid::now_v7(), 1)]).await;
    assert_eq!(
        metrics
            .redis_errors
            .with_label_values(&["graph_version"])
            .get(),
        1
    );
}

#[tokio::test]
async fn a_pooled_connection_that_died_since_it_last_answered_does_not_lose_a_publication() {
    let prefix = unique_prefix();
    let settings = RedisSettings {
        url: "redis://127.0.0.1:6379".to_owned(),
        pool_size: 1,
        timeout: Duration::from_millis(500),
        key_prefix: prefix.clone(),
    };
    let pool = settings.pool().unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let publisher = Publisher::new(
        graph_versions::Kind::Followees,
        pool.clone(),
        prefix.clone(),
        settings.timeout,
        Duration::from_secs(60),
        metrics.clone(),
    );
    let user = Uuid::now_v7();
    publisher.publish(&[(user, 1)]).await;
    // The pool's one connection answered a moment ago, so it goes out again unchecked; kill it.
    let id: i64 = {
        let mut conn = pool.get().await.unwrap();
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut *conn)
            .await
            .unwrap()
    };
    let mut observer = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut observer)
        .await
        .unwrap();
    assert_eq!(killed, 1);

    publisher.publish(&[(user, 2)]).await;
    assert_eq!(stored(&prefix, user).await.0, Some(2));
    let errors = metrics
        .redis_errors
        .with_label_values(&["graph_version"])
        .get();
    assert_eq!(errors, 0, "the write went through on a new connection");
}
