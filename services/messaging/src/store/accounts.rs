//! Accounts the users service reported deleted: their messages become tombstones and their
//! tokens, valid until they expire, can send nothing more.

use super::messages;
use common::db::{AccountLock, lock_account};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Takes `account`'s write lock in shared mode until the transaction ends, and says whether the
/// account may still write here. New conversations call this first in their transaction (writes
/// in a conversation take the same lock with its row: `conversations::lock_for_participant`);
/// [`depart`] takes it exclusively, so a message either commits before the deletion tombstones
/// the account's messages or sees the account departed.
#[tracing::instrument(skip_all, err)]
pub async fn hold_for_write(conn: &mut PgConnection, account: Uuid) -> Result<bool, sqlx::Error> {
    lock_account(&mut *conn, account, AccountLock::Write).await?;
    // A statement of its own: under READ COMMITTED it takes a snapshot after the lock is
    // granted, so it sees a deletion that committed while we waited.
    Ok(!is_departed(&mut *conn, account).await?)
}

/// Whether the users service reported `account` deleted.
#[tracing::instrument(skip_all, err)]
pub async fn is_departed(db: impl PgExecutor<'_>, account: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM messaging.departed_accounts WHERE account_id = $1) AS "departed!""#,
        account
    )
    .fetch_one(db)
    .await
}

/// Those of `accounts` the users service reported deleted.
#[tracing::instrument(skip_all, fields(accounts = accounts.len()), err)]
pub async fn departed_among(
    db: impl PgExecutor<'_>,
    accounts: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT account_id FROM messaging.departed_accounts WHERE account_id = ANY($1)"#,
        accounts
    )
    .fetch_all(db)
    .await
}

/// Records `account` as departed and tombstones every message it sent. Idempotent. Returns how
/// many messages were tombstoned now.
#[tracing::instrument(skip_all, err)]
pub async fn depart(conn: &mut PgConnection, account: Uuid) -> Result<u64, sqlx::Error> {
    // Waits for the account's sends in flight; later ones see the account departed.
    lock_account(&mut *conn, account, AccountLock::Delete).await?;
    sqlx::query!(
        r#"INSERT INTO messaging.departed_accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING"#,
        account
    )
    .execute(&mut *conn)
    .await?;
    messages::tombstone_all_of(&mut *conn, account).await
}
