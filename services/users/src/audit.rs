//! What the audit log records about a request, and the events it knows.

use crate::store::audit::{self, NewEntry};
pub use common::request_meta::RequestMeta;
use sqlx::PgExecutor;
use uuid::Uuid;

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
    /// Reported by posts.
    ModerationPostDeleted,
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
            Event::ModerationPostDeleted => "moderation.post_deleted",
        }
    }

    /// Every event, for validating filters.
    pub const ALL: [Event; 11] = [
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
        Event::ModerationPostDeleted,
    ];
}

/// Appends `event`, from the request described by `meta`, to the audit log, in whatever
/// transaction `db` is.
pub async fn record(
    meta: &RequestMeta,
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
            ip: meta.ip.as_deref(),
            user_agent: meta.user_agent.as_deref(),
            request_id: meta.request_id.as_deref(),
            detail,
        },
    )
    .await
}
