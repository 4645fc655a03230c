//! `/v1/posts` and `/v1/posts/{id}`: create (idempotently), read, edit, delete, like.

use crate::domain::{IdempotencyKey, PostText};
use crate::error::PostsError;
use crate::hot_posts::Change;
use crate::recent_heads::Posted;
use crate::startup::AppState;
use crate::store::posts::Creation;
use crate::store::{accounts, likes, posts};
use crate::views::{self, PostView};
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, put, web};
use common::auth::{AuthUser, MaybeAuthUser};
use common::json::Json;
use common::problem::Problem;
use common::telemetry::call_context_of;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

/// A new post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePost {
    /// 1–500 characters, not only whitespace, no NUL.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    pub text: String,
    /// The post this replies to.
    pub reply_to: Option<Uuid>,
}

/// New text for a post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditPost {
    /// 1–500 characters, not only whitespace, no NUL.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    pub text: String,
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, PostsError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let raw = value.to_str().unwrap_or("\u{0}");
    IdempotencyKey::parse(raw)
        .map(Some)
        .map_err(|e| PostsError::Validation(vec![e]))
}

/// Creates a post. With an `Idempotency-Key`, a retry within 24 hours returns the original 201
/// and creates nothing; the same key with another body is a 422; a retry while the first
/// request is still being processed is a 409.
#[utoipa::path(
    tag = "posts",
    security(("bearer" = [])),
    request_body = CreatePost,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1–255 visible ASCII characters: one key per logical request")),
    responses(
        (status = 201, body = PostView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Same key still in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, unknown reply_to, or key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many posts", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The users service is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/posts")]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    body: Json<CreatePost>,
) -> Result<HttpResponse, PostsError> {
    let text = PostText::parse(&body.text).map_err(|e| PostsError::Validation(vec![e]))?;
    let key = idempotency_key(&req)?;
    let quota = state.post_create;
    state
        .limiter
        .enforce("post-create", quota, &user.id.to_string())
        .await?;
    let request_hash =
        Sha256::digest(json!({"text": text.as_str(), "reply_to": body.reply_to}).to_string())
            .to_vec();
    let departed = || Problem::unauthenticated("the account no longer exists");
    // The author's summary is fetched before the write: no lock is held over a call.
    let ctx = call_context_of(&req);
    let author = state
        .directory
        .authors(&[user.id], &ctx)
        .await?
        .remove(&user.id)
        .ok_or_else(departed)?;

    let author_view = serde_json::to_value(&author).map_err(anyhow::Error::from)?;
    let key = key
        .as_ref()
        .map(|key| (key.as_str(), request_hash.as_slice()));
    // The locks, the checks, the post and the key's outcome: one call, which commits
    // (docs/adr/0033). On the writes' pool, so that commits waiting for the disk never hold
    // the connections reads are served from (docs/adr/0023).
    let creation = posts::create(
        &state.db,
        user.id,
        author_view,
        text.as_str(),
        body.reply_to,
        key,
    )
    .await?;
    // The function builds the view in SQL; it is read back as the view it must be, so both
    // answers serialize as every other PostView does.
    let read_back = |view| serde_json::from_value::<PostView>(view).map_err(anyhow::Error::from);
    let view = match creation {
        Creation::Created(view) => read_back(view)?,
        Creation::Replayed(first) => {
            return Ok(HttpResponse::Created()
                .insert_header(("idempotent-replayed", "true"))
                .json(read_back(first)?));
        }
        Creation::KeyReused => return Err(PostsError::IdempotencyMismatch),
        Creation::InFlight => return Err(PostsError::IdempotencyInFlight),
        Creation::Departed => return Err(departed().into()),
        Creation::ReplyTargetMissing => return Err(PostsError::ReplyTargetMissing),
    };
    let posted = Posted {
        author: user.id,
        at: view.created_at,
        root: view.reply_to.is_none(),
    };
    // Committed: this process moves the head (and forgets a replied-to post) now, and the
    // answer does not wait for Redis to tell the others (docs/adr/0028, amendment).
    state.recent_heads.publish_detached(posted);
    if let Some(parent) = view.reply_to {
        state.hot_posts.publish_detached(vec![Change::Post(parent)]);
    }
    Ok(HttpResponse::Created().json(view))
}

