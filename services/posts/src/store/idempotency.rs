//! Idempotency keys of post creation.
//!
//! The first request with a key takes a transaction-scoped advisory lock on (user, key), does
//! its work and stores its response in the same transaction. A concurrent retry fails to take
//! the lock and is told the first is in flight (409); a later retry finds the stored response.
//! A crash rolls everything back, lock included, so the retry simply does the work.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// How long a key is remembered.
pub const RETENTION_HOURS: i64 = 24;

/// A stored outcome.
#[derive(Debug, Clone)]
pub struct Stored {
    pub request_hash: Vec<u8>,
    pub response_body: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Takes the (user, key) lock for this transaction; false if another transaction holds it.
#[tracing::instrument(skip_all, err)]
pub async fn try_lock(conn: &mut PgConnection, user: Uuid, key: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock(hashtextextended($1::uuid::text || ':' || $2, 7)) AS "locked!""#,
        user,
        key,
    )
    .fetch_one(&mut *conn)
    .await
}

/// The live (under 24 h old) outcome of a key, if any.
#[tracing::instrument(skip_all, err)]
pub async fn find(
    db: impl PgExecutor<'_>,
    user: Uuid,
    key: &str,
) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as!(
        Stored,
        r#"SELECT request_hash, response_body, created_at FROM posts.idempotency_keys
           WHERE user_id = $1 AND key = $2 AND created_at > now() - make_interval(hours => $3)"#,
        user,
        key,
        RETENTION_HOURS as i32,
    )
    .fetch_optional(db)
    .await
}

/// Stores the outcome of a key, replacing an expired one.
#[tracing::instrument(skip_all, err)]
pub async fn store(
    conn: &mut PgConnection,
    user: Uuid,
    key: &str,
    request_hash: &[u8],
    response_body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO posts.idempotency_keys (user_id, key, request_hash, response_body)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id, key) DO UPDATE SET
               request_hash = EXCLUDED.request_hash, response_body = EXCLUDED.response_body, created_at = now()"#,
        user,
        key,
        request_hash,
        response_body,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes keys older than the retention; returns how many.
#[tracing::instrument(skip_all, err)]
pub async fn purge_expired(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"DELETE FROM posts.idempotency_keys WHERE created_at <= now() - make_interval(hours => $1)"#,
        RETENTION_HOURS as i32,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
