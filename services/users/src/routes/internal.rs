//! `/internal/v1/*`: endpoints for our other services only (service tokens; user tokens → 403).

use crate::error::UsersError;
use crate::startup::AppState;
use crate::store::accounts;
use actix_web::{HttpResponse, get, web};
use common::auth::ServiceCaller;
use common::problem::Problem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What another service may need to know about an account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountStanding {
    pub id: Uuid,
    /// `user`, `moderator` or `admin`.
    pub role: String,
    /// Whether the account is suspended.
    pub suspended: bool,
}

/// An account's role and suspension.
#[utoipa::path(
    tag = "internal",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = AccountStanding),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a service token", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/internal/v1/users/{id}")]
pub async fn account(
    state: web::Data<AppState>,
    caller: ServiceCaller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    let status = accounts::status(&state.db, *id)
        .await?
        .ok_or(UsersError::NotFound)?;
    tracing::debug!(caller = %caller.name, "internal account lookup");
    Ok(HttpResponse::Ok().json(AccountStanding {
        id: *id,
        role: status.role,
        suspended: status.suspended,
    }))
}
