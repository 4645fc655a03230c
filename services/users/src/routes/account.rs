//! `/v1/users/me/password` and `DELETE /v1/users/me`: what an account holder may do to the
//! account itself, each confirmed with the current password.

use crate::audit::{self, Event, RequestMeta};
use crate::domain::Password;
use crate::error::{FieldErrors, UsersError};
use crate::passwords;
use crate::startup::AppState;
use crate::store::{accounts, outbox, refresh_tokens};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, delete, put, web};
use common::auth::AuthUser;
use common::json::Json;
use common::problem::{FieldError, Problem};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

/// The services that hold data of an account and must forget it when it is deleted.
pub const DELETION_TARGETS: [&str; 2] = ["posts", "messaging"];

/// A new password, confirmed with the current one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password in use now: 1–128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub current_password: String,
    /// 8–128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

/// The password, confirming a deletion.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletionBody {
    /// The account's password: 1–128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub password: String,
}

/// Checks `offered` against the account's password. Attempts count against the same quota as
/// sign-ins at this account, so a stolen access token cannot be used to guess the password.
async fn confirm_password(
    state: &AppState,
    user: &AuthUser,
    field: &'static str,
    offered: &str,
) -> Result<(), UsersError> {
    state
        .limiter
        .enforce(
            "login-account",
            state.limits.login_account,
            &user.id.to_string(),
        )
        .await?;
    let offered = Password::offered(offered)
        .map_err(|e| UsersError::Validation(vec![FieldError::new(field, e.message)]))?;
    let hash = accounts::password_hash(&state.db, user.id)
        .await?
        .ok_or(UsersError::NotFound)?;
    if passwords::verify(offered.expose().to_owned(), hash).await? {
        Ok(())
    } else {
        Err(UsersError::Problem(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_password",
                "Wrong password",
            )
            .with_detail("the password is not this account's password")
            .with_errors(vec![FieldError::new(
                field,
                "is not this account's password",
            )]),
        ))
    }
}

/// Changes your password. Every refresh token of the account is revoked: other sessions end
/// when their access token expires (≤ 15 minutes); sign in again to continue.
#[utoipa::path(
    tag = "profiles",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong current password or invalid new one", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    )
)]
#[put("/v1/users/me/password")]
pub async fn change_password(
    state: web::Data<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    body: Json<PasswordChange>,
) -> Result<HttpResponse, UsersError> {
    let mut errors = FieldErrors::default();
    let new = errors.check(
        Password::parse(&body.new_password).map_err(|e| FieldError::new("new_password", e.message)),
    );
    errors.finish()?;
    let Some(new) = new else {
        return Err(anyhow::anyhow!("field checks passed without values").into());
    };
    confirm_password(&state, &user, "current_password", &body.current_password).await?;
    let hash = passwords::hash(new.expose().to_owned()).await?;
    let mut tx = state.db.begin().await?;
    if !accounts::set_password(&mut *tx, user.id, &hash).await? {
        return Err(UsersError::NotFound);
    }
    refresh_tokens::revoke_account(&mut *tx, user.id).await?;
    audit::record(
        &meta,
        &mut *tx,
        Event::PasswordChanged,
        Some(user.id),
        Some(user.id),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes your account. Your profile, tokens, follows and blocks go at once; your posts and
/// likes are deleted and your messages tombstoned by the posts and messaging services, which
/// learn of it through the outbox (within seconds, or as soon as they are back if they are
/// down). Access tokens already issued stop working within their lifetime (≤ 15 minutes).
#[utoipa::path(
    tag = "profiles",
    security(("bearer" = [])),
    request_body = DeletionBody,
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Already deleted", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/users/me")]
pub async fn delete_me(
    state: web::Data<AppState>,
    meta: RequestMeta,
    user: AuthUser,
    body: Json<DeletionBody>,
) -> Result<HttpResponse, UsersError> {
    confirm_password(&state, &user, "password", &body.password).await?;
    let mut tx = state.db.begin().await?;
    let Some((versions, contact_version)) = accounts::delete(&mut tx, user.id).await? else {
        return Err(UsersError::NotFound);
    };
    outbox::enqueue(&mut *tx, &DELETION_TARGETS, "account_deleted", user.id).await?;
    audit::record(
        &meta,
        &mut *tx,
        Event::AccountDeleted,
        Some(user.id),
        Some(user.id),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    state
        .contact_versions
        .publish(&[(user.id, contact_version)])
        .await;
    state.graph_versions.publish(&versions).await;
    state.outbox_wake.notify_one();
    tracing::info!(user_id = %user.id, "account deleted");
    Ok(HttpResponse::NoContent().finish())
}
