//! A pool for statements run outside a transaction, which takes a connection back without a
//! round trip (docs/adr/0023).
//!
//! sqlx's pool pings every connection it takes back, because it cannot tell a connection whose
//! last operation completed from one abandoned halfway by a cancelled request. [`StatementPool`]
//! can: it lends a connection only for the length of one [`StatementPool::run`], and takes it
//! back only when the operation given to `run` completed and left it outside a transaction. A
//! connection whose operation was cancelled, or failed on the connection itself, is closed.
//!
//! Checkouts are checked as in sqlx's pool configured by [`super::DatabaseSettings::pool`]:
//! a connection is pinged only when in doubt (docs/adr/0021).
//!
//! A connection's socket belongs to the Tokio runtime that opened it: that runtime's I/O driver
//! is the one told when an answer arrives. An actix worker is a runtime of its own, so a
//! connection opened by one worker and lent to another wakes the first worker's thread for every
//! answer, which then wakes the second; while the first is busy, the answer waits. Each
//! connection therefore remembers its runtime, and a checkout takes one of its own runtime's
//! first (docs/adr/0032-connections-stay-with-their-runtime.md).

use super::ServerWatch;
use crate::current_runtime;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgSeverity};
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Id as RuntimeId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection idle this long is closed rather than kept (sqlx's default `idle_timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A connection this old is closed when it comes back (sqlx's default `max_lifetime`).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Connections for single statements, or several in a row, outside a transaction. Cheap to
/// clone; clones share the connections.
#[derive(Clone)]
pub struct StatementPool {
    shared: Arc<Shared>,
}

struct Shared {
    options: PgConnectOptions,
    /// One per connection lent out: at most `max` at a time.
    permits: Arc<Semaphore>,
    max: u32,
    acquire_timeout: Duration,
    /// Idle connections, the one that answered last on top.
    idle: Mutex<Vec<Idle>>,
    /// `None` outside a Tokio runtime: every checkout is then pinged.
    watch: Option<Arc<ServerWatch>>,
}

struct Idle {
    conn: PgConnection,
    opened_at: Instant,
    answered_at: Instant,
    home: Option<RuntimeId>,
}

/// A connection lent out. Dropped without [`Lent::give_back`], it is closed.
struct Lent {
    conn: PgConnection,
    opened_at: Instant,
    /// The runtime whose I/O driver its socket is registered with.
    home: Option<RuntimeId>,
    _permit: OwnedSemaphorePermit,
}

