//! HTTP routes of the posts service and its OpenAPI document.

pub mod internal;
pub mod lists;
pub mod posts;

use common::problem::{FieldError, Problem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every route.
pub fn configure(cfg: &mut ServiceConfig) {
    // actix tries resources in this order, and every pattern with a `{segment}` is a regex: the
    // feed, the busiest path and a fixed one, comes first, so that it is matched without
    // running the others' regexes (about 2 % of posts' CPU per feed, perf).
    cfg.service(lists::feed)
        .service(posts::create)
        .service(posts::show)
        .service(posts::edit)
        .service(posts::remove)
        .service(posts::like)
        .service(posts::unlike)
        .service(lists::replies)
        .service(lists::timeline)
        .service(internal::account_deleted)
        .service(common::auth::session);
}

/// The document's fixed parts; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "posts service", description = "Posts, likes, replies, timelines and the home feed."),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
