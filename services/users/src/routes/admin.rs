//! `/v1/admin/*`: role changes and suspension, for admins only.
//!
//! The caller's role is read from the database, not only from the token, so an admin who was
//! demoted loses these powers at once rather than when their token expires.

use crate::error::UsersError;
use crate::startup::AppState;
use crate::store::{accounts, refresh_tokens};
use actix_web::{HttpResponse, post, put, web};
use common::auth::AuthUser;
use common::problem::{FieldError, Problem};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A new role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// `user`, `moderator` or `admin`.
    pub role: String,
}

async fn require_admin(state: &AppState, user: &AuthUser) -> Result<(), UsersError> {
    let status = accounts::status(&state.db, user.id).await?;
    match status {
        Some(s) if s.role == "admin" && !s.suspended => Ok(()),
        _ => Err(UsersError::Forbidden("only admins may do this")),
    }
}

/// Sets an account's role.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = RoleBody,
    responses(
        (status = 204, description = "Role set"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/admin/users/{id}/role")]
pub async fn set_role(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: web::Json<RoleBody>,
) -> Result<HttpResponse, UsersError> {
    require_admin(&state, &user).await?;
    if !matches!(body.role.as_str(), "user" | "moderator" | "admin") {
        return Err(UsersError::Validation(vec![FieldError::new(
            "role",
            "must be user, moderator or admin",
        )]));
    }
    if !accounts::set_role(&state.db, *id, &body.role).await? {
        return Err(UsersError::NotFound);
    }
    tracing::info!(target_id = %id, role = %body.role, "role changed");
    Ok(HttpResponse::NoContent().finish())
}

/// Suspends an account: it can no longer sign in or refresh, and its refresh tokens are
/// revoked. Access tokens already issued expire within their lifetime (≤ 15 minutes).
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Suspended"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/users/{id}/suspend")]
pub async fn suspend(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    require_admin(&state, &user).await?;
    let mut tx = state.db.begin().await?;
    if !accounts::set_suspended(&mut *tx, *id, true).await? {
        return Err(UsersError::NotFound);
    }
    refresh_tokens::revoke_account(&mut *tx, *id).await?;
    tx.commit().await?;
    tracing::info!(target_id = %id, "account suspended");
    Ok(HttpResponse::NoContent().finish())
}

/// Lifts a suspension.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Reinstated"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/users/{id}/unsuspend")]
pub async fn unsuspend(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    require_admin(&state, &user).await?;
    if !accounts::set_suspended(&state.db, *id, false).await? {
        return Err(UsersError::NotFound);
    }
    tracing::info!(target_id = %id, "account reinstated");
    Ok(HttpResponse::NoContent().finish())
}
