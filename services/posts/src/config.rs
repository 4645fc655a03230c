//! The posts service's settings.

use common::config::{ConfigError, Env};
use common::ratelimit::Quota;
use common::service::ServiceSettings;
use common::users_client::{ServiceCredentials, UsersClientSettings};
use std::time::Duration;

/// Default port of the posts service.
pub const DEFAULT_PORT: u16 = 8082;

/// Everything the posts service reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads: HTTP, database, Redis, token verification, logs.
    pub base: ServiceSettings,
    /// Where the users service is.
    pub users: UsersClientSettings,
    /// `AUTHOR_CACHE_TTL_SECS` (default 60): how long an author's name may be stale in Redis;
    /// each process keeps the names it read a tenth of that (docs/adr/0018-authors-in-process.md).
    pub author_cache_ttl: Duration,
    /// `FOLLOWEES_CACHE_TTL_SECS` (default 3600): how long a followee list is kept to stand in
    /// while the users service is down (it is revalidated on every read while it is up).
    pub followees_cache_ttl: Duration,
    /// `POST_CACHE_TTL_SECS` (default 30; 0 keeps none): how long each process keeps a post
    /// read by a reader who is not signed in. Changes drop it at once on every process; this
    /// bounds only what a change whose publish failed leaves stale
    /// (docs/adr/0027-posts-in-process.md).
    pub post_cache_ttl: Duration,
    /// `FEED_HEADS_HELD` (default 10000; 0 holds none): how many of the newest author heads
    /// each process holds for first feed pages (docs/adr/0028-heads-in-process.md).
    pub feed_heads_held: usize,
    /// `FEED_HEADS_RELOAD_SECS` (default 30): how often they are loaded again; this bounds only
    /// how long a post whose publish failed stays out of first feed pages on other processes.
    pub feed_heads_reload: Duration,
    /// `SERVICE_CLIENT_ID` / `SERVICE_CLIENT_SECRET`: this service's credentials for the users
    /// service's internal endpoints (moderation reports).
    pub credentials: ServiceCredentials,
    /// `AUDIT_REPORT_POLL_MS` (default 1000): how often unreported moderation actions are
    /// looked for.
    pub audit_report_poll: Duration,
    /// `RATE_LIMIT_POST_CREATE` (default `300/10800`, Mastodon's): posts one account may write.
    pub post_create: Quota,
}

impl Settings {
    /// Reads every setting; the first bad value stops start-up with its variable's name.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            base: ServiceSettings::from_env(
                env,
                "posts",
                DEFAULT_PORT,
                Some("http://127.0.0.1:8081/.well-known/jwks.json"),
            )?,
            users: UsersClientSettings::from_env(env)?,
            author_cache_ttl: env.seconds("AUTHOR_CACHE_TTL_SECS", 60)?,
            followees_cache_ttl: env.seconds("FOLLOWEES_CACHE_TTL_SECS", 3600)?,
            post_cache_ttl: env.seconds("POST_CACHE_TTL_SECS", 30)?,
            feed_heads_held: env.parse("FEED_HEADS_HELD", 10_000)?,
            feed_heads_reload: env.seconds("FEED_HEADS_RELOAD_SECS", 30)?,
            credentials: ServiceCredentials {
                client_id: env.string("SERVICE_CLIENT_ID", "posts"),
                client_secret: env.secret("SERVICE_CLIENT_SECRET", "posts-dev-secret"),
            },
            audit_report_poll: env.millis("AUDIT_REPORT_POLL_MS", 1000)?,
            post_create: env.parse("RATE_LIMIT_POST_CREATE", Quota::per_seconds(300, 10800))?,
        })
    }
}
