//! The HTTP shell shared by the services: CORS, the request span, the bound on requests in
//! flight, rate limits, problem+json for extractor failures and unknown routes, the health
//! endpoints and `/metrics`.

use crate::config::HttpSettings;
use crate::problem;
use crate::service::Infrastructure;
use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::from_fn;
use actix_web::{App, web};

/// CORS for browser frontends that call each service directly: only the configured origins.
pub fn cors(allowed_origins: &[String]) -> Cors {
    let cors = allowed_origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin));
    cors.allowed_methods([
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ])
    .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
    .allowed_header("idempotency-key")
    .allowed_header("x-request-id")
    .expose_headers(["x-request-id", "retry-after"])
    .max_age(3600)
}

/// Whether `path` is one of the endpoints operators and orchestrators call (health checks,
/// `/metrics`): answered whatever the load and never rate-limited.
pub(crate) fn is_operational(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// An `App` with what every service has: CORS, request spans, load shedding, rate limits,
/// problem+json extractor configuration, the 404 fallback and the health endpoints. The service
/// adds its routes.
pub fn base_app(
    settings: HttpSettings,
    infra: Infrastructure,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(from_fn(crate::ratelimit::limit_requests))
        // Outside the rate limit, whose token check and Redis count a refused request skips;
        // inside CORS and the request span, so that a refusal is readable by browsers, logged
        // and counted.
        .wrap(from_fn(crate::shed::shed_excess))
        .wrap(cors(&settings.cors_allowed_origins))
        .wrap(from_fn(crate::telemetry::trace_request))
        .app_data(problem::json_config(settings.max_json_body))
        .app_data(problem::path_config())
        .app_data(problem::query_config())
        .app_data(web::Data::new(infra.readiness))
        .app_data(infra.metrics)
        .app_data(infra.limiter)
        .app_data(infra.admission)
        .configure(crate::health::configure)
        .configure(crate::metrics::configure)
        .default_service(web::to(problem::not_found_handler))
}
