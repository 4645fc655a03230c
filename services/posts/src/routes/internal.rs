//! `/internal/v1/*`: calls from our other services, with service tokens only.

use crate::error::PostsError;
use crate::hot_posts::Change;
use crate::startup::AppState;
use crate::store::accounts;
use actix_web::{HttpResponse, post, web};
use common::auth::ServiceCaller;
use common::problem::Problem;
use uuid::Uuid;

/// The users service reports a deleted account: its posts and likes are deleted. Delivered at
/// least once by the users service's outbox, so it is idempotent.
#[utoipa::path(
    tag = "internal",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The deleted account")),
    responses(
        (status = 204, description = "Nothing of the account is left"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the users service", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/internal/v1/accounts/{id}/deletion")]
pub async fn account_deleted(
    state: web::Data<AppState>,
    caller: ServiceCaller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, PostsError> {
    caller.require("users")?;
    let mut tx = state.db.begin().await?;
    let forgotten = accounts::forget(&mut tx, *id).await?;
    tx.commit().await?;
    // Its posts are gone, and the counts of the posts it liked or replied to changed.
    state.hot_posts.publish(&[Change::All]).await;
    tracing::info!(account = %id, posts = forgotten.posts, likes = forgotten.likes, "deleted account forgotten");
    Ok(HttpResponse::NoContent().finish())
}
