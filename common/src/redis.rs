//! Redis: a deadpool pool whose every wait is bounded.
//!
//! deadpool-redis leaves its wait, create and recycle timeouts unset by default, so a hung Redis
//! would hang `pool.get()` forever. Every one is set here, and commands are bounded by
//! [`with_timeout`].

use crate::config::{ConfigError, Env};
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use std::future::Future;
use std::time::Duration;

pub use deadpool_redis;

/// How a service connects to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `REDIS_URL` (default `redis://127.0.0.1:6379`).
    pub url: String,
    /// `REDIS_POOL_SIZE` (default 16).
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
        let mut config = Config::from_url(self.url.clone());
        config.pool = Some(PoolConfig {
            max_size: self.pool_size,
            timeouts: Timeouts {
                wait: Some(self.timeout),
                create: Some(self.timeout),
                recycle: Some(self.timeout),
            },
            ..PoolConfig::default()
        });
        Ok(config.create_pool(Some(Runtime::Tokio1))?)
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

/// Checks that Redis answers PING within `timeout`.
pub async fn ping(pool: &Pool, timeout: Duration) -> bool {
    let check = async {
        let mut conn = pool.get().await?;
        let pong: String = deadpool_redis::redis::cmd("PING")
            .query_async(&mut conn)
            .await?;
        anyhow::Ok(pong)
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Ok(_)))
}
