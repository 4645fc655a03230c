//! The follow graph and blocks.
//!
//! Follow, unfollow and block lock both account rows in id order before they look at the graph,
//! so that a follow racing a block cannot slip in after the block removed follows, and the
//! counters on the account rows stay exact.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The most accounts one account may follow; `GET /v1/users/{id}/following/ids` always returns
/// the complete list because of it.
pub const MAX_FOLLOWING: i64 = 10_000;

/// What a follow attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum FollowOutcome {
    /// Now following (or already was).
    Following,
    /// One of the two accounts does not exist.
    UnknownAccount,
    /// A block exists in either direction.
    Blocked,
    /// The follower follows [`MAX_FOLLOWING`] accounts already.
    LimitReached,
}

/// Locks both account rows in id order; returns the follower's following count, or `None` if
/// either account is missing.
async fn lock_pair(
    conn: &mut PgConnection,
    actor: Uuid,
    target: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT id, following_count FROM users.accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE"#,
        &[actor, target][..],
    )
    .fetch_all(&mut *conn)
    .await?;
    if rows.len() != 2 {
        return Ok(None);
    }
    Ok(rows
        .iter()
        .find(|r| r.id == actor)
        .map(|r| r.following_count))
}

async fn blocked_either_way(
    conn: &mut PgConnection,
    a: Uuid,
    b: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM users.blocks
               WHERE (blocker_id = $1 AND blocked_id = $2) OR (blocker_id = $2 AND blocked_id = $1)
           ) AS "blocked!""#,
        a,
        b,
    )
    .fetch_one(&mut *conn)
    .await
}

/// Followee sets changed by a write, with their new versions: what the handler publishes once
/// the transaction has committed (docs/adr/0017-published-graph-versions.md).
pub type Versions = Vec<(Uuid, i64)>;

/// Marks the followee sets of `ids` as changed (the ETag of their followee-id lists).
async fn bump_graph_versions(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Versions, sqlx::Error> {
    let rows = sqlx::query!(
        r#"UPDATE users.accounts SET graph_version = graph_version + 1 WHERE id = ANY($1)
           RETURNING id, graph_version"#,
        ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.graph_version)).collect())
}

/// Marks whom `ids` may message as possibly changed (docs/adr/0022-published-contact-versions.md).
async fn bump_contact_versions(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Versions, sqlx::Error> {
    let rows = sqlx::query!(
        r#"UPDATE users.accounts SET contact_version = contact_version + 1 WHERE id = ANY($1)
           RETURNING id, contact_version"#,
        ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.contact_version))
        .collect())
}

/// What a block or unblock changed: followee-set versions (ADR 0017) and contact versions (ADR
/// 0022), each to be published once the transaction has committed.
#[derive(Debug, Default)]
pub struct BlockChange {
    pub followee_sets: Versions,
    pub contacts: Versions,
}

async fn adjust_counts(
    conn: &mut PgConnection,
    follower: Uuid,
    followee: Uuid,
    delta: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE users.accounts SET
               following_count = following_count + CASE WHEN id = $1 THEN $3::bigint ELSE 0 END,
               followers_count = followers_count + CASE WHEN id = $2 THEN $3::bigint ELSE 0 END
           WHERE id IN ($1, $2)"#,
        follower,
        followee,
        delta,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `follower` follows `followee`; idempotent. Run it in a transaction. The versions are those
/// of the followee sets it changed (none when nothing changed).
#[tracing::instrument(skip_all, err)]
pub async fn follow(
    conn: &mut PgConnection,
    follower: Uuid,
    followee: Uuid,
) -> Result<(FollowOutcome, Versions), sqlx::Error> {
    let unchanged = |outcome| Ok((outcome, Versions::new()));
    let Some(following_count) = lock_pair(conn, follower, followee).await? else {
        return unchanged(FollowOutcome::UnknownAccount);
    };
    if blocked_either_way(conn, follower, followee).await? {
        return unchanged(FollowOutcome::Blocked);
    }
    let already = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users.follows WHERE follower_id = $1 AND followee_id = $2) AS "exists!""#,
        follower,
        followee,
    )
    .fetch_one(&mut *conn)
    .await?;
    if already {
        return unchanged(FollowOutcome::Following);
    }
    if following_count >= MAX_FOLLOWING {
        return unchanged(FollowOutcome::LimitReached);
    }
    sqlx::query!(
        r#"INSERT INTO users.follows (follower_id, followee_id) VALUES ($1, $2)"#,
        follower,
        followee,
    )
    .execute(&mut *conn)
    .await?;
    adjust_counts(conn, follower, followee, 1).await?;
    let versions = bump_graph_versions(conn, &[follower]).await?;
    Ok((FollowOutcome::Following, versions))
}

/// `follower` stops following `followee`; idempotent. `None` if either account is unknown,
/// else the versions of the followee sets it changed.
#[tracing::instrument(skip_all, err)]
pub async fn unfollow(
    conn: &mut PgConnection,
    follower: Uuid,
    followee: Uuid,
) -> Result<Option<Versions>, sqlx::Error> {
    if lock_pair(conn, follower, followee).await?.is_none() {
        return Ok(None);
    }
    let deleted = sqlx::query!(
        r#"DELETE FROM users.follows WHERE follower_id = $1 AND followee_id = $2"#,
        follower,
        followee,
    )
    .execute(&mut *conn)
    .await?;
    if deleted.rows_affected() == 0 {
        return Ok(Some(Versions::new()));
    }
    adjust_counts(conn, follower, followee, -1).await?;
    Ok(Some(bump_graph_versions(conn, &[follower]).await?))
}

