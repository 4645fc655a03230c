//! Building and running the messaging service: pools, migrations, the token verifier, the server.

use crate::config::Settings;
use crate::config::StreamSettings;
use crate::contacts::ContactCache;
use crate::realtime::Hub;
use crate::routes::{self, ApiDoc};
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use common::db::StatementPool;
use common::ratelimit::{Quota, RateLimiter};
use common::service::Infrastructure;
use common::users_client::UsersClient;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

/// What every handler can reach, registered once as `web::Data`.
pub struct AppState {
    /// The `messaging_svc` pool.
    pub db: PgPool,
    /// Connections for a send's two statements, taken back without a round trip
    /// (docs/adr/0023) and lent to the worker that opened them (docs/adr/0032).
    pub statements: StatementPool,
    /// The users service, with this service's credentials.
    pub users: UsersClient,
    /// Sockets here, and events to every replica.
    pub hub: Arc<Hub>,
    /// WebSocket limits.
    pub stream: StreamSettings,
    /// Request quotas, counted in Redis.
    pub limiter: web::Data<RateLimiter>,
    /// Messages one account may send.
    pub message_send: Quota,
    /// Contactability answers that allowed a send, kept while they hold (docs/adr/0022).
    pub contacts: ContactCache,
}

/// The schema this service owns.
pub const SCHEMA: &str = "messaging";

/// The migrations of the messaging schema, recorded in `messaging._sqlx_migrations`.
pub fn migrator() -> Migrator {
    common::db::migrator_for(sqlx::migrate!("../../migrations/messaging"), SCHEMA)
}

/// Applies the migrations and exits (the `migrate` subcommand).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = settings.base.database.pool(SCHEMA)?;
    common::db::migrate(&pool, &migrator()).await?;
    tracing::info!("messaging schema migrated");
    Ok(())
}

/// The OpenAPI document, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, document) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    document
}

/// A built service, bound to its port, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    drain: common::service::Drain,
}

impl Application {
    /// Builds the service with a pool from its settings.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = settings.base.database.pool(SCHEMA)?;
        Self::build_with_pool(settings, pool).await
    }

    /// Builds the service on an existing pool (tests inject their database this way).
    pub async fn build_with_pool(settings: Settings, db: PgPool) -> anyhow::Result<Self> {
        let base = &settings.base;
        let mut infra = Infrastructure::prepare(base, db, &migrator()).await?;
        let verifier = web::Data::from(infra.jwks_verifier(&base.auth)?);
        let hub = Hub::new(
            infra.redis.clone(),
            &base.redis.key_prefix,
            base.redis.timeout,
            settings.stream.send_queue,
            infra.metrics.clone().into_inner(),
        );
        hub.spawn_subscriber(base.redis.url.clone(), infra.db.clone());
        let statements = infra.statement_pool(&base.database)?;
        let state = web::Data::new(AppState {
            db: infra.db.clone(),
            statements,
            users: UsersClient::new(&settings.users)?
                .with_credentials(settings.credentials.clone())
                .with_metrics(infra.metrics.clone().into_inner()),
            hub,
            stream: settings.stream.clone(),
            limiter: infra.limiter.clone(),
            message_send: settings.message_send,
            contacts: ContactCache::new(
                base.redis.key_prefix.clone(),
                infra.metrics.clone().into_inner(),
            ),
        });
        let shell = infra.clone();
        let (listener, port) = common::service::bind(&base.http)?;
        let http = base.http.clone();
        let server = HttpServer::new(move || {
            let (app, document) = common::http::base_app(http.clone(), shell.clone())
                .into_utoipa_app()
                .openapi(ApiDoc::openapi())
                .app_data(verifier.clone())
                .app_data(state.clone())
                .configure(routes::configure)
                .split_for_parts();
            app.configure(common::openapi::serve(document))
        })
        .workers(base.http.workers)
        .shutdown_timeout(base.http.shutdown_timeout.as_secs())
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(port, "messaging service listening");
        Ok(Self {
            port,
            server,
            drain: infra.drain,
        })
    }

    /// The port it listens on (useful when it was 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (tests stop a dependency with it).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// The two-step shutdown of this instance (tests start it without a signal).
    pub fn drain(&self) -> common::service::Drain {
        self.drain.clone()
    }

    /// Serves until SIGTERM/SIGINT, then turns unready, waits, and drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.drain.on_signals(self.server.handle());
        self.server.await
    }
}
