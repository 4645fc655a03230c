//! Redis subscriptions against a real Redis, through a fault proxy: a connection that stops
//! answering ends the stream, so that the subscriber reconnects instead of waiting forever.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use common::redis::deadpool_redis::redis;
use common::redis::subscribe;
use faultproxy::{Fault, FaultProxy};
use futures_util::StreamExt;
use std::time::Duration;

const URL: &str = "redis://127.0.0.1:6379";
const HEARTBEAT: Duration = Duration::from_millis(200);

async fn publish(channel: &str, payload: &str) {
    let mut conn = redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A subscription to a channel of its own, through a fault proxy in front of Redis.
async fn subscribed(
    heartbeat: Duration,
) -> (
    FaultProxy,
    String,
    impl futures_util::Stream<Item = redis::Msg> + Unpin,
) {
    let proxy = FaultProxy::start("127.0.0.1:6379".parse().unwrap())
        .await
        .unwrap();
    let channel = format!("test:subscription:{}", uuid::Uuid::now_v7());
    let url = format!("redis://{}", proxy.addr());
    let messages = subscribe(&url, &channel, heartbeat).await.unwrap();
    (proxy, channel, messages)
}

#[tokio::test]
async fn a_subscription_whose_connection_goes_silent_ends_within_two_heartbeats() {
    let (proxy, channel, mut messages) = subscribed(HEARTBEAT).await;

    // Healthy: it outlives several heartbeats and delivers what is published.
    tokio::time::sleep(HEARTBEAT * 5).await;
    publish(&channel, "first").await;
    let first = tokio::time::timeout(Duration::from_secs(2), messages.next())
        .await
        .expect("delivered while healthy")
        .expect("the stream is still open");
    assert_eq!(first.get_payload::<String>().unwrap(), "first");

    // Half-open: the connection stays up and nothing crosses it. Redis never says so; the
    // unanswered PING does.
    proxy.set(Fault::Blackhole);
    publish(&channel, "lost").await;
    let ended = tokio::time::timeout(HEARTBEAT * 2 + Duration::from_millis(500), messages.next())
        .await
        .expect("the stream ends within two heartbeats of going silent");
    assert!(ended.is_none(), "nothing came through the blackhole");
}

#[tokio::test]
async fn a_subscription_whose_connection_is_reset_ends_at_once() {
    // A heartbeat far longer than the test: the end comes from the reset itself.
    let (proxy, _, mut messages) = subscribed(Duration::from_secs(60)).await;
    proxy.set(Fault::Reset);
    let ended = tokio::time::timeout(Duration::from_secs(2), messages.next())
        .await
        .expect("a reset connection ends the stream");
    assert!(ended.is_none());
}
