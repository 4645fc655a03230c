//! Building and running the users service: pools, migrations, keys, and the HTTP server.

use crate::config::{FlowLimits, Settings};
use crate::routes::{self, ApiDoc};
use crate::tokens::Signer;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use common::auth::TokenVerifier;
use common::config::Secret;
use common::db::StatementPool;
use common::graph_versions::{Kind, Publisher};
use common::ratelimit::RateLimiter;
use common::service::Infrastructure;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

/// The schema this service owns.
pub const SCHEMA: &str = "users";

/// What every handler can reach, registered once as `web::Data`.
pub struct AppState {
    /// The `users_svc` pool.
    pub db: PgPool,
    /// Connections for the single reads other services ask for on their hot paths (a send's
    /// contactability, a feed's followee ids and authors), taken back without a round trip
    /// (docs/adr/0023).
    pub statements: StatementPool,
    /// Signs tokens and publishes keys.
    pub signer: Signer,
    /// A hash to check against when a login is unknown, so that timing does not tell.
    pub dummy_hash: String,
    /// Services allowed to obtain service tokens.
    pub service_clients: BTreeMap<String, Secret>,
    /// Request quotas, counted in Redis.
    pub limiter: web::Data<RateLimiter>,
    /// The quotas of the sign-up, sign-in and follow flows.
    pub limits: FlowLimits,
    /// Wakes the outbox relay when a handler has queued an event.
    pub outbox_wake: Arc<Notify>,
    /// Announces changed followee sets to the feed (docs/adr/0017-published-graph-versions.md).
    pub graph_versions: Publisher,
    /// Announces changed contact standings to messaging (docs/adr/0022).
    pub contact_versions: Publisher,
}

/// The migrations of the users schema, recorded in `users._sqlx_migrations`.
pub fn migrator() -> Migrator {
    common::db::migrator_for(sqlx::migrate!("../../migrations/users"), SCHEMA)
}

/// Applies the migrations and exits (the `migrate` subcommand).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = settings.base.database.pool(SCHEMA)?;
    common::db::migrate(&pool, &migrator()).await?;
    tracing::info!("users schema migrated");
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
        let infra = Infrastructure::prepare(base, db, &migrator()).await?;
        let signer = Signer::new(&settings.tokens, &base.auth)?;
        let verifier = TokenVerifier::new(
            base.auth.clone(),
            signer.decoding_keys()?,
            reqwest::Client::new(),
        )?;
        let dummy_hash = crate::passwords::hash("not anyone's password".to_owned()).await?;
        let graph_versions = Publisher::new(
            Kind::Followees,
            infra.redis.clone(),
            base.redis.key_prefix.clone(),
            base.redis.timeout,
            settings.graph_version_ttl,
            infra.metrics.clone().into_inner(),
        );
        let statements = infra.statement_pool(&base.database)?;
        let state = web::Data::new(AppState {
            db: infra.db.clone(),
            statements,
            signer,
            dummy_hash,
            service_clients: settings.service_clients.clone(),
            limiter: infra.limiter.clone(),
            limits: settings.limits.clone(),
            outbox_wake: Arc::new(Notify::new()),
            graph_versions: graph_versions.clone(),
            contact_versions: graph_versions.with_kind(Kind::Contacts),
        });
        crate::outbox::Relay::new(state.clone(), settings.outbox.clone(), &infra.metrics)?.spawn();
        let verifier = web::Data::new(verifier);
        let shell = infra.clone();
        let (listener, port) = common::service::bind(&base.http)?;
        let http = base.http.clone();
        let server = HttpServer::new(move || {
            let (app, document) = common::http::base_app(http.clone(), shell.clone())
                .into_utoipa_app()
                .openapi(ApiDoc::openapi())
                .app_data(state.clone())
                .app_data(verifier.clone())
                .configure(routes::configure)
                .split_for_parts();
            app.configure(common::openapi::serve(document))
        })
        .workers(base.http.workers)
        .shutdown_timeout(base.http.shutdown_timeout.as_secs())
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(port, "users service listening");
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
