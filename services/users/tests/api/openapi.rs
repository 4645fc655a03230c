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

#[test]
fn no_response_carries_a_credential_and_only_your_own_account_carries_an_email() {
    let document: serde_json::Value =
        serde_json::from_str(&common::openapi::render(&users::openapi())).unwrap();
    assert!(test_support::openapi::operations(&document) > 20);
    let secrets = test_support::openapi::responses_exposing(
        &document,
        &test_support::openapi::SECRET_FIELDS,
        &[],
    );
    assert!(secrets.is_empty(), "{secrets:?}");
    // The email is private: only the account's own profile (and the sign-up that creates it)
    // shows it; public profiles, lists, batches and the admin log do not.
    let own = [
        ("get", "/v1/users/me"),
        ("patch", "/v1/users/me"),
        ("post", "/v1/auth/register"),
    ];
    let emails = test_support::openapi::responses_exposing(&document, &["email"], &own);
    assert!(emails.is_empty(), "{emails:?}");
    // The check sees the email where it is.
    let all = test_support::openapi::responses_exposing(&document, &["email"], &[]);
    assert_eq!(all.len(), 3, "{all:?}");
}
