//! Redis: a pool whose every wait is bounded, and which does not ask a connection that just
//! answered whether it is alive.
//!
//! deadpool-redis leaves its wait, create and recycle timeouts unset by default, so a hung Redis
//! would hang `pool.get()` forever. Every one is set here, and commands are bounded by
//! [`with_timeout`].
//!
//! deadpool-redis also sends `UNWATCH` and `PING` on every checkout, which made each Redis
//! operation two round trips. Its connections are multiplexed: one that is dead fails its next
//! command at once rather than hanging, so the pool here pings only a connection it has reason to
//! doubt ([`Manager`]).
//!
//! A multiplexed connection's socket, and the task that drives it, belong to the Tokio runtime
//! that opened it. An actix worker is a runtime of its own, so [`Pool`] keeps a pool for each
//! runtime that checks out, and a worker's commands never wait for another worker's thread
//! (docs/adr/0032-connections-stay-with-their-runtime.md).

use crate::config::{ConfigError, Env};
use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Id as RuntimeId;

pub use deadpool_redis;

/// Pools of Redis connections, one for each runtime that checks out, each of at most
/// `REDIS_POOL_SIZE`. Check one out with `pool.get().await?` and pass it to a command as
/// `&mut *conn`. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shards>,
}

struct Shards {
    manager: Arc<deadpool_redis::Manager>,
    config: managed::PoolConfig,
    /// A handful: the HTTP workers and the runtime `main` runs on.
    by_runtime: Mutex<Vec<(Option<RuntimeId>, managed::Pool<Manager>)>>,
}

impl Pool {
    /// A connection of the caller's runtime's pool.
    pub async fn get(&self) -> Result<Connection, managed::PoolError<RedisError>> {
        self.here().get().await
    }

    /// The pools' sizes and waits, summed.
    pub fn status(&self) -> deadpool::Status {
        self.shards().iter().map(|(_, pool)| pool.status()).fold(
            deadpool::Status {
                max_size: 0,
                size: 0,
                available: 0,
                waiting: 0,
            },
            |sum, one| deadpool::Status {
                max_size: sum.max_size + one.max_size,
                size: sum.size + one.size,
                available: sum.available + one.available,
                waiting: sum.waiting + one.waiting,
            },
        )
    }

    /// The pool of the runtime the caller runs on, made on its first checkout.
    fn here(&self) -> managed::Pool<Manager> {
        let here = crate::current_runtime();
        let mut shards = self.shards();
        if let Some((_, pool)) = shards.iter().find(|(runtime, _)| *runtime == here) {
            return pool.clone();
        }
        let pool = managed::Pool::builder(Manager {
            inner: Arc::clone(&self.shared.manager),
        })
        .config(self.shared.config)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime set and no post-create hooks builds");
        shards.push((here, pool.clone()));
        pool
    }