/// `blocker` blocks `blocked`, removing follows both ways; idempotent. `None` if either
/// account is unknown, else the versions it changed. Run it in a transaction.
#[tracing::instrument(skip_all, err)]
pub async fn block(
    conn: &mut PgConnection,
    blocker: Uuid,
    blocked: Uuid,
) -> Result<Option<BlockChange>, sqlx::Error> {
    if lock_pair(conn, blocker, blocked).await?.is_none() {
        return Ok(None);
    }
    let added = sqlx::query!(
        r#"INSERT INTO users.blocks (blocker_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"#,
        blocker,
        blocked,
    )
    .execute(&mut *conn)
    .await?;
    if added.rows_affected() == 0 {
        // Blocked already: the follows went with the first block and cannot have come back.
        return Ok(Some(BlockChange::default()));
    }
    let contacts = bump_contact_versions(conn, &[blocker, blocked]).await?;
    let removed = sqlx::query!(
        r#"DELETE FROM users.follows
           WHERE (follower_id = $1 AND followee_id = $2) OR (follower_id = $2 AND followee_id = $1)
           RETURNING follower_id, followee_id"#,
        blocker,
        blocked,
    )
    .fetch_all(&mut *conn)
    .await?;
    for edge in &removed {
        adjust_counts(conn, edge.follower_id, edge.followee_id, -1).await?;
    }
    let followers: Vec<Uuid> = removed.iter().map(|edge| edge.follower_id).collect();
    let followee_sets = if followers.is_empty() {
        Versions::new()
    } else {
        bump_graph_versions(conn, &followers).await?
    };
    Ok(Some(BlockChange {
        followee_sets,
        contacts,
    }))
}

/// Lifts a block; idempotent. `None` if the blocked account is unknown, else the contact
/// versions it changed (none when there was no block).
#[tracing::instrument(skip_all, err)]
pub async fn unblock(
    conn: &mut PgConnection,
    blocker: Uuid,
    blocked: Uuid,
) -> Result<Option<Versions>, sqlx::Error> {
    if lock_pair(conn, blocker, blocked).await?.is_none() {
        return Ok(None);
    }
    let lifted = sqlx::query!(
        r#"DELETE FROM users.blocks WHERE blocker_id = $1 AND blocked_id = $2"#,
        blocker,
        blocked,
    )
    .execute(&mut *conn)
    .await?;
    if lifted.rows_affected() == 0 {
        return Ok(Some(Versions::new()));
    }
    Ok(Some(
        bump_contact_versions(conn, &[blocker, blocked]).await?,
    ))
}

/// How a viewer and another account relate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relationship {
    pub followed_by_me: bool,
    pub follows_me: bool,
}

/// The follow relation between `viewer` and `other`, both ways.
#[tracing::instrument(skip_all, err)]
pub async fn relationship(
    db: impl PgExecutor<'_>,
    viewer: Uuid,
    other: Uuid,
) -> Result<Relationship, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT
               EXISTS (SELECT 1 FROM users.follows WHERE follower_id = $1 AND followee_id = $2) AS "followed_by_me!",
               EXISTS (SELECT 1 FROM users.follows WHERE follower_id = $2 AND followee_id = $1) AS "follows_me!""#,
        viewer,
        other,
    )
    .fetch_one(db)
    .await?;
    Ok(Relationship {
        followed_by_me: row.followed_by_me,
        follows_me: row.follows_me,
    })
}

/// One row of a followers or following listing.
#[derive(Debug, Clone)]
pub struct EdgeRow {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub followed_at: DateTime<Utc>,
}

/// Accounts `user` follows, newest follow first, after the keyset position `after`.
#[tracing::instrument(skip_all, err)]
pub async fn following(
    db: impl PgExecutor<'_>,
    user: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<EdgeRow>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as!(
        EdgeRow,
        r#"SELECT a.id, a.username, a.display_name, f.created_at AS followed_at
           FROM users.follows f JOIN users.accounts a ON a.id = f.followee_id
           WHERE f.follower_id = $1
             AND ($2::timestamptz IS NULL OR (f.created_at, f.followee_id) < ($2, $3))
           ORDER BY f.created_at DESC, f.followee_id DESC
           LIMIT $4"#,
        user,
        after_at,
        after_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Accounts that follow `user`, newest follow first, after the keyset position `after`.
#[tracing::instrument(skip_all, err)]
pub async fn followers(
    db: impl PgExecutor<'_>,
    user: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<EdgeRow>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as!(
        EdgeRow,
        r#"SELECT a.id, a.username, a.display_name, f.created_at AS followed_at
           FROM users.follows f JOIN users.accounts a ON a.id = f.follower_id
           WHERE f.followee_id = $1
             AND ($2::timestamptz IS NULL OR (f.created_at, f.follower_id) < ($2, $3))
           ORDER BY f.created_at DESC, f.follower_id DESC
           LIMIT $4"#,
        user,
        after_at,
        after_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Every account `user` follows (at most [`MAX_FOLLOWING`]).
#[tracing::instrument(skip_all, err)]
pub async fn following_ids(db: impl PgExecutor<'_>, user: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT followee_id FROM users.follows WHERE follower_id = $1 ORDER BY followee_id LIMIT $2"#,
        user,
        MAX_FOLLOWING,
    )
    .fetch_all(db)
    .await
}

/// The version of an account's followee set, or `None` if there is no such account.
#[tracing::instrument(skip_all, err)]
pub async fn graph_version(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT graph_version FROM users.accounts WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// Whether an account exists.
#[tracing::instrument(skip_all, err)]
pub async fn exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users.accounts WHERE id = $1) AS "exists!""#,
        id
    )
    .fetch_one(db)
    .await
}
