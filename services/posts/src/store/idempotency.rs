//! Idempotency keys of post creation.
//!
//! The first request with a key takes a transaction-scoped advisory lock on (user, key), does
//! its work and stores its response in the same transaction (`posts.create_post`, called by
//! [`super::posts::create`]). A concurrent retry fails to take the lock and is told the first
//! is in flight (409); a later retry finds the stored response. A crash rolls everything back,
//! lock included, so the retry simply does the work.

use sqlx::PgExecutor;

/// How long a key is remembered.
pub const RETENTION_HOURS: i64 = 24;

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
