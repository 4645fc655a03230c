//! What the posts schema holds of an account, forgotten when the account is deleted.

use sqlx::PgConnection;
use uuid::Uuid;

/// What a deletion removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub posts: u64,
    pub likes: u64,
}

/// Deletes every post and like of `account`, keeping the counters of other posts exact.
/// Idempotent: a second run finds nothing and changes nothing.
#[tracing::instrument(skip_all, err)]
pub async fn forget(conn: &mut PgConnection, account: Uuid) -> Result<Forgotten, sqlx::Error> {
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
