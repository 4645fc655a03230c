//! `/.well-known/jwks.json`: the public keys that verify access tokens.

use crate::startup::AppState;
use actix_web::http::header;
use actix_web::{HttpResponse, get, web};

/// The JWK set: every loaded key, the signing one and those still verifying.
#[utoipa::path(tag = "auth", responses((status = 200, description = "RFC 7517 JWK set", content_type = "application/json")))]
#[get("/.well-known/jwks.json")]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(state.signer.jwks())
}
