//! The statement pool against a real server (docs/adr/0023): a connection whose operation
//! completed is lent again, one abandoned or left in a transaction is closed, a full pool
//! answers `PoolTimedOut`, and connections ended by a restart are replaced without a failed
//! statement.
//!
//! One test, so that the process-wide check counter counts this pool alone.

mod support;

use common::db::{StatementPool, TRUSTED_FOR};
use common::metrics::db_connection_checks;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgPool};
use std::str::FromStr;
use std::time::{Duration, Instant};
use support::{admin_url, backend};

/// The pool's backends as the server lists them, its watcher's left out.
async fn backends(admin: &PgPool, name: &str) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid")
        .bind(name)
        .fetch_all(admin)
        .await
        .expect("pg_stat_activity can be read")
}

/// Waits until the server lists exactly `expected` as the pool's backends: a closed
/// connection's backend ends a moment after the client hangs up.
async fn await_backends(admin: &PgPool, name: &str, mut expected: Vec<i32>) {
    expected.sort_unstable();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = backends(admin, name).await;
        if listed == expected {
            return;
        }
        if Instant::now() >= deadline {
            let states: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(name)
            .fetch_all(admin)
            .await
            .expect("pg_stat_activity can be read");
            panic!("backends {states:?}, expected {expected:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Terminates the pool's backend that is sleeping, if one is.
async fn terminate_sleeper(admin: &PgPool, name: &str) -> bool {
    sqlx::query_scalar(
        "SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity
         WHERE application_name = $1 AND query LIKE '%pg_sleep%' AND state = 'active'",
    )
    .bind(name)
    .fetch_one(admin)
    .await
    .expect("the superuser may end backends")
}

async fn await_watcher(admin: &PgPool, name: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = backends(admin, &format!("{name} watch")).await;
        if let [pid] = pid[..] {
            return pid;
        }
        assert!(Instant::now() < deadline, "no watcher connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_are_lent_again_only_after_their_operation_completed() {
    let name = format!("statement-pool-test-{}", uuid::Uuid::new_v4().simple());
    let options = PgConnectOptions::from_str(&admin_url())
        .unwrap()
        .application_name(&name);
    let pool = StatementPool::new(options, 2, Duration::from_millis(300));
    let admin = PgPool::connect(&admin_url()).await.unwrap();
    await_watcher(&admin, &name).await;

    // A completed operation gives its connection back: the next one gets the same backend,
    // unchecked, and the pool opened one connection.
    let checks = db_connection_checks().get();
    let first = pool.run(async |c| backend(c).await).await.unwrap();
    for _ in 0..5 {
        assert_eq!(pool.run(async |c| backend(c).await).await.unwrap(), first);
    }
    assert_eq!(
        db_connection_checks().get() - checks,
        0,
        "recent ones are trusted"
    );
    assert_eq!((pool.size(), pool.num_idle()), (1, 1));

    // An error the server answered leaves the connection usable, and it is kept.
    let error = pool
        .run(async |c| {
            sqlx::query_scalar::<_, i32>("SELECT 1 / 0")
                .fetch_one(c)
                .await
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("22012"),
        "{error}"
    );
    assert_eq!(pool.run(async |c| backend(c).await).await.unwrap(), first);

    // An operation abandoned while the server works on it (a request cancelled by its client)
    // loses its connection: the backend ends, and the next operation gets another.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(100),
        pool.run(async |c| sqlx::query("SELECT pg_sleep(0.5)").execute(c).await),
    )
    .await;
    assert!(abandoned.is_err(), "the sleep outlasts the timeout");
    assert_eq!(pool.size(), 0);
    await_backends(&admin, &name, vec![]).await;

    // So does one whose backend was terminated under it (a FATAL error: the session is over),
    // so that the next operation gets a live connection.
    let admin_ref = &admin;
    let (terminated, ()) = tokio::join!(
        pool.run(async |c| sqlx::query("SELECT pg_sleep(5)").execute(c).await),
        async {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !terminate_sleeper(admin_ref, &name).await {
                assert!(Instant::now() < deadline, "the sleep never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    );
    let error = terminated.unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57P01"),
        "{error}"
    );
    assert_eq!(pool.size(), 0);
    let second = pool.run(async |c| backend(c).await).await.unwrap();

    // So does one that drops a transaction uncommitted: its ROLLBACK is only queued, and the
    // backend would otherwise idle in the transaction until the connection's next statement.
    let in_transaction = pool
        .run(async |c| {
            let mut tx = c.begin().await?;
            let pid = backend(&mut tx).await?;
            drop(tx);
            Ok(pid)
        })
        .await
        .unwrap();
    assert_eq!(in_transaction, second);
    await_backends(&admin, &name, vec![]).await;
    let third = pool.run(async |c| backend(c).await).await.unwrap();
    assert_ne!(third, second);
    assert_eq!(pool.num_idle(), 1);

    // Two operations at once take two connections; a third waits, and gives up after the
    // acquire timeout with PoolTimedOut.
    let (slow, (other, waited)) = tokio::join!(
        pool.run(async |c| {
            sqlx::query("SELECT pg_sleep(0.6)").execute(&mut *c).await?;
            backend(c).await
        }),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let other = pool.run(async |c| {
                sqlx::query("SELECT pg_sleep(0.6)").execute(&mut *c).await?;
                backend(c).await
            });
            let waited = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                pool.run(async |c| backend(c).await).await
            };
            tokio::join!(other, waited)
        }
    );
    let (slow, other) = (slow.unwrap(), other.unwrap());
    assert_ne!(slow, other);
    assert!(
        matches!(waited, Err(sqlx::Error::PoolTimedOut)),
        "{waited:?}"
    );
    assert_eq!((pool.size(), pool.num_idle()), (2, 2));
    await_backends(&admin, &name, vec![slow, other]).await;

    // Every connection ended at once, as a restart ends them: the watcher notices, the idle
    // connections are checked, found dead and replaced, and no operation fails.
    let watcher = await_watcher(&admin, &name).await;
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE starts_with(application_name, $1)) t",
    )
    .bind(&name)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(ended, 3, "two pooled connections and the watcher");
    let deadline = Instant::now() + Duration::from_secs(10);
    while await_watcher(&admin, &name).await == watcher {
        assert!(Instant::now() < deadline, "the watcher did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let checks = db_connection_checks().get();
    let after = pool.run(async |c| backend(c).await).await.unwrap();
    assert!(![slow, other].contains(&after));
    assert_eq!(
        db_connection_checks().get() - checks,
        2,
        "both dead ones checked"
    );
    assert_eq!(pool.run(async |c| backend(c).await).await.unwrap(), after);
    assert_eq!(
        db_connection_checks().get() - checks,
        2,
        "the new one trusted"
    );

    // A connection idle past TRUSTED_FOR is checked once, then trusted again.
    tokio::time::sleep(TRUSTED_FOR + Duration::from_millis(100)).await;
    let checks = db_connection_checks().get();
    assert_eq!(pool.run(async |c| backend(c).await).await.unwrap(), after);
    assert_eq!(pool.run(async |c| backend(c).await).await.unwrap(), after);
    assert_eq!(db_connection_checks().get() - checks, 1);
}
