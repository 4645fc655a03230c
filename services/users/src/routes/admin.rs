//! `/v1/admin/*`: role changes, suspension and the audit log, for admins only.
//!
//! The caller's role is read from the database, not only from the token, so an admin who was
//! demoted loses these powers at once rather than when their token expires.

use crate::audit::{self, Event, RequestMeta};
use crate::error::UsersError;
use crate::startup::AppState;
use crate::store::audit as audit_store;
use crate::store::{accounts, refresh_tokens};
use actix_web::{HttpResponse, get, post, put, web};
use chrono::{DateTime, Utc};
use common::auth::AuthUser;
use common::json::Json;
use common::pagination::{Page, PageQuery};
use common::problem::{FieldError, Problem};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
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
    meta: RequestMeta,
    user: AuthUser,
    id: web::Path<Uuid>,
    body: Json<RoleBody>,
) -> Result<HttpResponse, UsersError> {
    require_admin(&state, &user).await?;
    if !matches!(body.role.as_str(), "user" | "moderator" | "admin") {
        return Err(UsersError::Validation(vec![FieldError::new(
            "role",
            "must be user, moderator or admin",
        )]));
    }
    let mut tx = state.db.begin().await?;
    if !accounts::set_role(&mut *tx, *id, &body.role).await? {
        return Err(UsersError::NotFound);
    }
    let detail = json!({"role": body.role});
    audit::record(
        &meta,
        &mut *tx,
        Event::RoleChanged,
        Some(user.id),
        Some(*id),
        detail,
    )
    .await?;
    tx.commit().await?;
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
    meta: RequestMeta,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    require_admin(&state, &user).await?;
    let mut tx = state.db.begin().await?;
    let Some(contact_version) = accounts::set_suspended(&mut *tx, *id, true).await? else {
        return Err(UsersError::NotFound);
    };
    refresh_tokens::revoke_account(&mut *tx, *id).await?;
    audit::record(
        &meta,
        &mut *tx,
        Event::Suspended,
        Some(user.id),
        Some(*id),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    // Before the 204: the suspended account's next message finds its answer outdated.
    state
        .contact_versions
        .publish(&[(*id, contact_version)])
        .await;
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
    meta: RequestMeta,
    user: AuthUser,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, UsersError> {
    require_admin(&state, &user).await?;
    let mut tx = state.db.begin().await?;
    let Some(contact_version) = accounts::set_suspended(&mut *tx, *id, false).await? else {
        return Err(UsersError::NotFound);
    };
    audit::record(
        &meta,
        &mut *tx,
        Event::Unsuspended,
        Some(user.id),
        Some(*id),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    state
        .contact_versions
        .publish(&[(*id, contact_version)])
        .await;
    tracing::info!(target_id = %id, "account reinstated");
    Ok(HttpResponse::NoContent().finish())
}

/// Filters of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events this account did or underwent.
    pub user_id: Option<Uuid>,
    /// Only events of this kind (`auth.login_failed`, `admin.suspended`, …).
    pub event: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One recorded security event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the log; later events have larger ids.
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    /// What happened.
    pub event: String,
    /// Who acted (absent when no one was signed in).
    pub actor_id: Option<Uuid>,
    /// Whom it concerned.
    pub subject_id: Option<Uuid>,
    /// The client's address.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The request's `X-Request-Id`, to find its logs and trace.
    pub request_id: Option<String>,
    /// Event-specific facts.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditPosition {
    id: i64,
}

/// The audit log, newest first.
#[utoipa::path(
    tag = "admin",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, body = Page<AuditEntry>),
        (status = 400, description = "Bad cursor or query", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or unknown event", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/admin/audit")]
pub async fn audit_log(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, UsersError> {
    require_admin(&state, &user).await?;
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let request = page.parse::<AuditPosition>()?;
    if let Some(event) = &query.event
        && !Event::ALL.iter().any(|e| e.as_str() == event)
    {
        return Err(UsersError::Validation(vec![FieldError::new(
            "event",
            "not a known event",
        )]));
    }
    let before = request.after.as_ref().map(|p| p.id);
    let rows = audit_store::list(
        &state.db,
        query.user_id,
        query.event.as_deref(),
        before,
        request.fetch_limit(),
    )
    .await?;
    let page = Page::from_rows(
        rows,
        &request,
        |r| AuditPosition { id: r.id },
        |r| AuditEntry {
            id: r.id,
            occurred_at: r.occurred_at,
            event: r.event,
            actor_id: r.actor_id,
            subject_id: r.subject_id,
            ip: r.ip,
            user_agent: r.user_agent,
            request_id: r.request_id,
            detail: r.detail,
        },
    );
    Ok(HttpResponse::Ok().json(page))
}
