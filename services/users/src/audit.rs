//! What the audit log records about a request, and the events it knows.

use crate::store::audit::{self, NewEntry};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use common::ratelimit::RateLimiter;
use sqlx::PgExecutor;
use std::future::{Ready, ready};
use uuid::Uuid;

/// Longest `User-Agent` kept; the rest is cut off.
const MAX_USER_AGENT: usize = 512;

/// The security events the log records, with their stable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Registered,
    LoginSucceeded,
    LoginFailed,
    RefreshTokenReused,
    LoggedOut,
    PasswordChanged,
    RoleChanged,
    Suspended,
    Unsuspended,
    AccountDeleted,
}

impl Event {
    /// The name stored and filtered on.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Registered => "account.registered",
            Event::LoginSucceeded => "auth.login_succeeded",
            Event::LoginFailed => "auth.login_failed",
            Event::RefreshTokenReused => "auth.refresh_token_reused",
            Event::LoggedOut => "auth.logged_out",
            Event::PasswordChanged => "account.password_changed",
            Event::RoleChanged => "admin.role_changed",
            Event::Suspended => "admin.suspended",
            Event::Unsuspended => "admin.unsuspended",
            Event::AccountDeleted => "account.deleted",
        }
    }

    /// Every event, for validating filters.
    pub const ALL: [Event; 10] = [
        Event::Registered,
        Event::LoginSucceeded,
        Event::LoginFailed,
        Event::RefreshTokenReused,
        Event::LoggedOut,
        Event::PasswordChanged,
        Event::RoleChanged,
        Event::Suspended,
        Event::Unsuspended,
        Event::AccountDeleted,
    ];
}

/// Where a request came from: its client address (as the rate limiter sees it, through
/// `TRUSTED_PROXY_HOPS`), user agent and request id.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl FromRequest for RequestMeta {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let hops = req
            .app_data::<web::Data<RateLimiter>>()
            .map_or(0, |l| l.settings().trusted_proxy_hops);
        let user_agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        ready(Ok(Self {
            ip: common::ratelimit::client_ip(req, hops).map(|ip| ip.to_string()),
            user_agent,
            request_id: common::telemetry::call_context_of(req).request_id,
        }))
    }
}

impl RequestMeta {
    /// Appends `event` to the audit log, in whatever transaction `db` is.
    pub async fn record(
        &self,
        db: impl PgExecutor<'_>,
        event: Event,
        actor: Option<Uuid>,
        subject: Option<Uuid>,
        detail: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        audit::append(
            db,
            &NewEntry {
                event: event.as_str(),
                actor_id: actor,
                subject_id: subject,
                ip: self.ip.as_deref(),
                user_agent: self.user_agent.as_deref(),
                request_id: self.request_id.as_deref(),
                detail,
            },
        )
        .await
    }
}
