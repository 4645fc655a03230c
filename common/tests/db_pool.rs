//! The PostgreSQL pool against a real server: a connection is pinged on checkout only when in
//! doubt (docs/adr/0021), and no request fails after every connection was ended at once, as a
//! restart ends them.
//!
//! One test, so that the process-wide check counter counts this pool alone.

use common::config::Env;
use common::db::{DatabaseSettings, TRUSTED_FOR};
use common::metrics::db_connection_checks;
use sqlx::PgPool;
use std::time::{Duration, Instant};

fn admin_url() -> String {
    std::env::var("ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The backend process of the pool's watcher, if it has one.
async fn watcher(admin: &PgPool, name: &str) -> Option<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
        .bind(format!("{name} watch"))
        .fetch_optional(admin)
        .await
        .expect("pg_stat_activity can be read")
}

/// Waits until the watcher holds a connection other than `old`: it has then noticed the end
/// of `old`, if there was one.
async fn new_watcher(admin: &PgPool, name: &str, old: Option<i32>) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = watcher(admin, name).await;
        if pid.is_some() && pid != old {
            return pid;
        }
        assert!(Instant::now() < deadline, "no new watcher connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ends every backend whose application name starts with `prefix`, as a restart would.
async fn terminate(admin: &PgPool, prefix: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE starts_with(application_name, $1)) t",
    )
    .bind(prefix)
    .fetch_one(admin)
    .await
    .expect("the superuser may end backends")
}

/// Checks out a connection and runs a statement on it `times` times, one after the other;
/// returns how many checkouts were pinged.
async fn use_pool(pool: &PgPool, times: usize) -> u64 {
    let before = db_connection_checks().get();
    for _ in 0..times {
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(pool)
            .await
            .expect("every statement succeeds");
        assert_eq!(one, 1);
        // The pool checks a connection as it returns; let that finish before the next checkout.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    db_connection_checks().get() - before
}

#[tokio::test]
async fn connections_are_checked_only_in_doubt_and_a_restart_fails_no_request() {
    let name = format!("db-pool-test-{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}?application_name={name}", admin_url());
    let env = Env::from_pairs([("DATABASE_URL", url)]);
    let pool = DatabaseSettings::from_env(&env, "postgres://unused")
        .unwrap()
        .pool("public")
        .unwrap();
    let admin = PgPool::connect(&admin_url()).await.unwrap();

    // Until the watcher holds its connection, every checkout is checked.
    use_pool(&pool, 1).await;
    let mut watcher_pid = new_watcher(&admin, &name, None).await;

    // A connection that answered a moment ago goes out as it is.
    assert_eq!(
        use_pool(&pool, 20).await,
        0,
        "recent connections are trusted"
    );

    // Connections idle for longer than TRUSTED_FOR are checked, each once.
    tokio::time::sleep(TRUSTED_FOR + Duration::from_millis(100)).await;
    let size = u64::from(pool.size());
    assert!(size >= 1);
    assert_eq!(
        use_pool(&pool, 10).await,
        size,
        "idle connections are checked"
    );
    assert_eq!(use_pool(&pool, 5).await, 0);

    // Every connection ended at once, as a restart ends them. The watcher sees its own end, so
    // the pooled connections, however recent, are checked, found dead and replaced (each dead
    // one is checked once; new ones are not). No statement fails.
    let size = u64::from(pool.size());
    let ended = terminate(&admin, &name).await;
    assert_eq!(
        ended,
        i64::try_from(size).unwrap() + 1,
        "the pool's and the watcher's"
    );
    watcher_pid = new_watcher(&admin, &name, watcher_pid).await;
    assert_eq!(
        use_pool(&pool, 10).await,
        size,
        "after a restart, connections are checked"
    );
    assert_eq!(
        use_pool(&pool, 5).await,
        0,
        "their replacements are trusted"
    );

    // The watcher alone ended: nothing is known about the others, so each is checked once.
    let size = u64::from(pool.size());
    assert_eq!(terminate(&admin, &format!("{name} watch")).await, 1);
    new_watcher(&admin, &name, watcher_pid).await;
    assert_eq!(
        use_pool(&pool, 10).await,
        size,
        "checked after the watcher's loss"
    );
    assert_eq!(use_pool(&pool, 5).await, 0);

    // The watcher goes with its pool.
    pool.close().await;
    drop(pool);
    let deadline = Instant::now() + Duration::from_secs(10);
    while watcher(&admin, &name).await.is_some() {
        assert!(Instant::now() < deadline, "the watcher outlived its pool");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
