//! Accounts the users service reported deleted: their messages become tombstones and their
//! tokens, valid until they expire, can send nothing more.

use super::messages;
use common::db::{AccountLock, lock_account};
use sqlx::PgConnection;
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
    sqlx::query_scalar!(
        r#"SELECT NOT EXISTS (SELECT 1 FROM messaging.departed_accounts WHERE account_id = $1) AS "present!""#,
        account
    )
    .fetch_one(&mut *conn)
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
