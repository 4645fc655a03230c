//! Refresh tokens: stored hashed, single use, grouped in families for re-use detection.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A refresh token that was just spent.
#[derive(Debug, Clone)]
pub struct Spent {
    pub account_id: Uuid,
    pub family_id: Uuid,
}

/// A token looked up after it could not be spent.
#[derive(Debug, Clone)]
pub struct Known {
    pub account_id: Uuid,
    pub family_id: Uuid,
    pub used: bool,
}

/// Stores a new token of `family_id`.
#[tracing::instrument(skip_all, err)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    family_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO users.refresh_tokens (id, family_id, account_id, token_hash, expires_at)
           VALUES ($1, $2, $3, $4, $5)"#,
        Uuid::now_v7(),
        family_id,
        account_id,
        token_hash,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the token used if it is live (unused, unrevoked, unexpired). Concurrent attempts to
/// spend one token: exactly one gets `Some`.
#[tracing::instrument(skip_all, err)]
pub async fn spend(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Spent>, sqlx::Error> {
    sqlx::query_as!(
        Spent,
        r#"UPDATE users.refresh_tokens SET used_at = now()
           WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
           RETURNING account_id, family_id"#,
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// Finds a token whatever its state.
#[tracing::instrument(skip_all, err)]
pub async fn find(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Known>, sqlx::Error> {
    sqlx::query_as!(
        Known,
        r#"SELECT account_id, family_id, used_at IS NOT NULL AS "used!" FROM users.refresh_tokens WHERE token_hash = $1"#,
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// Revokes every token of a family.
#[tracing::instrument(skip_all, err)]
pub async fn revoke_family(db: impl PgExecutor<'_>, family_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users.refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL"#,
        family_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Revokes every token of an account (suspension).
#[tracing::instrument(skip_all, err)]
pub async fn revoke_account(db: impl PgExecutor<'_>, account_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users.refresh_tokens SET revoked_at = now() WHERE account_id = $1 AND revoked_at IS NULL"#,
        account_id,
    )
    .execute(db)
    .await?;
    Ok(())
}
