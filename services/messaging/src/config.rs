//! The messaging service's settings.

use common::config::{ConfigError, Env};
use common::ratelimit::Quota;
use common::service::ServiceSettings;
use common::users_client::{ServiceCredentials, UsersClientSettings};
use std::time::Duration;

/// Default port of the messaging service.
pub const DEFAULT_PORT: u16 = 8083;

/// Everything the messaging service reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads: HTTP, database, Redis, token verification, logs.
    pub base: ServiceSettings,
    /// Where the users service is.
    pub users: UsersClientSettings,
    /// `SERVICE_CLIENT_ID` / `SERVICE_CLIENT_SECRET`: this service's credentials for the users
    /// service's internal endpoints.
    pub credentials: ServiceCredentials,
    /// WebSocket limits.
    pub stream: StreamSettings,
    /// `RATE_LIMIT_MESSAGE_SEND` (default `60/60`): messages one account may send.
    pub message_send: Quota,
}

/// Limits of `/v1/stream` sockets.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// `WS_HEARTBEAT_SECS` (default 15): how often the server pings.
    pub heartbeat: Duration,
    /// `WS_CLIENT_TIMEOUT_SECS` (default 40): a socket silent for this long is closed.
    pub client_timeout: Duration,
    /// `WS_SEND_QUEUE` (default 256): events buffered per socket; a socket that falls this far
    /// behind is disconnected (it catches up over REST with `after_seq`).
    pub send_queue: usize,
    /// `WS_MAX_FRAME_BYTES` (default 16384): largest frame a client may send.
    pub max_frame_bytes: usize,
    /// `WS_MAX_CLIENT_MESSAGES_PER_MIN` (default 120): more than this closes the socket.
    pub max_client_messages_per_min: u32,
}

impl Settings {
    /// Reads every setting; the first bad value stops start-up with its variable's name.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            base: ServiceSettings::from_env(
                env,
                "messaging",
                DEFAULT_PORT,
                Some("http://127.0.0.1:8081/.well-known/jwks.json"),
            )?,
            users: UsersClientSettings::from_env(env)?,
            credentials: ServiceCredentials {
                client_id: env.string("SERVICE_CLIENT_ID", "messaging"),
                client_secret: env.secret("SERVICE_CLIENT_SECRET", "messaging-dev-secret"),
            },
            stream: StreamSettings {
                heartbeat: env.seconds("WS_HEARTBEAT_SECS", 15)?,
                client_timeout: env.seconds("WS_CLIENT_TIMEOUT_SECS", 40)?,
                send_queue: env.parse("WS_SEND_QUEUE", 256)?,
                max_frame_bytes: env.parse("WS_MAX_FRAME_BYTES", 16 * 1024)?,
                max_client_messages_per_min: env.parse("WS_MAX_CLIENT_MESSAGES_PER_MIN", 120)?,
            },
            message_send: env.parse("RATE_LIMIT_MESSAGE_SEND", Quota::per_seconds(60, 60))?,
        })
    }
}
