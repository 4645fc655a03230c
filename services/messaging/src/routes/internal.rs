//! `/internal/v1/*`: calls from our other services, with service tokens only.

use crate::error::MessagingError;
use crate::startup::AppState;
use crate::store::accounts;
use actix_web::{HttpResponse, post, web};
use common::auth::ServiceCaller;
use common::problem::Problem;
use uuid::Uuid;

/// The users service reports a deleted account: every message it sent is tombstoned, its
/// tokens (valid until they expire) can send nothing more, and its sockets are closed on every
/// replica. Delivered at least once by the users service's outbox, so it is idempotent; a 503
/// (Redis did not take the closing for the other replicas) has the outbox try again.
#[utoipa::path(
    tag = "internal",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The deleted account")),
    responses(
        (status = 204, description = "Every message of the account is a tombstone"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the users service", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Tombstoned, but the other replicas could not be told to close its sockets: try again", body = Problem, content_type = "application/problem+json"),
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
    if let Err(e) = state.hub.close_accounts(vec![*id]).await {
        tracing::warn!(account = %id, error = %e, "deleted account's sockets not closed on other replicas");
        return Err(Problem::unavailable(
            "the other replicas could not be told to close the account's sockets; retry shortly",
        )
        .into());
    }
    Ok(HttpResponse::NoContent().finish())
}
