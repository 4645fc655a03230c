//! The messaging service's errors, and the one place they become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use common::problem::{FieldError, Problem};
use common::users_client::UsersClientError;

/// Everything a messaging endpoint can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// Some fields are invalid.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// A problem raised by shared code (authentication, pagination).
    #[error("{0}")]
    Problem(#[from] Problem),
    /// Not found, or not visible to the caller (not a participant).
    #[error("not found")]
    NotFound,
    /// The caller's account was deleted; its token is still valid until it expires, and can
    /// write nothing more (docs/adr/0013).
    #[error("account departed")]
    Departed,
    /// The caller is suspended and cannot send.
    #[error("account suspended")]
    Suspended,
    /// A recipient does not accept messages from the caller (suspended, or a block either way:
    /// deliberately the same answer).
    #[error("recipient unavailable")]
    RecipientUnavailable(Vec<uuid::Uuid>),
    /// Only the group's owner may do this.
    #[error("not the owner")]
    NotOwner,
    /// The operation needs a group conversation.
    #[error("not a group")]
    NotAGroup,
    /// The users service cannot answer.
    #[error("users service unavailable: {0}")]
    UsersUnavailable(String),
    /// Anything else: logged with its cause chain, answered as a bare 500.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for MessagingError {
    fn from(e: sqlx::Error) -> Self {
        match common::db::unavailable(&e) {
            Some(problem) => MessagingError::Problem(problem),
            None => MessagingError::Unexpected(anyhow::Error::new(e).context("database error")),
        }
    }
}

impl From<UsersClientError> for MessagingError {
    fn from(e: UsersClientError) -> Self {
        match e {
            UsersClientError::Unavailable(why) => MessagingError::UsersUnavailable(why),
            other => MessagingError::Unexpected(anyhow::Error::new(other)),
        }
    }
}

impl MessagingError {
    fn problem(&self) -> Problem {
        match self {
            MessagingError::Validation(errors) => Problem::validation(errors.clone()),
            MessagingError::Problem(problem) => problem.clone(),
            MessagingError::NotFound => Problem::not_found(),
            MessagingError::Departed => Problem::unauthenticated("the account no longer exists"),
            MessagingError::Suspended => {
                Problem::new(StatusCode::FORBIDDEN, "account_suspended", "Forbidden")
                    .with_detail("this account is suspended and cannot send messages")
            }
            MessagingError::RecipientUnavailable(ids) => {
                Problem::new(StatusCode::FORBIDDEN, "recipient_unavailable", "Forbidden")
                    .with_detail("this user does not accept messages")
                    .with_errors(
                        ids.iter()
                            .map(|id| {
                                FieldError::new(
                                    "participant_ids",
                                    format!("{id} does not accept messages"),
                                )
                            })
                            .collect(),
                    )
            }
            MessagingError::NotOwner => {
                Problem::new(StatusCode::FORBIDDEN, "not_owner", "Forbidden")
                    .with_detail("only the group's owner may do this")
            }
            MessagingError::NotAGroup => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_group",
                "Unprocessable request",
            )
            .with_detail("direct conversations have exactly two participants"),
            MessagingError::UsersUnavailable(_) => {
                Problem::unavailable("the users service is unavailable; retry shortly")
            }
            MessagingError::Unexpected(_) => Problem::internal(),
        }
    }
}

impl ResponseError for MessagingError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            MessagingError::Unexpected(cause) => {
                tracing::error!(error = ?cause, "unexpected error")
            }
            MessagingError::UsersUnavailable(why) => {
                tracing::warn!(%why, "users service unavailable")
            }
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
    async fn a_blocked_and_a_suspended_recipient_get_the_same_answer() {
        let id = uuid::Uuid::nil();
        let response = MessagingError::RecipientUnavailable(vec![id]).error_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body: serde_json::Value =
            serde_json::from_slice(&to_bytes(response.into_body()).await.unwrap()).unwrap();
        assert_eq!(body["code"], "recipient_unavailable");
        assert_eq!(body["detail"], "this user does not accept messages");
        assert!(!body.to_string().contains("block"));
    }

    #[actix_web::test]
    async fn a_departed_account_is_told_it_no_longer_exists() {
        let response = MessagingError::Departed.error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value =
            serde_json::from_slice(&to_bytes(response.into_body()).await.unwrap()).unwrap();
        assert_eq!(body["code"], "unauthenticated");
        assert_eq!(body["detail"], "the account no longer exists");
    }
}
