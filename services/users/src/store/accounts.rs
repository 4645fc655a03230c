//! Accounts: creation, credentials, profiles, roles and suspension.

use crate::domain::{Bio, DisplayName, Email, Username};
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// An account as its owner sees it.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub bio: String,
    pub role: String,
    pub followers_count: i64,
    pub following_count: i64,
    pub created_at: DateTime<Utc>,
}

/// What sign-in needs.
#[derive(Debug, Clone)]
pub struct CredentialsRow {
    pub id: Uuid,
    pub password_hash: String,
    pub role: String,
    pub suspended: bool,
}

/// What refresh needs: whether the account may still get tokens, and with which role.
#[derive(Debug, Clone)]
pub struct StatusRow {
    pub role: String,
    pub suspended: bool,
    /// Read with `suspended` (docs/adr/0022).
    pub contact_version: i64,
}

/// Creates an account. A taken username or email fails on its named unique constraint.
#[tracing::instrument(skip_all, err)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    username: &Username,
    email: &Email,
    password_hash: &str,
    display_name: &DisplayName,
) -> Result<AccountRow, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"INSERT INTO users.accounts (id, username, email, password_hash, display_name)
           VALUES ($1, $2, $3, $4, $5)
           RETURNING id, username, email, display_name, bio, role, followers_count, following_count, created_at"#,
        Uuid::now_v7(),
        username.as_str(),
        email.as_str(),
        password_hash,
        display_name.as_str(),
    )
    .fetch_one(db)
    .await
}

/// The account whose username or email is `login`.
#[tracing::instrument(skip_all, err)]
pub async fn credentials(
    db: impl PgExecutor<'_>,
    login: &str,
) -> Result<Option<CredentialsRow>, sqlx::Error> {
    sqlx::query_as!(
        CredentialsRow,
        r#"SELECT id, password_hash, role, suspended_at IS NOT NULL AS "suspended!"
           FROM users.accounts WHERE username = $1 OR email = $1
           LIMIT 1"#,
        login,
    )
    .fetch_optional(db)
    .await
}

/// Role and suspension of an account.
#[tracing::instrument(skip_all, err)]
pub async fn status(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<StatusRow>, sqlx::Error> {
    sqlx::query_as!(
        StatusRow,
        r#"SELECT role, suspended_at IS NOT NULL AS "suspended!", contact_version
           FROM users.accounts WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// One account by id.
#[tracing::instrument(skip_all, err)]
pub async fn by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, username, email, display_name, bio, role, followers_count, following_count, created_at
           FROM users.accounts WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// One account by username (already normalised).
#[tracing::instrument(skip_all, err)]
pub async fn by_username(
    db: impl PgExecutor<'_>,
    username: &str,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, username, email, display_name, bio, role, followers_count, following_count, created_at
           FROM users.accounts WHERE username = $1"#,
        username,
    )
    .fetch_optional(db)
    .await
}

/// Many accounts by id; unknown ids are absent from the result.
#[tracing::instrument(skip_all, fields(count = ids.len()), err)]
pub async fn by_ids(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, username, email, display_name, bio, role, followers_count, following_count, created_at
           FROM users.accounts WHERE id = ANY($1)"#,
        ids,
    )
    .fetch_all(db)
    .await
}

/// Updates the profile fields that are `Some`; returns the account, or `None` if it is gone.
#[tracing::instrument(skip_all, err)]
pub async fn update_profile(
    db: impl PgExecutor<'_>,
    id: Uuid,
    display_name: Option<&DisplayName>,
    bio: Option<&Bio>,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"UPDATE users.accounts
           SET display_name = COALESCE($2, display_name), bio = COALESCE($3, bio), updated_at = now()
           WHERE id = $1
           RETURNING id, username, email, display_name, bio, role, followers_count, following_count, created_at"#,
        id,
        display_name.map(DisplayName::as_str),
        bio.map(Bio::as_str),
    )
    .fetch_optional(db)
    .await
}

