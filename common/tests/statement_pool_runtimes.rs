//! The statement pool lends a runtime the connections it opened (docs/adr/0032): a
//! connection's socket is registered with the I/O driver of the runtime that opened it, so lent
//! to another runtime it needs that one awake for every answer. Two runtimes stand for two actix
//! workers.

mod support;

use common::db::StatementPool;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::time::Duration;
use support::{admin_url, backend};
use tokio::runtime::Runtime;

/// A runtime with a worker thread of its own, which polls its I/O driver whoever runs
/// `block_on`: a connection it opened stays usable from the other runtime.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn backend_from(runtime: &Runtime, pool: &StatementPool) -> i32 {
    runtime
        .block_on(pool.run(async |c| backend(c).await))
        .expect("the statement runs")
}

fn pool(max: u32, runtime: &Runtime) -> StatementPool {
    let options =
        PgConnectOptions::from_str(&admin_url()).expect("ADMIN_DATABASE_URL is a PostgreSQL URL");
    // Built inside a runtime, as the services build theirs, so that it watches the server.
    runtime.block_on(async { StatementPool::new(options, max, Duration::from_secs(3)) })
}

#[test]
fn each_runtime_is_lent_the_connection_it_opened_while_the_pool_has_room() {
    let (a, b) = (runtime(), runtime());
    let pool = pool(2, &a);

    let on_a = backend_from(&a, &pool);
    let on_b = backend_from(&b, &pool);
    assert_ne!(on_a, on_b, "b opens its own rather than borrow a's");
    // The pool lends the connection that answered last, but not across runtimes: b's answered
    // last, and a is still lent its own.
    for _ in 0..3 {
        assert_eq!(backend_from(&a, &pool), on_a);
        assert_eq!(backend_from(&b, &pool), on_b);
    }
    assert_eq!((pool.size(), pool.num_idle()), (2, 2));
}

#[test]
fn a_full_pool_lends_another_runtimes_connection_rather_than_wait() {
    let (a, b) = (runtime(), runtime());
    let pool = pool(1, &a);

    let on_a = backend_from(&a, &pool);
    assert_eq!(
        backend_from(&b, &pool),
        on_a,
        "with no room to open one, b is lent a's"
    );
    assert_eq!((pool.size(), pool.num_idle()), (1, 1));
}
