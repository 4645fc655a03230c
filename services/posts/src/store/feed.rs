//! The home feed query: fan-out on read over the followee ids the users service gave us.
//!
//! Two exact statements, the first tried first (docs/adr/0016-feed-from-recent-heads.md):
//!
//! - [`recent`] walks the newest `walk` author heads of the whole service (an index range, not
//!   one lookup per followee) and keeps the followees among them. Their newest posts give a
//!   floor under which no post can reach the page; if the floor is above every head the walk
//!   did not reach, no unwalked followee can have a post on the page, and the page is read from
//!   the walked followees alone. Otherwise it answers `None`. A head before the cursor stands
//!   in for its author's newest post, so the first page costs no probe at all; because a head
//!   may be stale, such a floor counts only if `limit` posts reach it.
//! - [`pruned`] looks up every followee's head (docs/adr/0008-home-feed.md): exact for any page,
//!   and what a reader whose followees post rarely, or a page far back in time, costs.
//!
//! Heads may be later than the newest surviving post (deletions): that only weakens the
//! pruning (or, in [`recent`], makes it decline), never the result.
//!
//! Before either, when the heads held in the process can tell which followees reach the page
//! ([`crate::recent_heads`], docs/adr/0028-heads-in-process.md), [`above_floor`] reads only
//! those: no followee id list crosses to PostgreSQL.

use super::posts::{Position, PostRow};
use crate::recent_heads::Head;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// What the heads held in the process say of a page: only `authors` can have a post on it, and
/// none of their posts before `floor` can. The page is proven once `limit` posts reach the
/// floor ([`above_floor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub authors: Vec<Uuid>,
    pub floor: DateTime<Utc>,
}

/// How many heads [`recent`] walks for a reader with `followees` followees. The fewer one
/// follows, the further down the walk must go to meet `limit` of them; past these bounds the
/// fallback is cheaper. Measured on the benchmark's data set (200,000 authors): the walk
/// answered for 97 of 100 readers with 100 followees at 1,000 heads, and for every reader with
/// 1,000 or 5,000 followees at 300 (ADR 0016).
pub fn walk_for(followees: usize) -> i64 {
    (100_000 / followees.max(1)).clamp(300, 2_000) as i64
}

/// The newest `limit` posts by `authors` strictly before `before`, with whether `reader` likes
/// each: from `plan`'s authors when they fill the page ([`above_floor`]), else [`recent`] when
/// it can answer, else [`pruned`].
#[tracing::instrument(skip_all, fields(authors = authors.len(), limit, path), err)]
pub async fn page(
    db: &mut PgConnection,
    authors: &[Uuid],
    plan: Option<&Plan>,
    before: Position,
    exclude_replies: bool,
    limit: i64,
    reader: Uuid,
) -> Result<Vec<PostRow>, sqlx::Error> {
    if let Some(plan) = plan
        && let Some(rows) =
            above_floor(&mut *db, plan, before, exclude_replies, limit, reader).await?
    {
        tracing::Span::current().record("path", "held_heads");
        return Ok(rows);
    }
    let walk = walk_for(authors.len());
    if let Some(rows) = recent(
        &mut *db,
        authors,
        before,
        exclude_replies,
        limit,
        walk,
        reader,
    )
    .await?
    {
        tracing::Span::current().record("path", "recent");
        return Ok(rows);
    }
    tracing::Span::current().record("path", "pruned");
    pruned(db, authors, before, exclude_replies, limit, reader).await
}

/// The newest `limit` posts by `plan.authors` strictly before `before` and not before
/// `plan.floor`, or `None` when fewer than `limit` reach the floor: then a head above its
/// author's newest post (a deletion) may have set it too high, and the page is not proven.
#[tracing::instrument(skip_all, fields(authors = plan.authors.len(), limit), err)]
pub async fn above_floor(
    db: impl PgExecutor<'_>,
    plan: &Plan,
    before: Position,
    exclude_replies: bool,
    limit: i64,
    reader: Uuid,
) -> Result<Option<Vec<PostRow>>, sqlx::Error> {
    let rows = sqlx::query_as!(
        PostRow,
        r#"WITH page AS (
               SELECT p.id, p.author_id, p.text, p.reply_to, p.created_at, p.edited_at, p.like_count, p.reply_count
               FROM unnest($1::uuid[]) AS a(author_id)
               CROSS JOIN LATERAL (
                   SELECT p.id, p.author_id, p.text, p.reply_to, p.created_at, p.edited_at, p.like_count, p.reply_count
                   FROM posts.posts p
                   WHERE p.author_id = a.author_id
                     AND (p.created_at, p.id) < ($2::timestamptz, $3::uuid)
                     AND p.created_at >= $6
                     AND (NOT $4 OR p.reply_to IS NULL)
                   ORDER BY p.created_at DESC, p.id DESC
                   LIMIT $5
               ) p
               ORDER BY p.created_at DESC, p.id DESC
               LIMIT $5
           )
           -- The reader's likes, probed for the page's rows only.
           SELECT page.id AS "id!", page.author_id AS "author_id!", page.text AS "text!",
                  page.reply_to, page.created_at AS "created_at!", page.edited_at,
                  page.like_count AS "like_count!", page.reply_count AS "reply_count!",
                  EXISTS (SELECT 1 FROM posts.likes l WHERE l.post_id = page.id AND l.user_id = $7)
                      AS "liked_by_me?"
           FROM page
           ORDER BY page.created_at DESC, page.id DESC"#,
        &plan.authors,
        before.0,
        before.1,
        exclude_replies,
        limit,
        plan.floor,
        reader,
    )
    .fetch_all(db)
    .await?;
    Ok((rows.len() as i64 >= limit).then_some(rows))
}

