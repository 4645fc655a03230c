//! Reports moderation actions to the users service's audit log, at least once: each action is
//! stored in the transaction that deletes the post, and this relay sends it (claimed with a
//! lease, retried with backoff while users is unavailable) until users acknowledges it. Users
//! records each report once, by its source id. See docs/adr/0013.

use crate::store::moderation::{self, Unreported};
use common::retry::backoff;
use common::users_client::{AuditReport, UsersClient};
use sqlx::PgPool;
use std::time::Duration;

/// Actions claimed per round, and how long a claim lasts.
const BATCH: i64 = 20;
const LEASE_SECS: f64 = 30.0;
/// First wait after a failed report, and the longest.
const RETRY_BASE: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs the relay until the process ends.
pub fn spawn(db: PgPool, users: UsersClient, poll: Duration) {
    tokio::spawn(async move {
        loop {
            match round(&db, &users).await {
                Ok(n) if n == BATCH as usize => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "moderation report round failed"),
            }
            tokio::time::sleep(poll).await;
        }
    });
}

async fn round(db: &PgPool, users: &UsersClient) -> anyhow::Result<usize> {
    let claimed = moderation::claim_unreported(db, BATCH, LEASE_SECS).await?;
    for action in &claimed {
        match users.report_audit(&report_of(action)).await {
            Ok(()) => moderation::reported(db, action.id).await?,
            Err(e) => {
                let wait = backoff(RETRY_BASE, action.report_attempts, MAX_BACKOFF);
                moderation::retry_at(db, action.id, chrono::Utc::now() + wait).await?;
                tracing::warn!(id = %action.id, error = %e, "moderation report failed; will retry");
            }
        }
    }
    Ok(claimed.len())
}

fn report_of(action: &Unreported) -> AuditReport {
    AuditReport {
        source_id: format!("moderation:{}", action.id),
        event: format!("moderation.post_{}d", action.action),
        occurred_at: action.created_at,
        actor_id: Some(action.moderator_id),
        subject_id: Some(action.author_id),
        ip: action.ip.clone(),
        user_agent: action.user_agent.clone(),
        request_id: action.request_id.clone(),
        detail: serde_json::json!({"post_id": action.post_id, "action": action.action}),
    }
}
