//! Building and running the posts service: pools, migrations, the token verifier, the server.

use crate::config::Settings;
use crate::directory::Directory;
use crate::hot_posts::HotPosts;
use crate::recent_heads::RecentHeads;
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
    /// The `posts_svc` pool.
    pub db: PgPool,
    /// Connections of the same role for the hot reads, which run outside a transaction and
    /// are taken back without a round trip (docs/adr/0023).
    pub statements: StatementPool,
    /// Users, as the users service and the cache know them.
    pub directory: Directory,
    /// Posts as readers who are not signed in see them, kept until a change is heard
    /// (docs/adr/0027-posts-in-process.md).
    pub hot_posts: Arc<HotPosts>,
    /// The newest author heads, held so that a first feed page reads only the followees that
    /// can be on it (docs/adr/0028-heads-in-process.md).
    pub recent_heads: Arc<RecentHeads>,
    /// Request quotas, counted in Redis.
    pub limiter: web::Data<RateLimiter>,
    /// Posts one account may write.
    pub post_create: Quota,
}

/// The schema this service owns.
pub const SCHEMA: &str = "posts";

/// The migrations of the posts schema, recorded in `posts._sqlx_migrations`.
pub fn migrator() -> Migrator {
    common::db::migrator_for(sqlx::migrate!("../../migrations/posts"), SCHEMA)
}

/// Applies the migrations and exits (the `migrate` subcommand).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = settings.base.database.pool(SCHEMA)?;
    common::db::migrate(&pool, &migrator()).await?;
    tracing::info!("posts schema migrated");
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
        let directory = Directory::new(
            UsersClient::new(&settings.users)?.with_metrics(infra.metrics.clone().into_inner()),
            infra.redis.clone(),
            base.redis.key_prefix.clone(),
            base.redis.timeout,
            settings.author_cache_ttl,
            settings.followees_cache_ttl,
            infra.metrics.clone().into_inner(),
        );
        let prefetch = web::Data::new(directory.prefetch());
        let statements = infra.statement_pool(&base.database)?;
        let hot_posts = Arc::new(HotPosts::new(
            settings.post_cache_ttl,
            &base.redis.key_prefix,
            infra.redis.clone(),
            base.redis.timeout,
            infra.metrics.clone().into_inner(),
        ));
        hot_posts
            .start(base.redis.url.clone(), std::time::Duration::from_secs(2))
            .await;
        let recent_heads = Arc::new(RecentHeads::new(
            settings.feed_heads_held,
            settings.feed_heads_reload,
            &base.redis.key_prefix,
            infra.redis.clone(),
            base.redis.timeout,
            infra.metrics.clone().into_inner(),
        ));
        recent_heads
            .start(
                base.redis.url.clone(),
                infra.db.clone(),
                std::time::Duration::from_secs(2),
            )
            .await;
        let state = web::Data::new(AppState {
            db: infra.db.clone(),
            statements,
            directory,
            hot_posts,
            recent_heads,
            limiter: infra.limiter.clone(),
            post_create: settings.post_create,
        });
        spawn_idempotency_purge(infra.db.clone());
        crate::audit_report::spawn(
            infra.db.clone(),
            UsersClient::new(&settings.users)?
                .with_credentials(settings.credentials.clone())
                .with_metrics(infra.metrics.clone().into_inner()),
            settings.audit_report_poll,
        );
        let shell = infra.clone();
        let (listener, port) = common::service::bind(&base.http)?;
        let http = base.http.clone();
        let server = HttpServer::new(move || {
            let (app, document) = common::http::base_app(http.clone(), shell.clone())
                .into_utoipa_app()
                .openapi(ApiDoc::openapi())
                .app_data(verifier.clone())
                .app_data(prefetch.clone())
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
        tracing::info!(port, "posts service listening");
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

/// Deletes expired idempotency keys every ten minutes. Every replica runs it; the DELETE is
/// idempotent, so that is only a little redundant work.
fn spawn_idempotency_purge(db: PgPool) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            every.tick().await;
            match crate::store::idempotency::purge_expired(&db).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired idempotency keys deleted"),
                Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
            }
        }
    });
}
