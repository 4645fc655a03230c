//! `/internal/v1/*`: endpoints for our other services only (service tokens; user tokens → 403).

use crate::audit::Event;
use crate::error::UsersError;
use crate::startup::AppState;
use crate::store::{accounts, audit};
use actix_web::{HttpResponse, get, post, web};
use common::auth::ServiceCaller;
use common::json::Json;
use common::problem::FieldError;
use common::problem::Problem;
use common::users_client::{AuditReport, Contactability, ContactabilityRequest};
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

/// Whether `id` may message each of `user_ids`: which of them are unknown, and which are
/// unavailable (suspended, or a block either way — deliberately not told apart).
#[utoipa::path(
    tag = "internal",
    security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    request_body = ContactabilityRequest,
    responses(
        (status = 200, body = Contactability),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a service token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such sender", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/internal/v1/users/{id}/contactability")]
pub async fn contactability(
    state: web::Data<AppState>,
    _caller: ServiceCaller,
    id: web::Path<Uuid>,
    body: Json<ContactabilityRequest>,
) -> Result<HttpResponse, UsersError> {
    if body.user_ids.len() > 100 {
        return Err(UsersError::Validation(vec![FieldError::new(
            "user_ids",
            "at most 100 ids",
        )]));
    }
    let rows = state
        .statements
        .run(async |db| accounts::contacts(db, *id, &body.user_ids).await)
        .await?;
    let sender = rows
        .iter()
        .find(|r| r.id == *id)
        .ok_or(UsersError::NotFound)?;
    let found: Vec<_> = rows
        .iter()
        .filter(|r| body.user_ids.contains(&r.id))
        .collect();
    let unknown = body
        .user_ids
        .iter()
        .filter(|u| !found.iter().any(|f| f.id == **u))
        .copied()
        .collect();
    let unavailable = found
        .iter()
        .filter(|f| f.suspended || f.blocked)
        .map(|f| f.id)
        .collect();
    // The versions read with the answer, published so that the asker can tell on its next
    // send whether the answer still holds (docs/adr/0022). Not awaited: until they are written
    // the asker just asks again, and raising never lowers a newer version a change wrote.
    let versions: Vec<(Uuid, i64)> = std::iter::once((*id, sender.contact_version))
        .chain(found.iter().map(|f| (f.id, f.contact_version)))
        .collect();
    let publisher = state.contact_versions.clone();
    let published = versions.clone();
    tokio::spawn(async move { publisher.publish(&published).await });
    Ok(HttpResponse::Ok().json(Contactability {
        suspended: sender.suspended,
        unknown,
        unavailable,
        versions: versions.into_iter().collect(),
    }))
}

/// Events other services may report, by reporter.
const REPORTABLE: [(&str, Event); 1] = [("posts", Event::ModerationPostDeleted)];

/// Records a security event another service reports (posts reports moderation). Idempotent on
/// `source_id`: reports are delivered at least once.
#[utoipa::path(
    tag = "internal",
    security(("bearer" = [])),
    request_body = AuditReport,
    responses(
        (status = 204, description = "Recorded (now or before)"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a service token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An event this service may not report, or invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/internal/v1/audit")]
pub async fn report_audit(
    state: web::Data<AppState>,
    caller: ServiceCaller,
    body: Json<AuditReport>,
) -> Result<HttpResponse, UsersError> {
    let allowed = REPORTABLE
        .iter()
        .any(|(reporter, event)| *reporter == caller.name && event.as_str() == body.event);
    let mut errors = Vec::new();
    if !allowed {
        errors.push(FieldError::new(
            "event",
            "not an event this service may report",
        ));
    }
    if body.source_id.is_empty() || body.source_id.len() > 200 {
        errors.push(FieldError::new("source_id", "must be 1 to 200 characters"));
    }
    if body
        .ip
        .as_deref()
        .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_err())
    {
        errors.push(FieldError::new("ip", "must be an IP address"));
    }
    if !errors.is_empty() {
        return Err(UsersError::Validation(errors));
    }
    let mut report = body.into_inner();
    report.source_id = format!("{}:{}", caller.name, report.source_id);
    audit::append_reported(&state.db, &report).await?;
    Ok(HttpResponse::NoContent().finish())
}
