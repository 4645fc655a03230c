//! What the posts schema holds of an account, forgotten when the account is deleted.

use common::db::{AccountLock, lock_account};
use sqlx::PgConnection;
use uuid::Uuid;

/// What a deletion removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub posts: u64,
    pub likes: u64,
}

/// Takes `account`'s write lock in shared mode until the transaction ends, and says whether the
/// account may still write here (the users service has not reported it deleted). Every write
/// made in an account's name calls this first in its transaction; [`forget`] takes the same lock
/// exclusively, so a write either commits before the deletion sweeps or sees the tombstone.
#[tracing::instrument(skip_all, err)]
pub async fn hold_for_write(conn: &mut PgConnection, account: Uuid) -> Result<bool, sqlx::Error> {
    lock_account(&mut *conn, account, AccountLock::Write).await?;
    // A statement of its own: under READ COMMITTED it takes a snapshot after the lock is
    // granted, so it sees a deletion that committed while we waited.
    sqlx::query_scalar!(
        r#"SELECT NOT EXISTS (SELECT 1 FROM posts.departed_accounts WHERE account_id = $1) AS "present!""#,
        account
    )
    .fetch_one(&mut *conn)
    .await
}

/// Deletes every post and like of `account`, keeping the counters of other posts exact, and
/// records the account as departed so that a token issued before the deletion can write nothing
/// more. Idempotent: a second run finds nothing and changes nothing.
#[tracing::instrument(skip_all, err)]
pub async fn forget(conn: &mut PgConnection, account: Uuid) -> Result<Forgotten, sqlx::Error> {
    // Waits for the account's writes in flight; later ones see the tombstone.
    lock_account(&mut *conn, account, AccountLock::Delete).await?;
    sqlx::query!(
        r#"INSERT INTO posts.departed_accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING"#,
        account
    )
    .execute(&mut *conn)
    .await?;
    // Likes given: the liked posts' counters go down first.
    sqlx::query!(
        r#"UPDATE posts.posts p SET like_count = p.like_count - 1
           FROM posts.likes l
           WHERE l.user_id = $1 AND p.id = l.post_id"#,
        account
    )
    .execute(&mut *conn)
    .await?;
    let likes = sqlx::query!(r#"DELETE FROM posts.likes WHERE user_id = $1"#, account)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    // Replies written to other people's posts: their reply counters go down.
    sqlx::query!(
        r#"UPDATE posts.posts p SET reply_count = p.reply_count - r.n
           FROM (SELECT reply_to, count(*) AS n FROM posts.posts
                 WHERE author_id = $1 AND reply_to IS NOT NULL
                 GROUP BY reply_to) r
           WHERE p.id = r.reply_to AND p.author_id <> $1"#,
        account
    )
    .execute(&mut *conn)
    .await?;
    // Likes on the account's posts go with them (ON DELETE CASCADE); replies to them stay, no
    // longer attached (ON DELETE SET NULL).
    let posts = sqlx::query!(r#"DELETE FROM posts.posts WHERE author_id = $1"#, account)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query!(
        r#"DELETE FROM posts.author_heads WHERE author_id = $1"#,
        account
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        r#"DELETE FROM posts.idempotency_keys WHERE user_id = $1"#,
        account
    )
    .execute(&mut *conn)
    .await?;
    Ok(Forgotten { posts, likes })
}
