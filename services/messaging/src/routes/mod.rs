//! HTTP routes of the messaging service and its OpenAPI document.

pub mod conversations;
pub mod internal;
pub mod messages;
pub mod stream;

use common::problem::{FieldError, Problem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every route.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(conversations::create)
        .service(conversations::list)
        .service(conversations::unread)
        .service(conversations::show)
        .service(conversations::add_participants)
        .service(conversations::remove_participant)
        .service(conversations::mark_read)
        .service(messages::send)
        .service(messages::list)
        .service(messages::edit)
        .service(messages::remove)
        .service(stream::stream)
        .service(internal::account_deleted)
        .service(common::auth::session);
}

/// The document's fixed parts; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "messaging service",
        description = "Direct and group conversations, messages, read state and real-time delivery."
    ),
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
