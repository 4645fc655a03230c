//! actix's own failures answer as problem+json: bad JSON, wrong content type, oversize bodies,
//! unknown routes; and every response carries a request id.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"login\": ")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST, "malformed_json").await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("login=a&password=b")
        .send()
        .await
        .unwrap();
    expect_problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

/// serde's derived structs also take a sequence of their fields: `[null, null]` would be a
/// profile patch that changes nothing, and `["alice", "pw"]` a sign-in. Bodies must be objects.
#[tokio::test]
async fn a_body_that_is_json_but_not_an_object_is_a_422_problem() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let patch = json!({"display_name": "Alice A"});
    let response = app
        .request(
            Method::PATCH,
            "/v1/users/me",
            Some(&alice.access_token),
            Some(patch),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    for body in [
        json!([null, null]),
        json!(["Alice", "bio"]),
        json!(null),
        json!(7),
    ] {
        let response = app
            .request(
                Method::PATCH,
                "/v1/users/me",
                Some(&alice.access_token),
                Some(body.clone()),
            )
            .await;
        let problem = expect_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "body", "{body}: {problem}");
    }
    let response = app
        .post("/v1/auth/login", None, json!(["alice", alice.password]))
        .await;
    expect_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    // The profile is untouched, and the same fields as an object still work.
    let me = expect_json(
        app.get("/v1/users/me", Some(&alice.access_token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["display_name"], "Alice A", "{me}");
    let response = app
        .post(
            "/v1/auth/login",
            None,
            json!({"login": "alice", "password": alice.password}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_oversize_body_is_a_413_problem() {
    let app = spawn_app().await;
    let body = serde_json::json!({"login": "a".repeat(20_000), "password": "x"});
    let response = app.post("/v1/auth/login", None, body).await;
    expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn unknown_routes_are_a_404_problem() {
    let app = spawn_app().await;
    expect_problem(
        app.get("/v2/nothing", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_sane_incoming_request_id_is_echoed_and_a_missing_one_is_generated() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let generated = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let hostile = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(hostile.headers()["x-request-id"], "a b<script>");
}

#[tokio::test]
async fn readiness_is_200_when_postgres_and_redis_answer() {
    let app = spawn_app().await;
    expect_json(app.get("/health/ready", None).await, StatusCode::OK).await;
    expect_json(app.get("/health/live", None).await, StatusCode::OK).await;
}

#[tokio::test]
async fn readiness_is_503_when_redis_is_unreachable() {
    let app = spawn_app_with(|s| s.base.redis.url = "redis://127.0.0.1:1".to_owned()).await;
    let response = app.get("/health/ready", None).await;
    assert!(response.headers().contains_key("retry-after"));
    expect_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = spawn_app().await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/users/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("http://localhost:3000").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn on_shutdown_readiness_turns_503_first_then_the_server_stops() {
    let app = spawn_app().await;
    let user = app.register("still_served").await;
    tokio::spawn({
        let (drain, server) = (app.drain.clone(), app.server.clone());
        async move { drain.run(server).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let ready = app.get("/health/ready", None).await;
    let problem = expect_problem(
        ready,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("draining"));
    // While load balancers notice, requests are still served.
    expect_json(app.get("/health/live", None).await, StatusCode::OK).await;
    expect_json(
        app.get(&format!("/v1/users/{}", user.id), None).await,
        StatusCode::OK,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .is_err(),
        "stopped accepting after the delay"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_fold_unmatched_paths() {
    let app = spawn_app().await;
    let user = app.register("counted").await;
    for _ in 0..3 {
        app.get(&format!("/v1/users/{}", user.id), None).await;
    }
    for path in ["/nope/1", "/nope/2", "/wp-admin"] {
        app.get(path, None).await;
    }
    let response = app.get("/metrics", None).await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert_eq!(
        test_support::metrics::value(
            &text,
            r#"http_requests_total{method="GET",route="/v1/users/{id}",status="200"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        test_support::metrics::value(
            &text,
            r#"http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(3.0)
    );
    assert!(!text.contains("wp-admin"), "raw paths never become labels");
    assert!(
        test_support::metrics::value(
            &text,
            r#"http_request_duration_seconds_count{method="POST",route="/v1/auth/register"}"#
        )
        .is_some()
    );
    assert!(test_support::metrics::value(&text, "http_requests_in_flight").is_some());
    assert!(
        test_support::metrics::value(&text, r#"db_pool_connections{state="max"}"#)
            .is_some_and(|max| max > 0.0)
    );
    assert!(
        test_support::metrics::value(&text, r#"redis_pool_connections{state="total"}"#).is_some()
    );
}

#[tokio::test]
async fn a_known_path_with_a_method_it_lacks_is_405_with_allow_and_an_unknown_path_404() {
    let app = spawn_app().await;
    let response = app
        .request(reqwest::Method::PUT, "/v1/auth/login", None, None)
        .await;
    assert_eq!(response.headers()["allow"], "POST");
    expect_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let templated = app
        .request(
            reqwest::Method::POST,
            &format!("/v1/users/{}", uuid::Uuid::now_v7()),
            None,
            None,
        )
        .await;
    assert_eq!(templated.headers()["allow"], "GET");
    expect_problem(
        templated,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let unknown = app.get("/v1/no-such-thing", None).await;
    expect_problem(unknown, StatusCode::NOT_FOUND, "not_found").await;
}