/// Sets an account's role; false if there is no such account.
#[tracing::instrument(skip_all, err)]
pub async fn set_role(db: impl PgExecutor<'_>, id: Uuid, role: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        r#"UPDATE users.accounts SET role = $2, updated_at = now() WHERE id = $1"#,
        id,
        role,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Suspends or reinstates an account; `None` if there is no such account, else its new contact
/// version, to publish once committed.
#[tracing::instrument(skip_all, err)]
pub async fn set_suspended(
    db: impl PgExecutor<'_>,
    id: Uuid,
    suspended: bool,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"UPDATE users.accounts
           SET suspended_at = CASE WHEN $2 THEN COALESCE(suspended_at, now()) END, updated_at = now(),
               contact_version = contact_version + 1
           WHERE id = $1
           RETURNING contact_version"#,
        id,
        suspended,
    )
    .fetch_optional(db)
    .await
}

/// How `others` stand towards `user` for messaging: suspended, or a block either way.
#[derive(Debug, Clone)]
pub struct ContactRow {
    pub id: Uuid,
    pub suspended: bool,
    pub blocked: bool,
    /// Read with the rest of the row: a block bumps both accounts' versions (docs/adr/0022).
    pub contact_version: i64,
}

/// The standing of `user` and of each existing account among `others` towards `user`, in one
/// round trip: `user`'s own row (never blocked by itself) says whether it exists and is
/// suspended.
#[tracing::instrument(skip_all, fields(count = others.len()), err)]
pub async fn contacts(
    db: impl PgExecutor<'_>,
    user: Uuid,
    others: &[Uuid],
) -> Result<Vec<ContactRow>, sqlx::Error> {
    sqlx::query_as!(
        ContactRow,
        r#"SELECT a.id, a.suspended_at IS NOT NULL AS "suspended!",
                  EXISTS (SELECT 1 FROM users.blocks b
                          WHERE (b.blocker_id = $1 AND b.blocked_id = a.id)
                             OR (b.blocker_id = a.id AND b.blocked_id = $1)) AS "blocked!",
                  a.contact_version
           FROM users.accounts a WHERE a.id = $1 OR a.id = ANY($2)"#,
        user,
        others,
    )
    .fetch_all(db)
    .await
}

/// The password hash of an account, for re-authentication.
#[tracing::instrument(skip_all, err)]
pub async fn password_hash(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT password_hash FROM users.accounts WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// Replaces an account's password hash.
#[tracing::instrument(skip_all, err)]
pub async fn set_password(
    db: impl PgExecutor<'_>,
    id: Uuid,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        r#"UPDATE users.accounts SET password_hash = $2, updated_at = now() WHERE id = $1"#,
        id,
        password_hash,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes an account with its tokens, follows and blocks. The counters of the accounts on the
/// other end of its follows go down, and its followers' followee sets change version, so their
/// cached feeds drop it on the next read. Returns `None` if there was no such account, else
/// the new versions of those followee sets and the account's own contact version after it
/// (docs/adr/0022), to publish once committed.
#[tracing::instrument(skip_all, err)]
pub async fn delete(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Option<(crate::store::graph::Versions, i64)>, sqlx::Error> {
    // Lock the row first: a follow of this account racing the deletion waits, then fails on
    // the foreign key instead of leaving a counter off by one.
    let Some(contact_version) = sqlx::query_scalar!(
        r#"SELECT contact_version FROM users.accounts WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let versions = sqlx::query!(
        r#"UPDATE users.accounts a
           SET following_count = a.following_count - 1, graph_version = a.graph_version + 1
           FROM users.follows f
           WHERE f.followee_id = $1 AND a.id = f.follower_id
           RETURNING a.id, a.graph_version"#,
        id
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| (r.id, r.graph_version))
    .collect();
    sqlx::query!(
        r#"UPDATE users.accounts a
           SET followers_count = a.followers_count - 1
           FROM users.follows f
           WHERE f.follower_id = $1 AND a.id = f.followee_id"#,
        id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(r#"DELETE FROM users.accounts WHERE id = $1"#, id)
        .execute(&mut *conn)
        .await?;
    Ok(Some((versions, contact_version + 1)))
}
