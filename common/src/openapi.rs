//! Serving a service's OpenAPI document and its docs page, and completing the document with the
//! answers every route can give.
//!
//! The document is generated from the handlers by utoipa; `/openapi.json` serves it and `/docs`
//! serves Swagger UI from assets compiled into the binary (the `vendored` feature), so the page
//! works offline. The shared HTTP shell can answer any route with a few problems (a body that is
//! not JSON, a quota spent, the database down); [`complete`] documents those on every operation,
//! so that the document lists every status a route can return.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa_swagger_ui::SwaggerUi;

/// Swagger UI at `/docs`, reading the document it also serves at `/openapi.json`.
pub fn docs_service(document: OpenApi) -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", complete(document))
}

/// Serves `document` with its docs page, and registers its routes as [`KnownRoutes`] for the
/// 405 fallback: `App::configure(common::openapi::serve(document))` once the routes are in.
pub fn serve(document: OpenApi) -> impl FnOnce(&mut actix_web::web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(actix_web::web::Data::new(KnownRoutes(document.clone())));
        cfg.service(docs_service(document));
    }
}

/// Renders a document as the pretty JSON committed under `docs/openapi/`.
pub fn render(document: &OpenApi) -> String {
    let mut json = complete(document.clone())
        .to_pretty_json()
        .unwrap_or_default();
    json.push('\n');
    json
}

/// Adds to every operation the problems the shared shell may answer it with, where the
/// operation does not document them itself.
pub fn complete(mut document: OpenApi) -> OpenApi {
    for (path, item) in document.paths.paths.iter_mut() {
        let api = path.starts_with("/v1/") || path.starts_with("/internal/");
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_standard_responses(operation, api);
        }
    }
    document
}

fn add_standard_responses(operation: &mut Operation, api: bool) {
    let has_body = operation.request_body.is_some();
    let has_params = operation
        .parameters
        .as_ref()
        .is_some_and(|params| !params.is_empty());
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut standard: Vec<(&str, &str)> = Vec::new();
    if has_body || has_params {
        standard.push(("400", "Malformed JSON, path or query"));
    }
    if secured {
        standard.push(("401", "No valid access token"));
    }
    if has_body {
        standard.push(("413", "Body larger than the limit"));
        standard.push(("415", "Body is not JSON"));
        standard.push(("422", "Invalid fields"));
    }
    if api {
        standard.push((
            "429",
            "Rate limited: see Retry-After, RateLimit and RateLimit-Policy",
        ));
        standard.push((
            "503",
            "A dependency is unavailable: retry after Retry-After",
        ));
    }
    for (status, description) in standard {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(problem_response(description)));
    }
}

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            crate::problem::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// The methods the document gives `path` (matched against its templates), if it knows the path:
/// what a 405 lists in `Allow`.
pub fn methods_of(document: &OpenApi, path: &str) -> Option<Vec<&'static str>> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let item = document.paths.paths.iter().find_map(|(template, item)| {
        let pattern: Vec<&str> = template.split('/').collect();
        let matches = pattern.len() == segments.len()
            && pattern
                .iter()
                .zip(&segments)
                .all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s);
        matches.then_some(item)
    })?;
    let methods = [
        ("GET", item.get.is_some()),
        ("PUT", item.put.is_some()),
        ("POST", item.post.is_some()),
        ("DELETE", item.delete.is_some()),
        ("PATCH", item.patch.is_some()),
    ];
    Some(
        methods
            .into_iter()
            .filter_map(|(m, present)| present.then_some(m))
            .collect(),
    )
}

/// The documented routes, registered as app data so that a request to a known path with a
/// method it does not have is answered 405 with `Allow`, not 404.
pub struct KnownRoutes(pub OpenApi);
