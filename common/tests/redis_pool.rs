//! The Redis pool against a real Redis: a connection that just answered goes back out without a
//! `PING`, and one in doubt is pinged, and replaced when dead.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use common::redis::deadpool_redis::redis::{self, aio::MultiplexedConnection};
use common::redis::{Connection, Pool, RedisSettings, TRUSTED_FOR};
use std::time::Duration;

const URL: &str = "redis://127.0.0.1:6379";

/// A pool of one connection, so that every checkout is of the same one until it is replaced.
fn pool() -> Pool {
    RedisSettings {
        url: URL.to_owned(),
        pool_size: 1,
        timeout: Duration::from_millis(500),
        key_prefix: String::new(),
    }
    .pool()
    .unwrap()
}

/// A connection outside the pool, to watch and kill the pool's.
async fn observer() -> MultiplexedConnection {
    redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn client_id(conn: &mut Connection) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut **conn)
        .await
        .unwrap()
}

/// The last command Redis ran on the connection `id`, as `CLIENT LIST` names it.
async fn last_command(observer: &mut MultiplexedConnection, id: i64) -> String {
    let line: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(id)
        .query_async(observer)
        .await
        .unwrap();
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("cmd="))
        .unwrap_or_else(|| panic!("no cmd= in {line:?}"))
        .to_owned()
}

async fn kill(observer: &mut MultiplexedConnection, id: i64) {
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(observer)
        .await
        .unwrap();
    assert_eq!(killed, 1);
}

#[tokio::test]
async fn a_connection_that_just_answered_goes_out_again_unpinged_and_an_idle_one_is_pinged() {
    let pool = pool();
    let mut observer = observer().await;
    let key = format!("test:{}:pool", uuid::Uuid::new_v4().simple());
    let id = {
        let mut conn = pool.get().await.unwrap();
        let id = client_id(&mut conn).await;
        redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .arg("EX")
            .arg(60)
            .query_async::<()>(&mut *conn)
            .await
            .unwrap();
        id
    };
    let conn = pool.get().await.unwrap();
    assert_eq!(
        last_command(&mut observer, id).await,
        "set",
        "a connection used a moment ago is handed out without a round trip"
    );
    drop(conn);

    tokio::time::sleep(TRUSTED_FOR + Duration::from_millis(200)).await;
    let mut conn = pool.get().await.unwrap();
    assert_eq!(
        last_command(&mut observer, id).await,
        "ping",
        "a connection not used for a while is checked first"
    );
    assert_eq!(client_id(&mut conn).await, id, "and kept when it answers");
}

#[tokio::test]
async fn a_connection_that_failed_a_command_is_pinged_and_replaced_when_dead() {
    let pool = pool();
    let mut observer = observer().await;
    let id = client_id(&mut pool.get().await.unwrap()).await;
    kill(&mut observer, id).await;

    // Trusted, it goes out unchecked: its one command fails, as any Redis failure may.
    let mut conn = pool.get().await.unwrap();
    let failed = redis::cmd("GET")
        .arg("test:anything")
        .query_async::<Option<String>>(&mut *conn)
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(conn.in_doubt());
    drop(conn);

    // In doubt, it is pinged, found dead and replaced: the next command succeeds.
    let mut conn = pool.get().await.unwrap();
    let replacement = client_id(&mut conn).await;
    assert_ne!(replacement, id);
    assert!(!conn.in_doubt());
}

#[tokio::test]
async fn a_dead_connection_idle_past_the_trusted_time_is_replaced_before_use() {
    let pool = pool();
    let mut observer = observer().await;
    let id = client_id(&mut pool.get().await.unwrap()).await;
    kill(&mut observer, id).await;
    tokio::time::sleep(TRUSTED_FOR + Duration::from_millis(200)).await;

    let mut conn = pool.get().await.unwrap();
    let replacement = client_id(&mut conn).await;
    assert_ne!(replacement, id, "no command failed: the PING found it dead");
}

#[tokio::test]
async fn a_command_may_take_as_long_as_the_configured_timeout_not_the_clients_own_500_ms() {
    let pool = RedisSettings {
        url: URL.to_owned(),
        pool_size: 1,
        timeout: Duration::from_secs(3),
        key_prefix: String::new(),
    }
    .pool()
    .unwrap();
    let mut conn = pool.get().await.unwrap();
    let empty = format!("test:nothing-to-pop:{}", uuid::Uuid::now_v7());
    // Redis answers this one after 0.8 s, with nothing: slower than the client's default bound.
    let started = std::time::Instant::now();
    let popped: Option<(String, String)> = redis::cmd("BLPOP")
        .arg(&empty)
        .arg(0.8)
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!(popped, None);
    assert!(started.elapsed() >= Duration::from_millis(700));
}

/// A runtime with a worker thread of its own, standing for an actix worker.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// docs/adr/0032: a connection's driving task and socket belong to the runtime that opened it, so
/// each runtime is lent connections of its own, up to the pool size each.
#[test]
fn each_runtime_checks_out_connections_of_its_own() {
    let (a, b) = (runtime(), runtime());
    let pool = pool();
    let id_on = |runtime: &tokio::runtime::Runtime| {
        runtime.block_on(async { client_id(&mut pool.get().await.unwrap()).await })
    };
    let on_a = id_on(&a);
    let on_b = id_on(&b);
    assert_ne!(
        on_a, on_b,
        "b opened its own, though a's is idle and the size is 1"
    );
    for _ in 0..3 {
        assert_eq!(id_on(&a), on_a);
        assert_eq!(id_on(&b), on_b);
    }
    let status = pool.status();
    assert_eq!((status.max_size, status.size, status.available), (2, 2, 2));
}
