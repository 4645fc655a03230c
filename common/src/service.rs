//! What every service does at start-up, whatever its domain: read the shared settings, apply
//! its migrations, connect Redis, prepare readiness, and bind its port.

use crate::auth::AuthSettings;
use crate::config::{ConfigError, Env, HttpSettings};
use crate::db::DatabaseSettings;
use crate::health::Readiness;
use crate::ratelimit::{RateLimitSettings, RateLimiter};
use crate::redis::RedisSettings;
use crate::telemetry::TelemetrySettings;
use actix_web::dev::ServerHandle;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The per-account and per-IP request quotas.
    pub rate_limits: RateLimitSettings,
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
            rate_limits: RateLimitSettings::from_env(env)?,
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
    pub redis: crate::redis::Pool,
    /// What `/health/ready` checks.
    pub readiness: Readiness,
    /// Shutdown in two steps: not ready, then stop.
    pub drain: Drain,
    /// This instance's metrics.
    pub metrics: actix_web::web::Data<crate::metrics::Metrics>,
    /// Request quotas, counted in Redis.
    pub limiter: actix_web::web::Data<RateLimiter>,
    /// The bound on requests in flight in this process, shared by its workers.
    pub admission: actix_web::web::Data<crate::shed::Admission>,
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
        let drain = Drain::new(settings.http.shutdown_delay);
        let readiness = Readiness {
            db: db.clone(),
            redis: redis.clone(),
            timeout: Duration::from_secs(1),
            drain: drain.clone(),
            keys: None,
        };
        let metrics = crate::metrics::Metrics::new()?;
        let limiter = RateLimiter::new(
            redis.clone(),
            settings.redis.timeout,
            &settings.redis.key_prefix,
            settings.rate_limits.clone(),
            &metrics,
        )?;
        Ok(Self {
            db,
            redis,
            readiness,
            drain,
            metrics: actix_web::web::Data::new(metrics),
            limiter: actix_web::web::Data::new(limiter),
            admission: actix_web::web::Data::new(crate::shed::Admission::new(
                settings.http.max_in_flight_requests,
            )),
        })
    }

    /// A pool for hot statements beside the service's own (docs/adr/0023), with the role and
    /// limits of `settings`, its gauges registered with this instance's metrics. Its
    /// connections are named after the service pool's, followed by ` statements`.
    pub fn statement_pool(
        &self,
        settings: &DatabaseSettings,
    ) -> anyhow::Result<crate::db::StatementPool> {
        let pool = crate::db::StatementPool::new(
            crate::db::suffixed(&self.db.connect_options(), "statements"),
            settings.statement_connections,
            settings.acquire_timeout,
        );
        self.metrics.register(pool.collector()?)?;
        Ok(pool)
    }

    /// The verifier of a service that checks the users service's tokens with the keys users
    /// publishes (JWKS): refreshed in the background, and waited for by readiness until its
    /// first key set is held (docs/adr/0003-rs256-jwks.md).
    pub fn jwks_verifier(
        &mut self,
        settings: &AuthSettings,
    ) -> anyhow::Result<Arc<crate::auth::TokenVerifier>> {
        let verifier = Arc::new(crate::auth::TokenVerifier::new(
            settings.clone(),
            Vec::new(),
            reqwest::Client::new(),
        )?);
        verifier.spawn_refresher();
        self.readiness.keys = Some(Arc::clone(&verifier));
        Ok(verifier)
    }
}

/// Binds the configured address; returns the listener and the port actually bound.
pub fn bind(http: &HttpSettings) -> std::io::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind((http.host.as_str(), http.port))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// Graceful shutdown in two steps. On SIGTERM (or SIGINT) readiness turns 503 at once, so load
/// balancers stop sending new requests; after `SHUTDOWN_DELAY_SECS` the server stops accepting
/// and finishes in-flight requests within `SHUTDOWN_TIMEOUT_SECS`.
#[derive(Debug, Clone)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    delay: Duration,
}

impl Drain {
    /// A drain that waits `delay` between turning unready and stopping.
    pub fn new(delay: Duration) -> Self {
        Self {
            draining: Arc::new(AtomicBool::new(false)),
            delay,
        }
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Turns unready, waits the delay, then stops `server` gracefully.
    pub async fn run(&self, server: ServerHandle) {
        self.draining.store(true, Ordering::SeqCst);
        tracing::info!(delay = ?self.delay, "draining: readiness is now 503");
        tokio::time::sleep(self.delay).await;
        server.stop(true).await;
    }

    /// Starts the drain on the first SIGTERM or SIGINT. (actix's own signal handling is
    /// disabled, since it would stop accepting before load balancers noticed.)
    pub fn on_signals(&self, server: ServerHandle) {
        let drain = self.clone();
        tokio::spawn(async move {
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = terminate => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
            drain.run(server).await;
        });
    }
}
