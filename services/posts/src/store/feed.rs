//! The home feed query: fan-out on read over the followee ids the users service gave us.
//!
//! One statement, exact for every page. `author_heads` bounds each followee's newest post. The
//! newest post before the cursor of each of the `limit` followees with the latest bounds gives
//! `limit` real posts, hence a floor under which no post can reach the page; only followees
//! whose head is at or above the floor are descended, and only down to the floor. Heads may be
//! later than the newest surviving post (deletions): that only weakens the pruning, never the
//! result. See docs/adr/0008-home-feed.md for the costs measured.

use super::posts::{Position, PostRow};
use sqlx::PgExecutor;
use uuid::Uuid;

/// The newest `limit` posts by `authors` strictly before `before`.
#[tracing::instrument(skip_all, fields(authors = authors.len(), limit), err)]
pub async fn page(
    db: impl PgExecutor<'_>,
    authors: &[Uuid],
    before: Position,
    exclude_replies: bool,
    limit: i64,
) -> Result<Vec<PostRow>, sqlx::Error> {
    sqlx::query_as!(
        PostRow,
        r#"WITH heads AS (
               SELECT h.author_id,
                      LEAST(CASE WHEN $4 THEN h.last_root_post_at ELSE h.last_post_at END, $2::timestamptz) AS bound
               FROM posts.author_heads h
               WHERE h.author_id = ANY($1::uuid[])
           ),
           probe AS (
               SELECT newest.created_at
               FROM (SELECT author_id FROM heads WHERE bound IS NOT NULL ORDER BY bound DESC LIMIT $5) top
               CROSS JOIN LATERAL (
                   SELECT p.created_at FROM posts.posts p
                   WHERE p.author_id = top.author_id
                     AND (p.created_at, p.id) < ($2::timestamptz, $3::uuid)
                     AND (NOT $4 OR p.reply_to IS NULL)
                   ORDER BY p.created_at DESC, p.id DESC
                   LIMIT 1
               ) newest
           ),
           floor AS (
               SELECT CASE WHEN count(*) >= $5 THEN min(created_at) ELSE '-infinity'::timestamptz END AS at
               FROM probe
           )
           SELECT p.id AS "id!", p.author_id AS "author_id!", p.text AS "text!", p.reply_to,
                  p.created_at AS "created_at!", p.edited_at, p.like_count AS "like_count!",
                  p.reply_count AS "reply_count!"
           FROM heads h
           CROSS JOIN floor f
           CROSS JOIN LATERAL (
               SELECT p.id, p.author_id, p.text, p.reply_to, p.created_at, p.edited_at, p.like_count, p.reply_count
               FROM posts.posts p
               WHERE p.author_id = h.author_id
                 AND (p.created_at, p.id) < ($2::timestamptz, $3::uuid)
                 AND p.created_at >= f.at
                 AND (NOT $4 OR p.reply_to IS NULL)
               ORDER BY p.created_at DESC, p.id DESC
               LIMIT $5
           ) p
           WHERE h.bound >= f.at
           ORDER BY p.created_at DESC, p.id DESC
           LIMIT $5"#,
        authors,
        before.0,
        before.1,
        exclude_replies,
        limit,
    )
    .fetch_all(db)
    .await
}
