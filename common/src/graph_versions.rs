//! Followee-set versions that the users service publishes in Redis, so that a reader of the
//! home feed need not ask users on every read whether its followees changed
//! (docs/adr/0017-published-graph-versions.md).
//!
//! Each account's followee set has a version (`users.accounts.graph_version`), bumped in the
//! transaction of every follow, unfollow, block or account deletion that changes it, and served
//! as the ETag of `GET /v1/users/{id}/following/ids`. The users service also writes it to
//! `{prefix}users:graph_version:{id}`:
//!
//! - after committing such a change and **before** answering it, so that a reader who saw the
//!   204 finds the new version on its next read;
//! - whenever it serves the id list (200 or 304), so that the key exists for active readers.
//!
//! A write only ever raises the stored version ([`RAISE`]): a list served from a read that raced
//! a follow cannot put an older version back over the follow's. Keys live at most the
//! publisher's `ttl`, which bounds how long a reader can go on trusting an old version when the
//! write after a change failed (Redis down or slow at that moment): the change was committed and
//! answered, but its announcement was lost. Each key's lifetime is drawn between three quarters
//! of that and all of it ([`crate::expiry`]), so that the versions published together, for the
//! readers of one burst, do not all expire, and send their readers to users, together.
//!
//! The posts service reads the key next to its cached list and uses the list without asking
//! users when the two agree; when the key is missing or differs, it asks as before.
//!
//! Contact versions work the same way for messaging ([`Kind::Contacts`], docs/adr/0022): each
//! account's `users.accounts.contact_version` changes with everything that decides whether it
//! may message or be messaged (its suspension, its deletion, a block it is on either end of),
//! and is published at `{prefix}users:contact_version:{id}`.

use crate::metrics::Metrics;
use crate::redis::{deadpool_redis, with_timeout};
use deadpool_redis::redis;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Sets `KEYS[1]` to `ARGV[1]` with a lifetime of `ARGV[2]` milliseconds unless it holds a
/// higher version; an equal version only renews the lifetime.
pub const RAISE: &str = r"
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// The most keys written in one pipeline (an account deletion can touch many followers).
const CHUNK: usize = 500;

/// What a published version is the version of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An account's followee set (ADR 0017).
    Followees,
    /// An account's standing for messaging: suspended, deleted, the blocks it is on (ADR 0022).
    Contacts,
}

impl Kind {
    /// Its name in Redis keys and in `redis_errors_total{operation}`.
    fn name(self) -> &'static str {
        match self {
            Kind::Followees => "graph_version",
            Kind::Contacts => "contact_version",
        }
    }

    /// The Redis key of `user`'s published version of this kind.
    pub fn key(self, prefix: &str, user: Uuid) -> String {
        format!("{prefix}users:{}:{user}", self.name())
    }
}

/// The Redis key of `user`'s published followee-set version.
pub fn key(prefix: &str, user: Uuid) -> String {
    Kind::Followees.key(prefix, user)
}

/// The Redis key of `user`'s published contact version.
pub fn contact_key(prefix: &str, user: Uuid) -> String {
    Kind::Contacts.key(prefix, user)
}

/// The ETag under which the users service serves the followee ids at `version`.
pub fn etag(version: i64) -> String {
    format!("\"v{version}\"")
}

/// A published value, if it is one.
pub fn parse(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether `e` says the connection was gone, as opposed to a slow or refusing Redis.
fn connection_dropped(e: &anyhow::Error) -> bool {
    e.downcast_ref::<redis::RedisError>()
        .is_some_and(|e| e.is_connection_dropped() || e.is_io_error())
}

/// Writes versions (the users service's side).
#[derive(Clone)]
pub struct Publisher {
    kind: Kind,
    redis: crate::redis::Pool,
    prefix: String,
    timeout: Duration,
    /// How long a published version is trusted without being written again.
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// A publisher of `kind` writing to `redis` under `prefix`, each write bounded by `timeout`.
    pub fn new(
        kind: Kind,
        redis: crate::redis::Pool,
        prefix: String,
        timeout: Duration,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            kind,
            redis,
            prefix,
            timeout,
            ttl,
            metrics,
        }
    }

    /// The same publisher, for versions of another kind.
    pub fn with_kind(&self, kind: Kind) -> Self {
        Self {
            kind,
            ..self.clone()
        }
    }

    /// Raises the published version of each account to the one given. A failure is logged and
    /// counted, never returned: the change it announces is committed already, and readers go
    /// back to asking users once the old value's lifetime runs out.
    pub async fn publish(&self, versions: &[(Uuid, i64)]) {
        for chunk in versions.chunks(CHUNK) {
            // A pooled connection may have died since it last answered (crate::redis::TRUSTED_FOR):
            // that fails at once, and the raise is safe to send again on the one that replaces it.
            let result = match self.publish_chunk(chunk).await {
                Err(e) if connection_dropped(&e) => self.publish_chunk(chunk).await,
                result => result,
            };
            if let Err(e) = result {
                self.metrics
                    .redis_errors
                    .with_label_values(&[self.kind.name()])
                    .inc();
                tracing::warn!(
                    error = %e,
                    kind = self.kind.name(),
                    accounts = chunk.len(),
                    "publishing versions failed; readers may trust the old ones for up to the key lifetime"
                );
            }
        }
    }

    async fn publish_chunk(&self, chunk: &[(Uuid, i64)]) -> anyhow::Result<()> {
        let op = async {
            let mut conn = self.redis.get().await?;
            let mut pipe = redis::pipe();
            for (user, version) in chunk {
                pipe.cmd("EVAL")
                    .arg(RAISE)
                    .arg(1)
                    .arg(self.kind.key(&self.prefix, *user))
                    .arg(version)
                    .arg(crate::expiry::spread_millis(self.ttl))
                    .ignore();
            }
            pipe.query_async::<()>(&mut *conn).await?;
            anyhow::Ok(())
        };
        with_timeout(self.timeout, op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_values_parse_and_etags_match_the_users_service() {
        assert_eq!(parse(b"42"), Some(42));
        assert_eq!(parse(b"v42"), None);
        assert_eq!(parse(b"\xff"), None);
        assert_eq!(etag(7), "\"v7\"");
        let id = Uuid::nil();
        assert_eq!(
            key("t:", id),
            "t:users:graph_version:00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(
            contact_key("t:", id),
            "t:users:contact_version:00000000-0000-0000-0000-000000000000"
        );
    }
}
