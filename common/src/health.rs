//! Liveness and readiness.
//!
//! `GET /health/live` answers while the process runs. `GET /health/ready` answers 200 only when
//! PostgreSQL and Redis both answer within a short deadline, the replica holds the keys that
//! verify tokens (fetched from users, for the services that verify its tokens), and it is not
//! shutting down; 503 problem+json otherwise, so that a load balancer stops sending traffic to
//! a replica that cannot serve it.

use crate::auth::TokenVerifier;
use crate::problem::Problem;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// What readiness checks.
#[derive(Clone)]
pub struct Readiness {
    /// The service's database pool.
    pub db: PgPool,
    /// The service's Redis pool.
    pub redis: crate::redis::Pool,
    /// Deadline of each check.
    pub timeout: Duration,
    /// Set once shutdown begins: the replica is then never ready again.
    pub drain: crate::service::Drain,
    /// The verifier whose key set must be held (`None` where no token is verified). A replica
    /// started before users can answer would refuse every signed-in request with 503.
    pub keys: Option<Arc<TokenVerifier>>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct HealthStatus {
    status: &'static str,
}

/// Registers `/health/live` and `/health/ready`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(HealthStatus { status: "ok" })
}

async fn ready(readiness: web::Data<Readiness>) -> Result<HttpResponse, Problem> {
    if readiness.drain.is_draining() {
        return Err(Problem::unavailable(
            "draining: this replica is shutting down",
        ));
    }
    let keys = async {
        match &readiness.keys {
            None => true,
            Some(verifier) => tokio::time::timeout(readiness.timeout, verifier.ensure_keys())
                .await
                .unwrap_or(false),
        }
    };
    let (db_ok, redis_ok, keys_ok) = tokio::join!(
        crate::db::ping(&readiness.db, readiness.timeout),
        crate::redis::ping(&readiness.redis, readiness.timeout),
        keys
    );
    let down: Vec<&str> = [
        ("postgresql", db_ok),
        ("redis", redis_ok),
        ("the users service's signing keys (JWKS)", keys_ok),
    ]
    .into_iter()
    .filter_map(|(name, ok)| (!ok).then_some(name))
    .collect();
    if down.is_empty() {
        Ok(HttpResponse::Ok().json(HealthStatus { status: "ready" }))
    } else {
        tracing::warn!(?down, "not ready");
        Err(Problem::unavailable(format!(
            "not ready: {} unreachable",
            down.join(", ")
        )))
    }
}

/// The `healthcheck` subcommand of every service binary: asks the local server whether it is
/// ready, for container `HEALTHCHECK`s. Fails unless it answers 200 within two seconds.
pub async fn check_local(port: u16) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let response = client
        .get(format!("http://127.0.0.1:{port}/health/ready"))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "not ready: {}",
        response.status()
    );
    Ok(())
}
