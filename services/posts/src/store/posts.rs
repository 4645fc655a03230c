//! Posts: create, read, edit, delete, replies, author timelines, moderation records.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A post as stored.
#[derive(Debug, Clone)]
pub struct PostRow {
    pub id: Uuid,
    pub author_id: Uuid,
    pub text: String,
    pub reply_to: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub like_count: i64,
    pub reply_count: i64,
    /// Whether the reader likes it, when the statement that read the row was given the reader;
    /// `None` leaves the question to [`crate::views::render`], which then asks once per page.
    pub liked_by_me: Option<bool>,
}

/// A keyset position in a newest-first or oldest-first list of posts.
pub type Position = (DateTime<Utc>, Uuid);

/// What [`create`] did.
#[derive(Debug)]
pub enum Creation {
    /// Written (and stored under the key, if any): the new post's view as JSON, in the shape
    /// of [`crate::views::PostView`].
    Created(serde_json::Value),
    /// The key's live outcome, for the same request: the first request's view.
    Replayed(serde_json::Value),
    /// The key's live outcome is for another request.
    KeyReused,
    /// Another request with the key is in flight.
    InFlight,
    /// The users service has reported the account deleted.
    Departed,
    /// `reply_to` names no post.
    ReplyTargetMissing,
}

/// Creates `author`'s post as one transaction in one round trip (`posts.create_post`,
/// docs/adr/0033): takes the account's write lock and the key's, then checks the departure and
/// the key's stored outcome, then inserts the post, counts it on its parent, moves the author's
/// head and stores the outcome under the key, each step a statement of one call made outside
/// any transaction, which commits it. Nothing is written unless the outcome is `Created`.
/// `author_view` is the author's summary as the view shows it.
#[tracing::instrument(skip_all, err)]
pub async fn create(
    db: impl PgExecutor<'_>,
    author: Uuid,
    author_view: serde_json::Value,
    text: &str,
    reply_to: Option<Uuid>,
    key: Option<(&str, &[u8])>,
) -> Result<Creation, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT outcome AS "outcome!", body FROM posts.create_post($1, $2, $3, $4, $5, $6, $7, $8)"#,
        Uuid::now_v7(),
        author,
        author_view,
        text,
        reply_to,
        key.map(|(key, _)| key),
        key.map(|(_, hash)| hash),
        super::idempotency::RETENTION_HOURS as i32,
    )
    .fetch_one(db)
    .await?;
    let body = |body: Option<serde_json::Value>| {
        body.ok_or_else(|| sqlx::Error::Protocol(format!("{} without a body", row.outcome)))
    };
    Ok(match row.outcome.as_str() {
        "created" => Creation::Created(body(row.body)?),
        "replayed" => Creation::Replayed(body(row.body)?),
        "key_reused" => Creation::KeyReused,
        "in_flight" => Creation::InFlight,
        "departed" => Creation::Departed,
        "reply_target_missing" => Creation::ReplyTargetMissing,
        other => {
            return Err(sqlx::Error::Protocol(format!(
                "posts.create_post answered an unknown outcome {other:?}"
            )));
        }
    })
}

/// One post.
#[tracing::instrument(skip_all, err)]
pub async fn by_id(
    db: impl PgExecutor<'_>,
    id: Uuid,
    reader: Option<Uuid>,
) -> Result<Option<PostRow>, sqlx::Error> {
    sqlx::query_as!(
        PostRow,
        r#"SELECT p.id, p.author_id, p.text, p.reply_to, p.created_at, p.edited_at, p.like_count,
                  p.reply_count,
                  CASE WHEN $2::uuid IS NULL THEN NULL
                       ELSE EXISTS (SELECT 1 FROM posts.likes l WHERE l.post_id = p.id AND l.user_id = $2)
                  END AS "liked_by_me?"
           FROM posts.posts p WHERE p.id = $1"#,
        id,
        reader,
    )
    .fetch_optional(db)
    .await
}