/// The newest `limit` author heads of the service, newest first: what each process holds
/// ([`crate::recent_heads`]).
#[tracing::instrument(skip_all, fields(limit), err)]
pub async fn newest_heads(
    db: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<(Uuid, Head)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT author_id, last_post_at, last_root_post_at
           FROM posts.author_heads
           ORDER BY last_post_at DESC
           LIMIT $1"#,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.author_id,
                Head {
                    last_post_at: r.last_post_at,
                    last_root_post_at: r.last_root_post_at,
                },
            )
        })
        .collect())
}

/// The page from the newest `walk` heads of the service, or `None` when they cannot prove it
/// exact (see the module documentation). Never `Some` of an empty page. `authors` must be
/// distinct: they are joined, not tested for membership.
#[tracing::instrument(skip_all, fields(authors = authors.len(), limit, walk), err)]
pub async fn recent(
    db: impl PgExecutor<'_>,
    authors: &[Uuid],
    before: Position,
    exclude_replies: bool,
    limit: i64,
    walk: i64,
    reader: Uuid,
) -> Result<Option<Vec<PostRow>>, sqlx::Error> {
    let rows = sqlx::query_as!(
        PostRow,
        r#"WITH walked AS MATERIALIZED (
               SELECT h.author_id, h.last_post_at, h.last_root_post_at
               FROM posts.author_heads h
               ORDER BY h.last_post_at DESC
               LIMIT $6
           ),
           edge AS (SELECT min(last_post_at) AS at, count(*) AS heads FROM walked),
           followed AS MATERIALIZED (
               SELECT w.author_id,
                      LEAST(CASE WHEN $4 THEN w.last_root_post_at ELSE w.last_post_at END, $2::timestamptz) AS bound
               FROM walked w
               JOIN unnest($1::uuid[]) AS f(author_id) ON f.author_id = w.author_id
           ),
           -- The floor: the oldest of the newest post of each of the `limit` followees with the
           -- latest bounds. A head before the cursor is that post's time (or later, after a
           -- deletion: checked below); a head at or after the cursor says nothing, so only those
           -- authors are probed.
           probe AS (
               SELECT CASE WHEN top.clipped THEN newest.created_at ELSE top.bound END AS created_at
               FROM (
                   SELECT author_id, bound, bound = $2::timestamptz AS clipped
                   FROM followed WHERE bound IS NOT NULL ORDER BY bound DESC LIMIT $5
               ) top
               LEFT JOIN LATERAL (
                   SELECT p.created_at FROM posts.posts p
                   WHERE top.clipped
                     AND p.author_id = top.author_id
                     AND (p.created_at, p.id) < ($2::timestamptz, $3::uuid)
                     AND (NOT $4 OR p.reply_to IS NULL)
                   ORDER BY p.created_at DESC, p.id DESC
                   LIMIT 1
               ) newest ON true
           ),
           floor AS (
               SELECT CASE WHEN count(created_at) >= $5 THEN min(created_at) ELSE '-infinity'::timestamptz END AS at,
                      count(created_at) >= $5 AS full
               FROM probe
           ),
           exact AS (
               -- Every head was walked, or the floor is above every head that was not.
               SELECT f.at FROM floor f CROSS JOIN edge e
               WHERE e.heads < $6 OR (f.full AND f.at > e.at)
           ),
           page AS (
               SELECT p.id, p.author_id, p.text, p.reply_to, p.created_at, p.edited_at, p.like_count, p.reply_count
               FROM followed h
               CROSS JOIN exact f
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
               LIMIT $5
           )
           -- The reader's likes, probed for the page's rows only.
           SELECT page.id AS "id!", page.author_id AS "author_id!", page.text AS "text!",
                  page.reply_to, page.created_at AS "created_at!", page.edited_at,
                  page.like_count AS "like_count!", page.reply_count AS "reply_count!",
                  EXISTS (SELECT 1 FROM posts.likes l WHERE l.post_id = page.id AND l.user_id = $7)
                      AS "liked_by_me?"
           FROM page
           -- A floor from a stale head (later than its author's newest post) may be too high:
           -- then fewer than `limit` posts reach it, and the page is not proven.
           WHERE NOT (SELECT f.full FROM floor f) OR (SELECT count(*) FROM page) >= $5
           ORDER BY page.created_at DESC, page.id DESC"#,
        authors,
        before.0,
        before.1,
        exclude_replies,
        limit,
        walk,
        reader,
    )
    .fetch_all(db)
    .await?;
    Ok((!rows.is_empty()).then_some(rows))
}

/// The newest `limit` posts by `authors` strictly before `before`, from every followee's head:
/// `limit` probes give a floor, and only followees whose head reaches it are read.
#[tracing::instrument(skip_all, fields(authors = authors.len(), limit), err)]
pub async fn pruned(
    db: impl PgExecutor<'_>,
    authors: &[Uuid],
    before: Position,
    exclude_replies: bool,
    limit: i64,
    reader: Uuid,
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
           ),
           page AS (
               SELECT p.id, p.author_id, p.text, p.reply_to, p.created_at, p.edited_at, p.like_count, p.reply_count
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
               LIMIT $5
           )
           -- The reader's likes, probed for the page's rows only.
           SELECT page.id AS "id!", page.author_id AS "author_id!", page.text AS "text!",
                  page.reply_to, page.created_at AS "created_at!", page.edited_at,
                  page.like_count AS "like_count!", page.reply_count AS "reply_count!",
                  EXISTS (SELECT 1 FROM posts.likes l WHERE l.post_id = page.id AND l.user_id = $6)
                      AS "liked_by_me?"
           FROM page
           ORDER BY page.created_at DESC, page.id DESC"#,
        authors,
        before.0,
        before.1,
        exclude_replies,
        limit,
        reader,
    )
    .fetch_all(db)
    .await
}