    fn shards(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(Option<RuntimeId>, managed::Pool<Manager>)>> {
        // Every change is one push: a panic while holding the lock leaves the list whole.
        self.shared
            .by_runtime
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection checked out of a [`Pool`].
pub type Connection = managed::Object<Manager>;

/// A connection handed out within this long, whose every command since has been answered, is
/// handed out again without a `PING`.
pub const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// Creates connections as deadpool-redis does and checks them only when in doubt: when the
/// connection has not been handed out for [`TRUSTED_FOR`], or a command on it failed or was
/// abandoned (timed out) halfway. A connection that died within that second of being trusted
/// fails one command, which callers treat as any Redis failure (a cache miss, a count kept in the
/// process), and is then pinged, found dead and replaced.
pub struct Manager {
    inner: Arc<deadpool_redis::Manager>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").finish_non_exhaustive()
    }
}

impl managed::Manager for Manager {
    type Type = Checked;
    type Error = RedisError;

    // Connecting and pinging are rare next to a checkout of a trusted connection, and their
    // futures are large: inline, they made posts' Redis read (checkout and MGET) a 14 KB
    // future in release builds, which every request that touches Redis allocated and moved
    // through each future around it. Boxed, they are paid for only when they happen.
    async fn create(&self) -> Result<Checked, RedisError> {
        Ok(Checked {
            inner: Box::pin(self.inner.create()).await?,
            unsettled: false,
        })
    }

    async fn recycle(&self, conn: &mut Checked, metrics: &Metrics) -> RecycleResult<RedisError> {
        if !conn.unsettled && metrics.last_used() < TRUSTED_FOR {
            return Ok(());
        }
        Box::pin(self.inner.recycle(&mut conn.inner, metrics)).await?;
        conn.unsettled = false;
        Ok(())
    }
}

/// A multiplexed connection that remembers whether its last command went unanswered.
pub struct Checked {
    inner: MultiplexedConnection,
    /// A command was sent and its answer not received: it failed, or its caller gave up.
    unsettled: bool,
}

impl Checked {
    /// Whether a command on it went unanswered, so that its next checkout pings it whatever its
    /// idle time.
    pub fn in_doubt(&self) -> bool {
        self.unsettled
    }
}

/// Runs `command` with `unsettled` raised until it is answered: an error or a caller that gives
/// up leaves it raised.
async fn settle<T>(
    unsettled: &mut bool,
    command: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    *unsettled = true;
    let answer = command.await?;
    *unsettled = false;
    Ok(answer)
}

impl ConnectionLike for Checked {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(settle(
            &mut self.unsettled,
            self.inner.req_packed_command(cmd),
        ))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(settle(
            &mut self.unsettled,
            self.inner.req_packed_commands(pipeline, offset, count),
        ))
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// How a service connects to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `REDIS_URL` (default `redis://127.0.0.1:6379`).
    pub url: String,
    /// `REDIS_POOL_SIZE` (default 16): connections for each runtime (each HTTP worker).
    pub pool_size: usize,
    /// `REDIS_TIMEOUT_MS` (default 250): bound on getting a connection and on each command.
    pub timeout: Duration,
    /// `REDIS_KEY_PREFIX`: prepended to every key (tests use one per test).
    pub key_prefix: String,
}

impl RedisSettings {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            url: env.string("REDIS_URL", "redis://127.0.0.1:6379"),
            pool_size: env.parse("REDIS_POOL_SIZE", 16)?,
            timeout: env.millis("REDIS_TIMEOUT_MS", 250)?,
            key_prefix: env.string("REDIS_KEY_PREFIX", ""),
        })
    }

    /// Builds the pool. It connects lazily: Redis being down does not stop start-up.
    pub fn pool(&self) -> anyhow::Result<Pool> {
        // The client's own bounds (500 ms for an answer, 1 s to connect, unless told) would
        // cut short a longer `REDIS_TIMEOUT_MS`: the setting is the one bound.
        let connection = deadpool_redis::redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.timeout))
            .set_connection_timeout(Some(self.timeout));
        let manager = deadpool_redis::Manager::new_with_config(self.url.as_str(), connection)?;
        let config = managed::PoolConfig {
            max_size: self.pool_size,
            timeouts: managed::Timeouts {
                wait: Some(self.timeout),
                create: Some(self.timeout),
                recycle: Some(self.timeout),
            },
            // The connection returned last goes out first: under light load the same few stay
            // in use, and so trusted, while the rest age into being checked.
            queue_mode: managed::QueueMode::Lifo,
        };
        Ok(Pool {
            shared: Arc::new(Shards {
                manager: Arc::new(manager),
                config,
                by_runtime: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// Runs a Redis operation with a deadline; a timeout is an error like any other.
pub async fn with_timeout<T, E>(
    timeout: Duration,
    op: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(timeout, op).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(anyhow::anyhow!("redis command timed out after {timeout:?}")),
    }
}

/// Publishes `payload` on `channel` through the pool, within `timeout`.
pub async fn publish(
    pool: &Pool,
    timeout: Duration,
    channel: &str,
    payload: &str,
) -> anyhow::Result<()> {
    with_timeout(timeout, async {
        let mut conn = pool.get().await?;
        let _: i64 = deadpool_redis::redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut *conn)
            .await?;
        anyhow::Ok(())
    })
    .await
}

/// How long connecting for a subscription, and then subscribing, may each take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a subscription's connection is asked PING, and how long it may take to answer:
/// a dead connection is noticed within twice this.
pub const SUBSCRIPTION_HEARTBEAT: Duration = Duration::from_secs(5);

/// The messages published on `channel` from the moment Redis confirmed the subscription, over a
/// connection of their own (a subscribed connection cannot serve the pool). The stream ends
/// when that connection does, or when it leaves a PING, asked every `heartbeat`, unanswered for
/// `heartbeat`.
///
/// A subscriber only listens, so without a question of its own it would never learn that its
/// connection went half-open (Redis or a route between gone without a FIN or a reset): the
/// stream would wait forever and the process would deliver nothing published after. The PING
/// is the question; the callers reconnect when the stream ends.
pub async fn subscribe(
    url: &str,
    channel: &str,
    heartbeat: Duration,
) -> anyhow::Result<impl futures_util::Stream<Item = deadpool_redis::redis::Msg> + use<>> {
    let client = deadpool_redis::redis::Client::open(url)?;
    let pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub()).await??;
    let (mut sink, messages) = pubsub.split();
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(channel)).await??;
    let channel = channel.to_owned();
    let unanswered = async move {
        loop {
            tokio::time::sleep(heartbeat).await;
            // Subscribed, Redis answers PING with a message of its own kind: any value will do.
            let pong = sink.ping::<deadpool_redis::redis::Value>();
            match tokio::time::timeout(heartbeat, pong).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return tracing::warn!(%channel, error = %e, "subscription's PING failed");
                }
                Err(_) => {
                    return tracing::warn!(%channel, ?heartbeat, "subscription's PING went unanswered");
                }
            }
        }
    };
    Ok(futures_util::StreamExt::take_until(
        messages,
        Box::pin(unanswered),
    ))
}

/// Checks that Redis answers PING within `timeout`.
pub async fn ping(pool: &Pool, timeout: Duration) -> bool {
    let check = async {
        let mut conn = pool.get().await?;
        let pong: String = deadpool_redis::redis::cmd("PING")
            .query_async(&mut *conn)
            .await?;
        anyhow::Ok(pong)
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Ok(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_future_leaves_connecting_and_pinging_boxed() {
        let settings = RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 1,
            timeout: Duration::from_millis(250),
            key_prefix: String::new(),
        };
        let pool = settings.pool().expect("a pool connects lazily");
        // Inline, deadpool's connect made a checkout's future 6.9 KB in a debug build (and the
        // future of a feed's Redis read 14 KB in release, with every caller's around it).
        let size = std::mem::size_of_val(&pool.get());
        assert!(size < 4096, "Pool::get's future is {size} bytes");
    }
}
