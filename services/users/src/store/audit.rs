//! The audit log: appended to by security-relevant handlers, read by admins.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// One event to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// What happened (`auth.login_failed`).
    pub event: &'a str,
    /// Who acted.
    pub actor_id: Option<Uuid>,
    /// Whom it concerned.
    pub subject_id: Option<Uuid>,
    /// The client's address.
    pub ip: Option<&'a str>,
    /// The client's `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// The request's id.
    pub request_id: Option<&'a str>,
    /// Event-specific facts (a new role, the login that failed).
    pub detail: serde_json::Value,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct EntryRow {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub event: String,
    pub actor_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: serde_json::Value,
}

/// Appends `entry`.
#[tracing::instrument(skip_all, fields(event = entry.event), err)]
pub async fn append(db: impl PgExecutor<'_>, entry: &NewEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO users.audit_log
               (event, actor_id, subject_id, ip, user_agent, request_id, detail)
           VALUES ($1, $2, $3, $4::text::inet, $5, $6, $7)"#,
        entry.event,
        entry.actor_id,
        entry.subject_id,
        entry.ip,
        entry.user_agent,
        entry.request_id,
        entry.detail,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Newest first, older than `before` (an id), about `user` (as actor or subject) and of kind
/// `event` when given.
#[tracing::instrument(skip_all, err)]
pub async fn list(
    db: impl PgExecutor<'_>,
    user: Option<Uuid>,
    event: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as!(
        EntryRow,
        r#"SELECT id, occurred_at, event, actor_id, subject_id, host(ip) AS ip,
                  user_agent, request_id, detail
           FROM users.audit_log
           WHERE ($1::uuid IS NULL OR actor_id = $1 OR subject_id = $1)
             AND ($2::text IS NULL OR event = $2)
             AND ($3::bigint IS NULL OR id < $3)
           ORDER BY id DESC
           LIMIT $4"#,
        user,
        event,
        before,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Appends an event another service reported, unless its `source_id` is already recorded.
/// Returns whether it was new.
#[tracing::instrument(skip_all, err)]
pub async fn append_reported(
    db: impl PgExecutor<'_>,
    report: &common::users_client::AuditReport,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        r#"INSERT INTO users.audit_log
               (occurred_at, event, actor_id, subject_id, ip, user_agent, request_id, detail, source_id)
           VALUES ($1, $2, $3, $4, $5::text::inet, left($6, 512), left($7, 128), $8, $9)
           ON CONFLICT (source_id) WHERE source_id IS NOT NULL DO NOTHING"#,
        report.occurred_at,
        report.event,
        report.actor_id,
        report.subject_id,
        report.ip,
        report.user_agent,
        report.request_id,
        report.detail,
        report.source_id,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}