/// One post.
#[utoipa::path(
    tag = "posts",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = PostView),
        (status = 401, description = "A token was sent and is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/posts/{id}")]
pub async fn show(
    state: web::Data<AppState>,
    viewer: MaybeAuthUser,
    id: web::Path<Uuid>,
    req: HttpRequest,
) -> Result<HttpResponse, PostsError> {
    let viewer = viewer.0.map(|u| u.id);
    // A reader who is not signed in sees what every such reader sees: the row this process
    // keeps (docs/adr/0027-posts-in-process.md). A signed-in reader's page says whether they
    // like the post, which only PostgreSQL knows.
    let kept = match viewer {
        None => state.hot_posts.lookup(*id).map_err(Some),
        Some(_) => Err(None),
    };
    let row = match kept {
        Ok(row) => row,
        Err(ticket) => {
            let row = state
                .statements
                .run(async |db| posts::by_id(db, *id, viewer).await)
                .await?
                .ok_or(PostsError::NotFound)?;
            if let Some(ticket) = ticket {
                state.hot_posts.keep(ticket, &row);
            }
            row
        }
    };
    let view = views::render(&state, vec![row], viewer, &call_context_of(&req)).await?;
    let view = view.into_iter().next().ok_or(PostsError::NotFound)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Edits your own post.
#[utoipa::path(
    tag = "posts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = EditPost,
    responses(
        (status = 200, body = PostView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such post of yours", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/v1/posts/{id}")]
pub async fn edit(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
    req: HttpRequest,
    body: Json<EditPost>,
) -> Result<HttpResponse, PostsError> {
    let text = PostText::parse(&body.text).map_err(|e| PostsError::Validation(vec![e]))?;
    let row = posts::edit(&state.db, *id, user.id, text.as_str())
        .await?
        .ok_or(PostsError::NotFound)?;
    state.hot_posts.publish(&[Change::Post(row.id)]).await;
    let view = views::render(&state, vec![row], Some(user.id), &call_context_of(&req)).await?;
    Ok(HttpResponse::Ok().json(view.into_iter().next().ok_or(PostsError::NotFound)?))
}

/// Deletes a post: your own, or anyone's if you are a moderator or admin (recorded).
#[utoipa::path(
    tag = "posts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such post you may delete", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/posts/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    meta: common::request_meta::RequestMeta,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, PostsError> {
    let mut tx = state.db.begin().await?;
    let only_author = if user.role.can_moderate() {
        None
    } else {
        Some(user.id)
    };
    let deleted = posts::delete(&mut tx, *id, only_author)
        .await?
        .ok_or(PostsError::NotFound)?;
    if deleted.author_id != user.id {
        posts::record_moderation(&mut tx, &deleted, user.id, &meta).await?;
        tracing::info!(post_id = %deleted.id, author_id = %deleted.author_id, "post removed by moderation");
    }
    tx.commit().await?;
    let mut changes = vec![Change::Deleted(deleted.id)];
    changes.extend(deleted.reply_to.map(Change::Post));
    state.hot_posts.publish(&changes).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Likes a post. Idempotent.
#[utoipa::path(
    tag = "posts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Liked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/posts/{id}/like")]
pub async fn like(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, PostsError> {
    let mut tx = state.db.begin().await?;
    if !accounts::hold_for_write(&mut tx, user.id).await? {
        return Err(Problem::unauthenticated("the account no longer exists").into());
    }
    let found = likes::like(&mut tx, *id, user.id).await?;
    tx.commit().await?;
    if found {
        state.hot_posts.publish(&[Change::Post(*id)]).await;
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(PostsError::NotFound)
    }
}

/// Takes a like back. Idempotent.
#[utoipa::path(
    tag = "posts",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Not liked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/posts/{id}/like")]
pub async fn unlike(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, PostsError> {
    let mut tx = state.db.begin().await?;
    let found = likes::unlike(&mut tx, *id, user.id).await?;
    tx.commit().await?;
    if found {
        state.hot_posts.publish(&[Change::Post(*id)]).await;
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(PostsError::NotFound)
    }
}
