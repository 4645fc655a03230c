//! Moderation actions awaiting their report to the users service's audit log.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// An action claimed for reporting.
#[derive(Debug, Clone)]
pub struct Unreported {
    pub id: Uuid,
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub moderator_id: Uuid,
    pub action: String,
    pub created_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub report_attempts: i32,
}

/// Claims up to `limit` actions due for reporting, for `lease_secs`.
#[tracing::instrument(skip_all, err)]
pub async fn claim_unreported(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease_secs: f64,
) -> Result<Vec<Unreported>, sqlx::Error> {
    sqlx::query_as!(
        Unreported,
        r#"UPDATE posts.moderation_actions m
           SET next_report_at = now() + make_interval(secs => $2),
               report_attempts = m.report_attempts + 1
           WHERE m.id IN (SELECT id FROM posts.moderation_actions
                          WHERE reported_at IS NULL AND next_report_at <= now()
                          ORDER BY next_report_at
                          LIMIT $1
                          FOR UPDATE SKIP LOCKED)
           RETURNING m.id, m.post_id, m.author_id, m.moderator_id, m.action, m.created_at,
                     m.ip, m.user_agent, m.request_id, m.report_attempts"#,
        limit,
        lease_secs,
    )
    .fetch_all(db)
    .await
}

/// Marks an action reported.
#[tracing::instrument(skip_all, err)]
pub async fn reported(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE posts.moderation_actions SET reported_at = now() WHERE id = $1"#,
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Puts off the next attempt at reporting an action.
#[tracing::instrument(skip_all, err)]
pub async fn retry_at(
    db: impl PgExecutor<'_>,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE posts.moderation_actions SET next_report_at = $2 WHERE id = $1"#,
        id,
        at
    )
    .execute(db)
    .await?;
    Ok(())
}
