//! RFC 9457 problem details: the one error body every service answers with.
//!
//! A [`Problem`] carries a stable `type` URI and a snake_case `code` that clients can branch on,
//! a human `title` and `detail`, and, for validation failures, `errors: [{field, message}]`.
//! Internal causes never go into a problem; services log them where they map their error enum.
//! The extractor configurations here make actix's own failures (bad JSON, wrong content type,
//! body too large, bad path or query) answer as problem+json too. See docs/adr/0004-problem-json.md.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of every problem `type`; the code follows it.
pub const TYPE_PREFIX: &str = "urn:social:problem:";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as named in the request (`username`, `limit`).
    pub field: String,
    /// What is wrong with it, for a human.
    pub message: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem: `urn:social:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status, repeated for clients that lose it.
    pub status: u16,
    /// What happened this time, for a human.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The same kind as `type`, as a snake_case token.
    pub code: String,
    /// The invalid fields, for validation problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// Further response headers (the rate-limit ones of a 429).
    #[serde(skip)]
    pub headers: Vec<(&'static str, String)>,
}

impl Problem {
    /// A problem of kind `code` answered with `status`.
    pub fn new(status: StatusCode, code: &str, title: &str) -> Self {
        Self {
            type_uri: format!("{TYPE_PREFIX}{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            code: code.to_owned(),
            errors: Vec::new(),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// Adds the human explanation of this occurrence.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds field errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Adds a `Retry-After` header, in seconds.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 422: the request was well-formed but some fields are invalid.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Validation failed",
        )
        .with_detail("one or more fields are invalid")
        .with_errors(errors)
    }

    /// 422: parameters or fields that are each valid but not together (a cursor and a position,
    /// a title on a direct conversation). JSON Schema cannot say this; the type tells it apart.
    pub fn conflicting(detail: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "conflicting_parameters",
            "Conflicting parameters",
        )
        .with_detail(detail)
        .with_errors(errors)
    }

    /// 422: a well-formed id in the body that names nothing (the post a reply answers, a
    /// participant). Whether it does depends on the data, not on the request's shape.
    pub fn unknown_reference(field: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_reference",
            "Unknown reference",
        )
        .with_errors(vec![FieldError::new(field, detail.clone())])
        .with_detail(detail)
    }

    /// 422: an action aimed at yourself that only makes sense towards someone else (following,
    /// blocking, a conversation with nobody but you). Whether an id is yours depends on who asks.
    pub fn self_action(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "self_action",
            "Unprocessable request",
        )
        .with_detail(detail)
    }

    /// 400: a malformed request.
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Bad request").with_detail(detail)
    }

    /// 404: nothing here, or nothing the caller may see.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found")
            .with_detail("the resource does not exist")
    }

    /// 401: no valid credentials.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Unauthenticated",
        )
        .with_detail(detail)
    }

    /// 403: valid credentials that may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(detail)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, "Conflict").with_detail(detail)
    }

    /// 500: something failed on our side. The cause is logged by the caller, not sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal server error",
        )
        .with_detail("an unexpected error occurred; it has been logged")
    }

    /// 503: a dependency is unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable",
        )
        .with_detail(detail)
        .with_retry_after(1)
    }

    /// The status as an actix type.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.title, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        Problem::status_code(self)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(Problem::status_code(self));
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.insert_header((*name, value));
            }
        }
        if self.status == 401 {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            ));
        }
        response.body(serde_json::to_string(self).unwrap_or_default())
    }
}

/// JSON extractor configuration: body limit, and problem+json for every failure.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| json_error(&err).into())
}

fn json_error(err: &JsonPayloadError) -> Problem {
    match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            )
            .with_detail("the request body is larger than this endpoint accepts")
        }
        JsonPayloadError::ContentType => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
        )
        .with_detail("the request body must be sent as application/json"),
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            let field = field_of_serde_message(&e.to_string());
            Problem::validation(vec![FieldError::new(field, strip_position(&e.to_string()))])
        }
        JsonPayloadError::Deserialize(e) => {
            Problem::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        }
        _ => Problem::bad_request("malformed_body", "the request body could not be read"),
    }
}

/// serde names the field in backticks: "missing field `username`", "unknown field `x`".
/// Errors on a present field name no field; they are reported on the body as a whole.
fn field_of_serde_message(message: &str) -> String {
    let named = message.starts_with("missing field") || message.starts_with("unknown field");
    match (named, message.split('`').nth(1)) {
        (true, Some(field)) => field.to_owned(),
        _ => "body".to_owned(),
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Path extractor configuration: a malformed path parameter is a 404, as for any unknown
/// resource, so that `/v1/users/not-a-uuid` and `/v1/users/<unknown uuid>` answer alike.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| Problem::not_found().into())
}

/// Query extractor configuration: a malformed query string is a 400 naming the problem.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        Problem::bad_request("invalid_query", strip_position(&err.to_string())).into()
    })
}

/// Default service for unmatched routes: problem+json 405 with `Allow` when the path is a known
/// route's (see [`crate::openapi::KnownRoutes`]) and the method is not one of its, else 404.
pub async fn not_found_handler(req: HttpRequest) -> HttpResponse {
    let allowed = req
        .app_data::<web::Data<crate::openapi::KnownRoutes>>()
        .and_then(|routes| crate::openapi::methods_of(&routes.0, req.path()))
        .filter(|methods| !methods.is_empty() && !methods.contains(&req.method().as_str()));
    match allowed {
        Some(methods) => {
            let mut response = Problem::new(
                actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            )
            .with_detail(format!("this resource allows {}", methods.join(", ")))
            .error_response();
            if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        None => Problem::not_found().error_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body_of(problem: Problem) -> serde_json::Value {
        let response = problem.error_response();
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        serde_json::from_slice(&to_bytes(response.into_body()).await.unwrap()).unwrap()
    }

    #[actix_web::test]
    async fn a_validation_problem_has_the_rfc_9457_shape_with_field_errors() {
        let body = body_of(Problem::validation(vec![FieldError::new(
            "username",
            "too short",
        )]))
        .await;
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:social:problem:validation_failed",
                "title": "Validation failed",
                "status": 422,
                "detail": "one or more fields are invalid",
                "code": "validation_failed",
                "errors": [{"field": "username", "message": "too short"}]
            })
        );
    }

    #[actix_web::test]
    async fn an_internal_problem_says_nothing_about_the_cause() {
        let body = body_of(Problem::internal()).await;
        assert_eq!(body["status"], 500);
        assert_eq!(body["code"], "internal_error");
        assert!(body.get("errors").is_none());
    }

    #[test]
    fn unavailable_carries_a_retry_after_header() {
        let response = Problem::unavailable("down").error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
    }

    #[test]
    fn serde_messages_name_the_missing_or_unknown_field() {
        assert_eq!(
            field_of_serde_message("missing field `email` at line 1 column 2"),
            "email"
        );
        assert_eq!(
            field_of_serde_message("unknown field `x`, expected one of"),
            "x"
        );
        assert_eq!(
            field_of_serde_message("invalid type: integer `3`, expected a string"),
            "body"
        );
    }
}
