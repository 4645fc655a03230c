//! The posts service's errors, and the one place they become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use common::problem::{FieldError, Problem};
use common::users_client::UsersClientError;

/// Everything a posts endpoint can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum PostsError {
    /// Some fields are invalid.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// A problem raised by shared code (authentication, pagination).
    #[error("{0}")]
    Problem(#[from] Problem),
    /// Not found, or not the caller's to change.
    #[error("not found")]
    NotFound,
    /// `reply_to` names no post.
    #[error("reply target not found")]
    ReplyTargetMissing,
    /// A request with the same idempotency key is being processed.
    #[error("idempotency key in flight")]
    IdempotencyInFlight,
    /// The idempotency key was used with another body.
    #[error("idempotency key reused with another body")]
    IdempotencyMismatch,
    /// The users service cannot answer and nothing cached can stand in.
    #[error("users service unavailable: {0}")]
    UsersUnavailable(String),
    /// Anything else: logged with its cause chain, answered as a bare 500.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PostsError {
    fn from(e: sqlx::Error) -> Self {
        match common::db::unavailable(&e) {
            Some(problem) => PostsError::Problem(problem),
            None => PostsError::Unexpected(anyhow::Error::new(e).context("database error")),
        }
    }
}

impl From<UsersClientError> for PostsError {
    fn from(e: UsersClientError) -> Self {
        match e {
            UsersClientError::Unavailable(why) => PostsError::UsersUnavailable(why),
            other => PostsError::Unexpected(anyhow::Error::new(other)),
        }
    }
}

impl PostsError {
    fn problem(&self) -> Problem {
        match self {
            PostsError::Validation(errors) => Problem::validation(errors.clone()),
            PostsError::Problem(problem) => problem.clone(),
            PostsError::NotFound => Problem::not_found(),
            PostsError::ReplyTargetMissing => {
                Problem::unknown_reference("reply_to", "no such post")
            }
            PostsError::IdempotencyInFlight => Problem::conflict(
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            )
            .with_retry_after(1),
            PostsError::IdempotencyMismatch => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Unprocessable request",
            )
            .with_detail("this Idempotency-Key was used with a different request body"),
            PostsError::UsersUnavailable(_) => {
                Problem::unavailable("the users service is unavailable; retry shortly")
            }
            PostsError::Unexpected(_) => Problem::internal(),
        }
    }
}

impl ResponseError for PostsError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            PostsError::Unexpected(cause) => tracing::error!(error = ?cause, "unexpected error"),
            PostsError::UsersUnavailable(why) => tracing::warn!(%why, "users service unavailable"),
            _ => {}
        }
        self.problem().error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn users_unavailable_is_a_503_with_retry_after_and_no_cause() {
        let response =
            PostsError::UsersUnavailable("connection refused at 10.0.0.1".into()).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let body = to_bytes(response.into_body()).await.unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("10.0.0.1"));
    }

    #[actix_web::test]
    async fn a_key_in_flight_is_a_409_and_a_reused_key_a_422() {
        assert_eq!(
            PostsError::IdempotencyInFlight.error_response().status(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            PostsError::IdempotencyMismatch.error_response().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
