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

/// Takes, for this transaction, `user`'s write lock and then the (user, key) lock, in one round
/// trip: false if another transaction holds the key's. The first is
/// `common::db::lock_account(.., AccountLock::Write)` as one statement with the second: shared,
/// it waits only while a deletion of the account holds it (docs/adr/0013).
#[tracing::instrument(skip_all, err)]
pub async fn lock_writer_and_key(
    conn: &mut PgConnection,
    user: Uuid,
    key: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH writer AS MATERIALIZED (
               SELECT pg_advisory_xact_lock_shared(hashtextextended($1::uuid::text, 11))
           )
           SELECT pg_try_advisory_xact_lock(hashtextextended($1::uuid::text || ':' || $2, 7)) AS "locked!"
           FROM writer"#,
        user,
        key,
    )
    .fetch_one(&mut *conn)
    .await
}

/// What a keyed write finds once it holds both locks of [`lock_writer_and_key`].
#[derive(Debug, Clone)]
pub struct Found {
    /// The account has not departed.
    pub present: bool,
    /// The key's live (under 24 h old) outcome, if any.
    pub stored: Option<Stored>,
}

/// Whether `user` has departed, and the live outcome of their `key`, in one statement. Run it
/// after [`lock_writer_and_key`] and apart from it: under READ COMMITTED it takes its snapshot
/// once both locks are granted, so it sees a deletion, or a first request with the key, that
/// committed while this one waited.
#[tracing::instrument(skip_all, err)]
pub async fn find(conn: &mut PgConnection, user: Uuid, key: &str) -> Result<Found, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT NOT EXISTS (SELECT 1 FROM posts.departed_accounts WHERE account_id = $1) AS "present!",
                  k.request_hash AS "request_hash?", k.response_body AS "response_body?",
                  k.created_at AS "created_at?"
           FROM (VALUES (1)) AS one (n)
           LEFT JOIN posts.idempotency_keys k
             ON k.user_id = $1 AND k.key = $2 AND k.created_at > now() - make_interval(hours => $3)"#,
        user,
        key,
        RETENTION_HOURS as i32,
    )
    .fetch_one(&mut *conn)
    .await?;
    let stored = match (row.request_hash, row.response_body, row.created_at) {
        (Some(request_hash), Some(response_body), Some(created_at)) => Some(Stored {
            request_hash,
            response_body,
            created_at,
        }),
        _ => None,
    };
    Ok(Found {
        present: row.present,
        stored,
    })
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
