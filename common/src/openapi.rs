//! Serving a service's OpenAPI document and its docs page.
//!
//! The document is generated from the handlers by utoipa; `/openapi.json` serves it and `/docs`
//! serves Swagger UI from assets compiled into the binary (the `vendored` feature), so the page
//! works offline.

use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// Swagger UI at `/docs`, reading the document it also serves at `/openapi.json`.
pub fn docs_service(document: OpenApi) -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", document)
}

/// Renders a document as the pretty JSON committed under `docs/openapi/`.
pub fn render(document: &OpenApi) -> String {
    let mut json = document.to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}
