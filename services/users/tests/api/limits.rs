//! Abuse limits at the HTTP boundary: per-IP sign-ups and sign-ins, per-account sign-ins from
//! anywhere, per-account requests, follows; 429 with the headers clients need.

use crate::helpers::{TestApp, expect_json, expect_problem, expect_status, spawn_app_with};
use common::ratelimit::Quota;
use reqwest::StatusCode;
use serde_json::json;

/// Sends a sign-up as if from `ip` (the service trusts one proxy hop in these tests).
async fn sign_up_from(app: &TestApp, ip: &str, username: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/register"))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": "password-123"}))
        .send()
        .await
        .unwrap()
}

async fn log_in_from(app: &TestApp, ip: &str, login: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .unwrap()
}

fn assert_rate_limit_headers(response: &reqwest::Response, name: &str, quota: Quota) {
    let header = |h: &str| {
        response
            .headers()
            .get(h)
            .unwrap_or_else(|| panic!("{h} missing"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let retry_after: u64 = header("retry-after").parse().unwrap();
    assert!(
        (1..=quota.window.as_secs()).contains(&retry_after),
        "{retry_after}"
    );
    assert_eq!(
        header("ratelimit-policy"),
        format!("\"{name}\";q={};w={}", quota.limit, quota.window.as_secs())
    );
    assert_eq!(
        header("ratelimit"),
        format!("\"{name}\";r=0;t={retry_after}")
    );
}

#[tokio::test]
async fn sign_ups_are_limited_per_ip() {
    let quota = Quota::per_seconds(2, 1800);
    let app = spawn_app_with(|s| {
        s.limits.signup_ip = quota;
        s.base.rate_limits.trusted_proxy_hops = 1;
    })
    .await;
    for name in ["first", "second"] {
        expect_status(
            sign_up_from(&app, "203.0.113.7", name).await,
            StatusCode::CREATED,
        )
        .await;
    }
    let refused = sign_up_from(&app, "203.0.113.7", "third").await;
    assert_rate_limit_headers(&refused, "signup-ip", quota);
    let body = expect_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("signup-ip"));
    // Nothing was created for the refused request.
    let third: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users.accounts WHERE username = 'third'")
            .fetch_one(&app.admin_pool)
            .await
            .unwrap();
    assert_eq!(third, 0);
    // Another address is not affected.
    expect_status(
        sign_up_from(&app, "198.51.100.1", "third").await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn sign_in_attempts_at_one_account_are_limited_from_every_address() {
    let quota = Quota::per_seconds(3, 900);
    let app = spawn_app_with(|s| {
        s.limits.login_account = quota;
        s.base.rate_limits.trusted_proxy_hops = 1;
    })
    .await;
    app.register("victim").await;
    for i in 0..3 {
        let ip = format!("192.0.2.{i}");
        let wrong = log_in_from(&app, &ip, "victim", "guess-guess").await;
        expect_problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // Even the right password from a fresh address waits now: the guesser cannot tell.
    let refused = log_in_from(&app, "192.0.2.99", "victim", "password-victim").await;
    assert_rate_limit_headers(&refused, "login-account", quota);
    expect_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Another account is not affected.
    app.register("bystander").await;
    let ok = log_in_from(&app, "192.0.2.99", "bystander", "password-bystander").await;
    expect_json(ok, StatusCode::OK).await;
}

#[tokio::test]
async fn sign_in_attempts_from_one_address_are_limited() {
    let quota = Quota::per_seconds(2, 300);
    let app = spawn_app_with(|s| {
        s.limits.login_ip = quota;
        s.base.rate_limits.trusted_proxy_hops = 1;
    })
    .await;
    for login in ["a_user", "b_user"] {
        let wrong = log_in_from(&app, "203.0.113.50", login, "whatever-1").await;
        expect_problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let refused = log_in_from(&app, "203.0.113.50", "c_user", "whatever-1").await;
    assert_rate_limit_headers(&refused, "login-ip", quota);
    expect_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn each_account_has_its_own_request_quota() {
    let quota = Quota::per_seconds(4, 300);
    let app = spawn_app_with(|s| s.base.rate_limits.account = quota).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for _ in 0..4 {
        expect_status(
            app.get("/v1/users/me", Some(&alice.access_token)).await,
            StatusCode::OK,
        )
        .await;
    }
    let refused = app.get("/v1/users/me", Some(&alice.access_token)).await;
    assert_rate_limit_headers(&refused, "account", quota);
    expect_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    expect_status(
        app.get("/v1/users/me", Some(&bob.access_token)).await,
        StatusCode::OK,
    )
    .await;
    // Health checks are never limited.
    expect_status(app.get("/health/live", None).await, StatusCode::OK).await;
}

#[tokio::test]
async fn requests_without_a_valid_token_share_their_address_quota() {
    let quota = Quota::per_seconds(3, 300);
    let app = spawn_app_with(|s| s.base.rate_limits.anonymous = quota).await;
    let alice = app.register("alice").await; // 1
    let profile = format!("/v1/users/{}", alice.id);
    expect_status(app.get(&profile, None).await, StatusCode::OK).await; // 2
    // A forged token does not escape the address's quota: it counts, and is refused.
    expect_status(
        app.get(&profile, Some("not.a.token")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await; // 3
    let refused = app.get(&profile, Some("still.not.a.token")).await;
    assert_rate_limit_headers(&refused, "anonymous", quota);
    expect_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // A signed-in request counts against the account instead.
    expect_status(
        app.get(&profile, Some(&alice.access_token)).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn follows_are_limited_per_account() {
    let quota = Quota::per_seconds(2, 86400);
    let app = spawn_app_with(|s| s.limits.follow = quota).await;
    let fan = app.register("fan").await;
    let mut stars = Vec::new();
    for name in ["star_a", "star_b", "star_c"] {
        stars.push(app.register(name).await);
    }
    for star in &stars[..2] {
        let path = format!("/v1/users/{}/follow", star.id);
        expect_status(
            app.put(&path, Some(&fan.access_token)).await,
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    let path = format!("/v1/users/{}/follow", stars[2].id);
    let refused = app.put(&path, Some(&fan.access_token)).await;
    assert_rate_limit_headers(&refused, "follow", quota);
    expect_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}
