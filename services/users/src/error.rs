//! The users service's errors, and the one place they become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use common::problem::{FieldError, Problem};

/// Everything a users endpoint can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Some fields are invalid.
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    /// A problem raised by shared code (authentication, pagination).
    #[error("{0}")]
    Problem(#[from] Problem),
    /// The username is taken.
    #[error("username taken")]
    UsernameTaken,
    /// The email is taken.
    #[error("email taken")]
    EmailTaken,
    /// Wrong login or password; the same answer whether or not the account exists.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A refresh token that is unknown, expired, revoked or already used.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// The account is suspended.
    #[error("account suspended")]
    Suspended,
    /// Not found, or not visible to the caller.
    #[error("not found")]
    NotFound,
    /// A user acting on themselves where that makes no sense (follow, block).
    #[error("cannot {0} yourself")]
    SelfAction(&'static str),
    /// A block exists between the two accounts.
    #[error("follow not allowed")]
    FollowNotAllowed,
    /// The follower already follows the maximum number of accounts.
    #[error("follow limit reached")]
    FollowLimit,
    /// The caller's role may not do this.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Anything else: logged with its cause chain, answered as a bare 500.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for UsersError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(problem) = common::db::unavailable(&e) {
            return UsersError::Problem(problem);
        }
        let constraint = e
            .as_database_error()
            .and_then(|d| d.constraint())
            .map(str::to_owned);
        match constraint.as_deref() {
            Some("accounts_username_key") => UsersError::UsernameTaken,
            Some("accounts_email_key") => UsersError::EmailTaken,
            _ => UsersError::Unexpected(anyhow::Error::new(e).context("database error")),
        }
    }
}

impl UsersError {
    fn problem(&self) -> Problem {
        match self {
            UsersError::Validation(errors) => Problem::validation(errors.clone()),
            UsersError::Problem(problem) => problem.clone(),
            UsersError::UsernameTaken => {
                Problem::conflict("username_taken", "this username is already taken")
                    .with_errors(vec![FieldError::new("username", "already taken")])
            }
            UsersError::EmailTaken => {
                Problem::conflict("email_taken", "an account already uses this email")
                    .with_errors(vec![FieldError::new("email", "already registered")])
            }
            UsersError::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Unauthenticated",
            )
            .with_detail("the login or the password is wrong"),
            UsersError::InvalidRefreshToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "Unauthenticated",
            )
            .with_detail("the refresh token is not valid; sign in again"),
            UsersError::Suspended => {
                Problem::new(StatusCode::FORBIDDEN, "account_suspended", "Forbidden")
                    .with_detail("this account is suspended")
            }
            UsersError::NotFound => Problem::not_found(),
            UsersError::SelfAction(verb) => {
                Problem::self_action(format!("you cannot {verb} yourself"))
            }
            UsersError::FollowNotAllowed => {
                Problem::new(StatusCode::FORBIDDEN, "follow_not_allowed", "Forbidden")
                    .with_detail("you cannot follow this account")
            }
            UsersError::FollowLimit => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "follow_limit_reached",
                "Unprocessable request",
            )
            .with_detail(format!(
                "an account can follow at most {} accounts",
                crate::store::graph::MAX_FOLLOWING
            )),
            UsersError::Forbidden(detail) => Problem::forbidden(*detail),
            UsersError::Unexpected(_) => Problem::internal(),
        }
    }
}

impl ResponseError for UsersError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        if let UsersError::Unexpected(cause) = self {
            tracing::error!(error = ?cause, "unexpected error");
        }
        self.problem().error_response()
    }
}

/// Collects field errors from parsing several fields, then fails with all of them at once.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Keeps the value, or records the error and yields `None`.
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    /// Fails with every recorded error, if any.
    pub fn finish(self) -> Result<(), UsersError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(UsersError::Validation(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn json(err: UsersError) -> (u16, serde_json::Value) {
        let response = err.error_response();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_slice(&to_bytes(response.into_body()).await.unwrap()).unwrap(),
        )
    }

    #[actix_web::test]
    async fn a_taken_username_is_a_409_naming_the_field() {
        let (status, body) = json(UsersError::UsernameTaken).await;
        assert_eq!(status, 409);
        assert_eq!(body["type"], "urn:social:problem:username_taken");
        assert_eq!(body["errors"][0]["field"], "username");
    }

    #[actix_web::test]
    async fn an_unexpected_error_hides_its_cause() {
        let (status, body) =
            json(UsersError::Unexpected(anyhow::anyhow!("password=hunter2"))).await;
        assert_eq!(status, 500);
        assert!(!body.to_string().contains("hunter2"));
    }

    #[actix_web::test]
    async fn wrong_credentials_are_a_401_with_a_stable_type() {
        let (status, body) = json(UsersError::InvalidCredentials).await;
        assert_eq!(status, 401);
        assert_eq!(body["code"], "invalid_credentials");
    }
}