impl StatementPool {
    /// A pool of at most `max` connections with `options`, opened as they are needed; a
    /// checkout waits at most `acquire_timeout` (then [`sqlx::Error::PoolTimedOut`]).
    pub fn new(options: PgConnectOptions, max: u32, acquire_timeout: Duration) -> Self {
        let watch = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| ServerWatch::spawn(&runtime, options.clone(), acquire_timeout));
        let max = max.max(1);
        Self {
            shared: Arc::new(Shared {
                options,
                permits: Arc::new(Semaphore::new(max as usize)),
                max,
                acquire_timeout,
                idle: Mutex::new(Vec::new()),
                watch,
            }),
        }
    }

    /// Runs `op` on a connection of the pool.
    ///
    /// The connection goes back to the pool when `op` completed, with a value or with an error
    /// that ended only the statement (not the session: FATAL), and left nothing open or
    /// queued (a transaction begun with sqlx and dropped uncommitted queues its ROLLBACK);
    /// otherwise it is closed. So `op` may run any statements, but a transaction it begins
    /// should be committed or rolled back within it.
    pub async fn run<T>(
        &self,
        op: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut lent = self.checkout().await?;
        let result = op(&mut lent.conn).await;
        let completed = match &result {
            Ok(_) | Err(sqlx::Error::RowNotFound) => true,
            // An ERROR ends the statement; FATAL (the backend was terminated) ends the session.
            Err(sqlx::Error::Database(e)) => e
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|e| matches!(e.severity(), PgSeverity::Error)),
            Err(_) => false,
        };
        // A transaction dropped without its end has its ROLLBACK only queued; sqlx would send
        // it with the next statement, while the backend idles in the transaction holding its
        // locks. Closing the connection ends the transaction at once.
        let settled = !lent.conn.is_in_transaction() && !lent.conn.should_flush();
        if completed && settled {
            self.give_back(lent);
        }
        result
    }

    /// Connections open now, lent out or idle.
    pub fn size(&self) -> u32 {
        let lent = self.shared.max as usize - self.shared.permits.available_permits();
        u32::try_from(lent + self.num_idle()).unwrap_or(u32::MAX)
    }

    /// Connections idle in the pool now.
    pub fn num_idle(&self) -> usize {
        self.idle().len()
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        self.shared.max
    }

    /// `db_statement_pool_connections{state="total|idle|max"}`, sampled when the registry it is
    /// registered in is gathered.
    pub fn collector(&self) -> prometheus::Result<Box<dyn prometheus::core::Collector>> {
        let gauges = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "db_statement_pool_connections",
                "PostgreSQL statement pool connections",
            ),
            &["state"],
        )?;
        Ok(Box::new(Gauges {
            pool: self.clone(),
            gauges,
        }))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock leaves the stack whole: every change is one push,
        // pop or remove.
        self.shared
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn checkout(&self) -> Result<Lent, sqlx::Error> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.shared.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, self.shared.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let here = current_runtime();
        let lent = loop {
            let idle = self.take_idle(here);
            let Some(mut idle) = idle else {
                let conn = tokio::time::timeout_at(deadline, self.shared.options.connect())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
                break Lent {
                    conn,
                    opened_at: Instant::now(),
                    home: here,
                    _permit: permit,
                };
            };
            let idle_for = idle.answered_at.elapsed();
            let trusted = self
                .shared
                .watch
                .as_ref()
                .is_some_and(|watch| watch.trusts(idle_for));
            if !trusted {
                crate::metrics::db_connection_checks().inc();
                let answered = tokio::time::timeout_at(deadline, idle.conn.ping()).await;
                if !matches!(answered, Ok(Ok(()))) {
                    // Dead, or too slow to trust: closed as it drops; try the next one.
                    continue;
                }
            }
            break Lent {
                conn: idle.conn,
                opened_at: idle.opened_at,
                home: idle.home,
                _permit: permit,
            };
        };
        crate::metrics::pool_acquire_seconds().observe(started.elapsed().as_secs_f64());
        Ok(lent)
    }

    /// The idle connection a checkout on runtime `here` takes, holding its permit: the one of
    /// `here` that answered last; else none while the pool has room to open one for `here`;
    /// else the one of another runtime that answered last. `None`: open a connection.
    fn take_idle(&self, here: Option<RuntimeId>) -> Option<Idle> {
        let mut idle = self.idle();
        if let Some(at) = idle.iter().rposition(|conn| conn.home == here) {
            return Some(idle.remove(at));
        }
        // Lent out, this checkout's permit included, which has no connection yet.
        let lent = self.shared.max as usize - self.shared.permits.available_permits();
        if lent - 1 + idle.len() < self.shared.max as usize {
            return None;
        }
        idle.pop()
    }

    fn give_back(&self, lent: Lent) {
        if lent.opened_at.elapsed() >= MAX_LIFETIME {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        // The bottom of the stack idled longest; under a falling load it is never taken.
        while idle
            .first()
            .is_some_and(|oldest| now.duration_since(oldest.answered_at) >= IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        idle.push(Idle {
            conn: lent.conn,
            opened_at: lent.opened_at,
            answered_at: now,
            home: lent.home,
        });
        // The permit is released after the push, as `lent` drops: a checkout that gets it
        // finds this connection.
    }
}

/// The pool's gauges, set as they are collected.
struct Gauges {
    pool: StatementPool,
    gauges: prometheus::IntGaugeVec,
}

impl prometheus::core::Collector for Gauges {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauges.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let set = |state: &str, value: i64| self.gauges.with_label_values(&[state]).set(value);
        set("total", i64::from(self.pool.size()));
        set("idle", as_i64(self.pool.num_idle()));
        set("max", i64::from(self.pool.max_connections()));
        self.gauges.collect()
    }
}
