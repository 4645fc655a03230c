//! The outbox: events for other services, written in the transaction that causes them and
//! delivered at least once by [`crate::outbox`].

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// An event claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub target: String,
    pub event: String,
    pub subject_id: Uuid,
    pub attempts: i32,
}

/// Queues `event` about `subject` for each of `targets`.
#[tracing::instrument(skip_all, err)]
pub async fn enqueue(
    db: impl PgExecutor<'_>,
    targets: &[&str],
    event: &str,
    subject: Uuid,
) -> Result<(), sqlx::Error> {
    let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
    sqlx::query!(
        r#"INSERT INTO users.outbox (target, event, subject_id)
           SELECT t, $2, $3 FROM unnest($1::text[]) AS t"#,
        &targets,
        event,
        subject,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Claims up to `limit` due events for `lease`: they are not due again until it runs out, so a
/// relay that dies mid-delivery leaves them to be retried, and two relays never deliver the
/// same event at the same time.
#[tracing::instrument(skip_all, err)]
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_as!(
        Claimed,
        r#"UPDATE users.outbox o
           SET next_attempt_at = now() + make_interval(secs => $2::bigint / 1000.0),
               attempts = o.attempts + 1
           WHERE o.id IN (SELECT id FROM users.outbox
                          WHERE delivered_at IS NULL AND next_attempt_at <= now()
                          ORDER BY next_attempt_at
                          LIMIT $1
                          FOR UPDATE SKIP LOCKED)
           RETURNING o.id, o.target, o.event, o.subject_id, o.attempts"#,
        limit,
        lease_ms,
    )
    .fetch_all(db)
    .await
}

/// Marks an event delivered.
#[tracing::instrument(skip_all, err)]
pub async fn delivered(db: impl PgExecutor<'_>, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users.outbox SET delivered_at = now(), last_error = NULL WHERE id = $1"#,
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records a failed attempt; the event is due again at `retry_at`.
#[tracing::instrument(skip_all, err)]
pub async fn failed(
    db: impl PgExecutor<'_>,
    id: i64,
    error: &str,
    retry_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users.outbox SET last_error = left($2, 500), next_attempt_at = $3 WHERE id = $1"#,
        id,
        error,
        retry_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Events not yet delivered (a gauge for operators, and what tests wait on).
#[tracing::instrument(skip_all, err)]
pub async fn pending(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM users.outbox WHERE delivered_at IS NULL"#)
        .fetch_one(db)
        .await
}
