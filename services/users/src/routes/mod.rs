//! HTTP routes of the users service, one module per resource, and its OpenAPI document.

pub mod account;
pub mod admin;
pub mod auth;
pub mod graph;
pub mod internal;
pub mod keys;
pub mod profiles;

use common::problem::{FieldError, Problem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every route. Order matters where paths overlap: `/v1/users/me` and
/// `/v1/users/by-username/…` come before `/v1/users/{id}`.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(auth::register)
        .service(auth::login)
        .service(auth::refresh)
        .service(auth::logout)
        .service(auth::service_token)
        .service(keys::jwks)
        .service(profiles::me)
        .service(account::change_password)
        .service(account::delete_me)
        .service(profiles::update_me)
        .service(profiles::by_username)
        .service(profiles::batch)
        .service(profiles::by_id)
        .service(graph::follow)
        .service(graph::unfollow)
        .service(graph::block)
        .service(graph::unblock)
        .service(graph::followers)
        .service(graph::following_ids)
        .service(graph::following)
        .service(admin::set_role)
        .service(admin::suspend)
        .service(admin::unsuspend)
        .service(admin::audit_log)
        .service(internal::account)
        .service(internal::contactability)
        .service(internal::report_audit)
        .service(common::auth::session);
}

/// The document's fixed parts; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "users service", description = "Accounts, tokens, profiles and the follow graph."),
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
