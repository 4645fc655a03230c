//! Registration, sign-in, refresh rotation, logout.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn registering_returns_the_account_and_a_working_token_pair() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/auth/register",
            None,
            json!({"username": "Alice_1", "email": " Alice@Example.COM ", "password": "a long password", "display_name": "Alice"}),
        )
        .await;
    let body = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(body["user"]["username"], "alice_1");
    assert_eq!(body["user"]["email"], "alice@example.com");
    assert_eq!(body["user"]["display_name"], "Alice");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let id = body["user"]["id"].as_str().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(id).unwrap().get_version_num(),
        7,
        "ids are UUIDv7"
    );

    let me = expect_json(
        app.get("/v1/users/me", body["access_token"].as_str()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["id"], id);

    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users.accounts WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.admin_pool)
            .await
            .unwrap();
    assert!(
        stored.starts_with("$argon2id$"),
        "passwords are stored as argon2id hashes"
    );
}

#[tokio::test]
async fn registration_refuses_invalid_fields_and_names_each_one() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"username": "ab", "email": "a@example.com", "password": "password1"}),
            "username",
            "too short",
        ),
        (
            json!({"username": "a".repeat(31), "email": "a@example.com", "password": "password1"}),
            "username",
            "too long",
        ),
        (
            json!({"username": "bad name", "email": "a@example.com", "password": "password1"}),
            "username",
            "bad characters",
        ),
        (
            json!({"username": "alice", "email": "not-an-email", "password": "password1"}),
            "email",
            "bad email",
        ),
        (
            json!({"username": "alice", "email": "a@example.com", "password": "short"}),
            "password",
            "short password",
        ),
        (
            json!({"username": "alice", "email": "a@example.com", "password": "p".repeat(129)}),
            "password",
            "long password",
        ),
        (
            json!({"username": "alice", "email": "a@example.com", "password": "password1", "display_name": "d".repeat(51)}),
            "display_name",
            "long display name",
        ),
        (
            json!({"email": "a@example.com", "password": "password1"}),
            "username",
            "missing username",
        ),
        (
            json!({"username": "alice", "email": "a@example.com", "password": "password1", "admin": true}),
            "admin",
            "unknown field",
        ),
        (
            json!({"username": 42, "email": "a@example.com", "password": "password1"}),
            "body",
            "wrong type",
        ),
    ];
    for (body, field, why) in cases {
        let problem = expect_problem(
            app.post("/v1/auth/register", None, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{why}: {problem}");
    }
}

#[tokio::test]
async fn usernames_and_emails_are_unique_regardless_of_case() {
    let app = spawn_app().await;
    app.register("alice").await;
    let same_name = app
        .post(
            "/v1/auth/register",
            None,
            json!({"username": "ALICE", "email": "other@example.com", "password": "password1"}),
        )
        .await;
    expect_problem(same_name, StatusCode::CONFLICT, "username_taken").await;
    let same_email = app
        .post(
            "/v1/auth/register",
            None,
            json!({"username": "alice2", "email": "ALICE@example.com", "password": "password1"}),
        )
        .await;
    expect_problem(same_email, StatusCode::CONFLICT, "email_taken").await;
}

#[tokio::test]
async fn login_works_with_username_or_email() {
    let app = spawn_app().await;
    let user = app.register("bob").await;
    for login in ["bob", "BOB", "bob@example.com", "Bob@Example.com"] {
        let body = expect_json(
            app.post(
                "/v1/auth/login",
                None,
                json!({"login": login, "password": user.password}),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert!(
            body["access_token"].is_string() && body["refresh_token"].is_string(),
            "{login}"
        );
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_login_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("carol").await;
    let wrong_password = expect_problem(
        app.post(
            "/v1/auth/login",
            None,
            json!({"login": "carol", "password": "not her password"}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let unknown = expect_problem(
        app.post(
            "/v1/auth/login",
            None,
            json!({"login": "nobody", "password": "not her password"}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(wrong_password, unknown);
}

#[tokio::test]
async fn login_refuses_missing_or_empty_fields() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"login": "", "password": "x"}), "login"),
        (json!({"login": "a", "password": ""}), "password"),
        (json!({"password": "x"}), "login"),
        (json!({"login": "a"}), "password"),
    ] {
        let problem = expect_problem(
            app.post("/v1/auth/login", None, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/v1/auth/refresh", None, json!({"refresh_token": token}))
        .await
}

#[tokio::test]
async fn a_refresh_token_is_rotated_and_works_once() {
    let app = spawn_app().await;
    let user = app.register("dave").await;
    let pair = expect_json(refresh(&app, &user.refresh_token).await, StatusCode::OK).await;
    let new_refresh = pair["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, user.refresh_token);
    expect_json(
        app.get("/v1/users/me", pair["access_token"].as_str()).await,
        StatusCode::OK,
    )
    .await;
    expect_json(refresh(&app, new_refresh).await, StatusCode::OK).await;
}

#[tokio::test]
async fn re_using_a_spent_refresh_token_revokes_its_whole_family() {
    let app = spawn_app().await;
    let user = app.register("erin").await;
    let second = expect_json(refresh(&app, &user.refresh_token).await, StatusCode::OK).await;
    // A thief replays the first token: refused, and the legitimate successor dies with it.
    expect_problem(
        refresh(&app, &user.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    expect_problem(
        refresh(&app, second["refresh_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    // Another sign-in is another family, untouched.
    let other = expect_json(
        app.post(
            "/v1/auth/login",
            None,
            json!({"login": "erin", "password": user.password}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        refresh(&app, other["refresh_token"].as_str().unwrap()).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_yield_exactly_one_new_pair() {
    let app = spawn_app().await;
    let user = app.register("frank").await;
    let attempts =
        futures_util::future::join_all((0..5).map(|_| refresh(&app, &user.refresh_token))).await;
    let ok = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "exactly one refresh wins");
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_refused() {
    let app = spawn_app().await;
    expect_problem(
        refresh(&app, "not-a-token").await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    let missing = app.post("/v1/auth/refresh", None, json!({})).await;
    expect_problem(
        missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = spawn_app().await;
    let user = app.register("gina").await;
    let response = app
        .post(
            "/v1/auth/logout",
            None,
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    expect_status(response, StatusCode::NO_CONTENT).await;
    expect_problem(
        refresh(&app, &user.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    // Logging out twice, or with an unknown token, is not an error and reveals nothing.
    let again = app
        .post(
            "/v1/auth/logout",
            None,
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    expect_status(again, StatusCode::NO_CONTENT).await;
}
