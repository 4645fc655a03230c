//! The served OpenAPI document is generated from the code, and the committed copy is fresh.

use crate::helpers::*;
use reqwest::StatusCode;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi/users.json");

#[test]
fn the_committed_openapi_document_is_fresh() {
    let generated = common::openapi::render(&users::openapi());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi/users.json is stale: run `UPDATE_OPENAPI=1 cargo test -p users openapi`"
    );
}

#[tokio::test]
async fn the_service_serves_its_document_and_an_offline_docs_page() {
    let app = spawn_app().await;
    let document = expect_json(app.get("/openapi.json", None).await, StatusCode::OK).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(document["paths"]["/v1/auth/register"]["post"].is_object());
    let docs = app.get("/docs/", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
}
