//! The messaging service's settings.

use common::config::{ConfigError, Env};
use common::service::ServiceSettings;

/// Default port of the messaging service.
pub const DEFAULT_PORT: u16 = 8083;

/// Everything the messaging service reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads: HTTP, database, Redis, token verification, logs.
    pub base: ServiceSettings,
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
        })
    }
}