/// Replaces the text of `author`'s post; `None` if there is no such post of theirs.
#[tracing::instrument(skip_all, err)]
pub async fn edit(
    db: impl PgExecutor<'_>,
    id: Uuid,
    author: Uuid,
    text: &str,
) -> Result<Option<PostRow>, sqlx::Error> {
    sqlx::query_as!(
        PostRow,
        r#"UPDATE posts.posts SET text = $3, edited_at = clock_timestamp()
           WHERE id = $1 AND author_id = $2
           RETURNING id, author_id, text, reply_to, created_at, edited_at, like_count, reply_count,
                     NULL::bool AS "liked_by_me?""#,
        id,
        author,
        text,
    )
    .fetch_optional(db)
    .await
}

/// Deletes a post — only `author`'s when `author` is given — and uncounts it on its parent.
/// Run it in a transaction.
#[tracing::instrument(skip_all, err)]
pub async fn delete(
    conn: &mut PgConnection,
    id: Uuid,
    author: Option<Uuid>,
) -> Result<Option<PostRow>, sqlx::Error> {
    let deleted = sqlx::query_as!(
        PostRow,
        r#"DELETE FROM posts.posts WHERE id = $1 AND ($2::uuid IS NULL OR author_id = $2)
           RETURNING id, author_id, text, reply_to, created_at, edited_at, like_count, reply_count,
                     NULL::bool AS "liked_by_me?""#,
        id,
        author,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(parent) = deleted.as_ref().and_then(|p| p.reply_to) {
        sqlx::query!(
            r#"UPDATE posts.posts SET reply_count = reply_count - 1 WHERE id = $1 AND reply_count > 0"#,
            parent,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(deleted)
}

/// Records that a moderator deleted someone's post.
#[tracing::instrument(skip_all, err)]
pub async fn record_moderation(
    conn: &mut PgConnection,
    post: &PostRow,
    moderator: Uuid,
    meta: &common::request_meta::RequestMeta,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO posts.moderation_actions
               (id, post_id, author_id, moderator_id, action, post_text, ip, user_agent, request_id)
           VALUES ($1, $2, $3, $4, 'delete', $5, $6, $7, $8)"#,
        Uuid::now_v7(),
        post.id,
        post.author_id,
        moderator,
        post.text,
        meta.ip,
        meta.user_agent,
        meta.request_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replies to `parent`, oldest first, after `after`.
#[tracing::instrument(skip_all, err)]
pub async fn replies(
    db: impl PgExecutor<'_>,
    parent: Uuid,
    after: Option<Position>,
    limit: i64,
) -> Result<Vec<PostRow>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as!(
        PostRow,
        r#"SELECT id, author_id, text, reply_to, created_at, edited_at, like_count, reply_count,
                  NULL::bool AS "liked_by_me?"
           FROM posts.posts
           WHERE reply_to = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
           ORDER BY created_at, id
           LIMIT $4"#,
        parent,
        after_at,
        after_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// `author`'s posts, newest first, strictly before `before`, with `reader`'s likes if given.
#[tracing::instrument(skip_all, err)]
pub async fn timeline(
    db: impl PgExecutor<'_>,
    author: Uuid,
    before: Position,
    exclude_replies: bool,
    limit: i64,
    reader: Option<Uuid>,
) -> Result<Vec<PostRow>, sqlx::Error> {
    sqlx::query_as!(
        PostRow,
        r#"SELECT page.id AS "id!", page.author_id AS "author_id!", page.text AS "text!",
                  page.reply_to, page.created_at AS "created_at!", page.edited_at,
                  page.like_count AS "like_count!", page.reply_count AS "reply_count!",
                  CASE WHEN $6::uuid IS NULL THEN NULL
                       ELSE EXISTS (SELECT 1 FROM posts.likes l WHERE l.post_id = page.id AND l.user_id = $6)
                  END AS "liked_by_me?"
           FROM (
               SELECT id, author_id, text, reply_to, created_at, edited_at, like_count, reply_count
               FROM posts.posts
               WHERE author_id = $1 AND (created_at, id) < ($2::timestamptz, $3::uuid)
                 AND (NOT $4 OR reply_to IS NULL)
               ORDER BY created_at DESC, id DESC
               LIMIT $5
           ) page
           ORDER BY page.created_at DESC, page.id DESC"#,
        author,
        before.0,
        before.1,
        exclude_replies,
        limit,
        reader,
    )
    .fetch_all(db)
    .await
}
