//! `/v1/users/{id}/follow`, `/block`, `/followers`, `/following`, `/following/ids`.

use crate::error::UsersError;
use crate::startup::AppState;
use crate::store::graph::{self, EdgeRow, FollowOutcome};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, put, web};
use chrono::{DateTime, Utc};
use common::auth::AuthUser;
use common::graph_versions;
use common::pagination::{Page, PageQuery};
use common::problem::Problem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// An account in a followers or following list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FollowEdge {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    /// When the follow happened.
    pub followed_at: DateTime<Utc>,
}

/// Every followee of an account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FolloweeIds {
    /// All of them: an account follows at most 10,000 others.
    pub ids: Vec<Uuid>,
}

/// Keyset position in a follow listing.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgePosition {
    at: DateTime<Utc>,
    id: Uuid,
}

fn edge_page(
    rows: Vec<EdgeRow>,
    request: &common::pagination::PageRequest<EdgePosition>,
) -> Page<FollowEdge> {
    Page::from_rows(
        rows,
        request,
        |r| EdgePosition {
            at: r.followed_at,
            id: r.id,
        },
        |r| FollowEdge {
            id: r.id,
            username: r.username,
            display_name: r.display_name,
            followed_at: r.followed_at,
        },
    )
}

/// Follows an account. Idempotent.
#[utoipa::path(
    tag = "graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Following"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A block exists between you", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Yourself, or the follow limit is reached", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many follows", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/users/{id}/follow")]
pub async fn follow(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    if *id == user.id {
        return Err(UsersError::SelfAction("follow"));
    }
    let quota = state.limits.follow;
    state
        .limiter
        .enforce("follow", quota, &user.id.to_string())
        .await?;
    let mut tx = state.db.begin().await?;
    let (outcome, versions) = graph::follow(&mut tx, user.id, *id).await?;
    tx.commit().await?;
    // Before the answer: a feed read after this 204 must find the new version.
    state.graph_versions.publish(&versions).await;
    match outcome {
        FollowOutcome::Following => Ok(HttpResponse::NoContent().finish()),
        FollowOutcome::UnknownAccount => Err(UsersError::NotFound),
        FollowOutcome::Blocked => Err(UsersError::FollowNotAllowed),
        FollowOutcome::LimitReached => Err(UsersError::FollowLimit),
    }
}

/// Stops following an account. Idempotent.
#[utoipa::path(
    tag = "graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Not following"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Yourself", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/users/{id}/follow")]
pub async fn unfollow(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    if *id == user.id {
        return Err(UsersError::SelfAction("unfollow"));
    }
    let mut tx = state.db.begin().await?;
    let changed = graph::unfollow(&mut tx, user.id, *id).await?;
    tx.commit().await?;
    let versions = changed.ok_or(UsersError::NotFound)?;
    state.graph_versions.publish(&versions).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Blocks an account: follows both ways are removed, and new ones refused. Idempotent.
#[utoipa::path(
    tag = "graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Blocked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Yourself", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/users/{id}/block")]
pub async fn block(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    if *id == user.id {
        return Err(UsersError::SelfAction("block"));
    }
    let mut tx = state.db.begin().await?;
    let changed = graph::block(&mut tx, user.id, *id).await?;
    tx.commit().await?;
    let changed = changed.ok_or(UsersError::NotFound)?;
    // Before the 204: the blocked account's next message finds its answer outdated.
    state.contact_versions.publish(&changed.contacts).await;
    state.graph_versions.publish(&changed.followee_sets).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Lifts a block. Idempotent.
#[utoipa::path(
    tag = "graph",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Not blocked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Yourself", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/users/{id}/block")]
pub async fn unblock(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    if *id == user.id {
        return Err(UsersError::SelfAction("unblock"));
    }
    let mut tx = state.db.begin().await?;
    let changed = graph::unblock(&mut tx, user.id, *id).await?;
    tx.commit().await?;
    let versions = changed.ok_or(UsersError::NotFound)?;
    state.contact_versions.publish(&versions).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Who follows an account, newest first.
#[utoipa::path(
    tag = "graph",
    params(("id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = Page<FollowEdge>),
        (status = 400, description = "Bad cursor or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/users/{id}/followers")]
pub async fn followers(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, UsersError> {
    let request = page.parse::<EdgePosition>()?;
    if !graph::exists(&state.db, *id).await? {
        return Err(UsersError::NotFound);
    }
    let after = request.after.as_ref().map(|p| (p.at, p.id));
    let rows = graph::followers(&state.db, *id, after, request.fetch_limit()).await?;
    Ok(HttpResponse::Ok().json(edge_page(rows, &request)))
}

/// Whom an account follows, newest first.
#[utoipa::path(
    tag = "graph",
    params(("id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = Page<FollowEdge>),
        (status = 400, description = "Bad cursor or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/users/{id}/following")]
pub async fn following(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, UsersError> {
    let request = page.parse::<EdgePosition>()?;
    if !graph::exists(&state.db, *id).await? {
        return Err(UsersError::NotFound);
    }
    let after = request.after.as_ref().map(|p| (p.at, p.id));
    let rows = graph::following(&state.db, *id, after, request.fetch_limit()).await?;
    Ok(HttpResponse::Ok().json(edge_page(rows, &request)))
}

/// Every account id an account follows — the input of the home feed. Complete: an account
/// follows at most 10,000 others. The `ETag` changes with every follow, unfollow or block that
/// changes the set; `If-None-Match` with the current one is answered 304, so a caller may keep
/// the list cached and still see every change on its next request.
#[utoipa::path(
    tag = "graph",
    params(("id" = Uuid, Path), ("If-None-Match" = Option<String>, Header, description = "ETag of a cached copy")),
    responses(
        (status = 200, body = FolloweeIds, headers(("ETag" = String))),
        (status = 304, description = "The cached copy is current", headers(("ETag" = String))),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/users/{id}/following/ids")]
pub async fn following_ids(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    request: HttpRequest,
) -> Result<HttpResponse, UsersError> {
    // The version is read before the ids: a follow landing in between yields ids newer than
    // their ETag (harmless), never an ETag newer than its ids (which would hide the follow).
    let version = state
        .statements
        .run(async |db| graph::graph_version(db, *id).await)
        .await?
        .ok_or(UsersError::NotFound)?;
    let etag = graph_versions::etag(version);
    let cached = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    // Readers trust the published version instead of asking while it matches their copy; this
    // answer is current as of the version read, so it is published (it never lowers one).
    state.graph_versions.publish(&[(*id, version)]).await;
    if cached == Some(etag.as_str()) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    let ids = state
        .statements
        .run(async |db| graph::following_ids(db, *id).await)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .json(FolloweeIds { ids }))
}
