//! Tokens issued by the users service are verified here locally, with keys from its JWKS.

use crate::helpers::*;
use reqwest::StatusCode;

#[tokio::test]
async fn a_users_service_token_is_accepted_here_with_keys_from_its_jwks() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let session = expect_json(
        app.get("/v1/session", Some(&alice.token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(session["user_id"], alice.id.to_string());
    assert_eq!(session["role"], "user");
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401_problems() {
    let app = spawn_app().await;
    for token in [None, Some("nonsense"), Some("a.b.c")] {
        let response = app.get("/v1/session", token).await;
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        expect_json(response, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn health_endpoints_answer_and_unknown_routes_are_problems() {
    let app = spawn_app().await;
    expect_json(app.get("/health/live", None).await, StatusCode::OK).await;
    expect_json(app.get("/health/ready", None).await, StatusCode::OK).await;
    let missing = app.get("/v1/nothing-here", None).await;
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    expect_json(missing, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn every_forged_expired_or_misaddressed_token_is_refused_here_too() {
    let app = spawn_app().await;
    let victim = app.register("victim").await;
    // The control: a token made like the forgeries, minus the forgery, is accepted.
    let control = test_support::tokens::valid(&test_support::tokens::claims(
        victim.id,
        serde_json::json!({}),
    ));
    expect_json(
        app.request(reqwest::Method::GET, "/v1/session", Some(&control), None)
            .await,
        StatusCode::OK,
    )
    .await;
    for (why, token) in test_support::tokens::forgeries(victim.id, None) {
        let response = app
            .request(reqwest::Method::GET, "/v1/session", Some(&token), None)
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{why}");
    }
}
