//! Likes: one per user and post, counted on the post in the same transaction.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// `user` likes `post`; idempotent. False if there is no such post. Run it in a transaction.
#[tracing::instrument(skip_all, err)]
pub async fn like(conn: &mut PgConnection, post: Uuid, user: Uuid) -> Result<bool, sqlx::Error> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM posts.posts WHERE id = $1) AS "e!""#,
        post
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Ok(false);
    }
    let inserted = sqlx::query!(
        r#"INSERT INTO posts.likes (post_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"#,
        post,
        user,
    )
    .execute(&mut *conn)
    .await;
    match inserted {
        // The post was deleted between the check and the insert.
        Err(e) if e.as_database_error().and_then(|d| d.constraint()) == Some("likes_post_fkey") => {
            return Ok(false);
        }
        Err(e) => return Err(e),
        Ok(done) if done.rows_affected() == 1 => {
            sqlx::query!(
                r#"UPDATE posts.posts SET like_count = like_count + 1 WHERE id = $1"#,
                post
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok(_) => {}
    }
    Ok(true)
}

/// `user` no longer likes `post`; idempotent. False if there is no such post.
#[tracing::instrument(skip_all, err)]
pub async fn unlike(conn: &mut PgConnection, post: Uuid, user: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!(
        r#"DELETE FROM posts.likes WHERE post_id = $1 AND user_id = $2"#,
        post,
        user
    )
    .execute(&mut *conn)
    .await?;
    if deleted.rows_affected() == 1 {
        sqlx::query!(r#"UPDATE posts.posts SET like_count = like_count - 1 WHERE id = $1 AND like_count > 0"#, post)
            .execute(&mut *conn)
            .await?;
        return Ok(true);
    }
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM posts.posts WHERE id = $1) AS "e!""#,
        post
    )
    .fetch_one(&mut *conn)
    .await
}

/// Which of `posts` `user` likes.
#[tracing::instrument(skip_all, err)]
pub async fn liked_among(
    db: impl PgExecutor<'_>,
    user: Uuid,
    posts: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT post_id FROM posts.likes WHERE user_id = $1 AND post_id = ANY($2)"#,
        user,
        posts,
    )
    .fetch_all(db)
    .await
}
