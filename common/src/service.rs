//! What every service does at start-up, whatever its domain: read the shared settings, apply
//! its migrations, connect Redis, prepare readiness, and bind its port.

use crate::auth::AuthSettings;
use crate::config::{ConfigError, Env, HttpSettings};
use crate::db::DatabaseSettings;
use crate::health::Readiness;
use crate::redis::RedisSettings;
use crate::telemetry::TelemetrySettings;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use std::net::TcpListener;
use std::time::Duration;

/// The settings every service reads, under the same variable names.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Listening, CORS, body limits.
    pub http: HttpSettings,
    /// The service role's connection.
    pub database: DatabaseSettings,
    /// Redis.
    pub redis: RedisSettings,
    /// Token verification.
    pub auth: AuthSettings,
    /// Logs.
    pub telemetry: TelemetrySettings,
    /// `MIGRATE_ON_START` (default true): apply migrations when the service starts.
    pub migrate_on_start: bool,
}

impl ServiceSettings {
    /// Reads the shared settings of `service` (its schema and role are named after it).
    /// `default_jwks_url` is where verifiers fetch keys by default (`None` for users itself).
    pub fn from_env(
        env: &Env,
        service: &str,
        default_port: u16,
        default_jwks_url: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let default_db =
            format!("postgres://{service}_svc:{service}_dev_password@127.0.0.1:5432/social");
        Ok(Self {
            http: HttpSettings::from_env(env, default_port)?,
            database: DatabaseSettings::from_env(env, &default_db)?,
            redis: RedisSettings::from_env(env)?,
            auth: AuthSettings::from_env(env, default_jwks_url)?,
            telemetry: TelemetrySettings::from_env(env)?,
            migrate_on_start: env.parse("MIGRATE_ON_START", true)?,
        })
    }
}

/// The connections a running service holds.
#[derive(Clone)]
pub struct Infrastructure {
    /// The service role's pool.
    pub db: PgPool,
    /// The Redis pool.
    pub redis: deadpool_redis::Pool,
    /// What `/health/ready` checks.
    pub readiness: Readiness,
}

impl Infrastructure {
    /// Applies `migrator` when configured to, and connects Redis (lazily).
    pub async fn prepare(
        settings: &ServiceSettings,
        db: PgPool,
        migrator: &Migrator,
    ) -> anyhow::Result<Self> {
        if settings.migrate_on_start {
            crate::db::migrate(&db, migrator).await?;
        }
        let redis = settings.redis.pool()?;
        let readiness = Readiness {
            db: db.clone(),
            redis: redis.clone(),
            timeout: Duration::from_secs(1),
        };
        Ok(Self {
            db,
            redis,
            readiness,
        })
    }
}

/// Binds the configured address; returns the listener and the port actually bound.
pub fn bind(http: &HttpSettings) -> std::io::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind((http.host.as_str(), http.port))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}
