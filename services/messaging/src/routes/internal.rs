//! `/internal/v1/*`: calls from our other services, with service tokens only.

use crate::error::MessagingError;
use crate::startup::AppState;
use crate::store::accounts;
use actix_web::{HttpResponse, post, web};
use common::auth::ServiceCaller;
use common::problem::Problem;
use uuid::Uuid;

/// The users service reports a deleted account: every message it sent is tombstoned, and its
/// tokens (valid until they expire) can send nothing more. Delivered
/// at least once by the users service's outbox, so it is idempotent.
#[utoipa::path(
    tag = "internal",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The deleted account")),
    responses(
        (status = 204, description = "Every message of the account is a tombstone"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the users service", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/internal/v1/accounts/{id}/deletion")]
pub async fn account_deleted(
    state: web::Data<AppState>,
    caller: ServiceCaller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, MessagingError> {
    caller.require("users")?;
    let mut tx = state.db.begin().await?;
    let tombstoned = accounts::depart(&mut tx, *id).await?;
    tx.commit().await?;
    tracing::info!(account = %id, tombstoned, "deleted account's messages tombstoned");
    Ok(HttpResponse::NoContent().finish())
}
