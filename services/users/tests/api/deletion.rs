//! Deleting your own account: confirmed with the password, gone at once from the users schema
//! with the graph kept consistent, and queued for the other services in the same transaction.

use crate::helpers::{expect_problem, expect_status, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn deleting_an_account_removes_it_and_queues_the_other_services() {
    let app = spawn_app().await;
    let leaving = app.register("leaving").await;
    let fan = app.register("fan").await;
    let star = app.register("star").await;
    for (who, whom) in [(&fan, &leaving), (&leaving, &star)] {
        let path = format!("/v1/users/{}/follow", whom.id);
        expect_status(
            app.put(&path, Some(&who.access_token)).await,
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    let fan_etag_before = app
        .get(&format!("/v1/users/{}/following/ids", fan.id), None)
        .await
        .headers()["etag"]
        .clone();

    let deleted = app
        .request(
            Method::DELETE,
            "/v1/users/me",
            Some(&leaving.access_token),
            Some(json!({"password": leaving.password})),
        )
        .await;
    expect_status(deleted, StatusCode::NO_CONTENT).await;

    // Gone: profile, sign-in, refresh.
    let profile = app.get(&format!("/v1/users/{}", leaving.id), None).await;
    expect_problem(profile, StatusCode::NOT_FOUND, "not_found").await;
    let login = app
        .post(
            "/v1/auth/login",
            None,
            json!({"login": "leaving", "password": leaving.password}),
        )
        .await;
    expect_problem(login, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let refresh = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": leaving.refresh_token}),
        )
        .await;
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    // The graph around it stays exact, and the fan's cached followee list is invalidated.
    let fan_profile: Value = app
        .get(&format!("/v1/users/{}", fan.id), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fan_profile["following_count"], 0);
    let star_profile: Value = app
        .get(&format!("/v1/users/{}", star.id), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(star_profile["followers_count"], 0);
    let fan_etag_after = app
        .get(&format!("/v1/users/{}/following/ids", fan.id), None)
        .await
        .headers()["etag"]
        .clone();
    assert_ne!(fan_etag_before, fan_etag_after);
    // One outbox event per service holding the account's data, and the audit record.
    let queued: Vec<(String, String)> = sqlx::query_as(
        "SELECT target, event FROM users.outbox WHERE subject_id = $1 ORDER BY target",
    )
    .bind(leaving.id)
    .fetch_all(&app.admin_pool)
    .await
    .unwrap();
    assert_eq!(
        queued,
        [
            ("messaging".to_owned(), "account_deleted".to_owned()),
            ("posts".to_owned(), "account_deleted".to_owned())
        ]
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users.audit_log WHERE event = 'account.deleted' AND subject_id = $1",
    )
    .bind(leaving.id)
    .fetch_one(&app.admin_pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // A second deletion with a still-valid access token finds nothing.
    let again = app
        .request(
            Method::DELETE,
            "/v1/users/me",
            Some(&leaving.access_token),
            Some(json!({"password": leaving.password})),
        )
        .await;
    expect_problem(again, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn deletion_needs_the_password() {
    let app = spawn_app().await;
    let user = app.register("careful").await;
    let token = Some(user.access_token.as_str());
    for (body, status, code) in [
        (
            json!({"password": "not-my-password"}),
            422,
            "wrong_password",
        ),
        (json!({}), 422, "validation_failed"),
        (json!({"password": 12345678}), 422, "validation_failed"),
        (
            json!({"password": "x".repeat(129)}),
            422,
            "validation_failed",
        ),
        (
            json!({"password": user.password, "role": "admin"}),
            422,
            "validation_failed",
        ),
    ] {
        let response = app
            .request(Method::DELETE, "/v1/users/me", token, Some(body.clone()))
            .await;
        let status = StatusCode::from_u16(status).unwrap();
        expect_problem(response, status, code).await;
    }
    let no_body = app
        .request(Method::DELETE, "/v1/users/me", token, None)
        .await;
    assert!(no_body.status().is_client_error());
    let anonymous = app
        .request(
            Method::DELETE,
            "/v1/users/me",
            None,
            Some(json!({"password": user.password})),
        )
        .await;
    expect_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // Still there.
    expect_status(app.get("/v1/users/me", token).await, StatusCode::OK).await;
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_other_sessions() {
    let app = spawn_app().await;
    let user = app.register("mover").await;
    let token = Some(user.access_token.as_str());
    let wrong = app
        .request(
            Method::PUT,
            "/v1/users/me/password",
            token,
            Some(json!({"current_password": "nope-nope", "new_password": "brand-new-pass"})),
        )
        .await;
    let body = expect_problem(wrong, StatusCode::UNPROCESSABLE_ENTITY, "wrong_password").await;
    assert_eq!(body["errors"][0]["field"], "current_password");
    let short = app
        .request(
            Method::PUT,
            "/v1/users/me/password",
            token,
            Some(json!({"current_password": user.password, "new_password": "short"})),
        )
        .await;
    let body = expect_problem(short, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "new_password");

    let changed = app
        .request(
            Method::PUT,
            "/v1/users/me/password",
            token,
            Some(json!({"current_password": user.password, "new_password": "brand-new-pass"})),
        )
        .await;
    expect_status(changed, StatusCode::NO_CONTENT).await;
    let refresh = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(
        refresh.status(),
        StatusCode::UNAUTHORIZED,
        "old sessions end"
    );
    let old = app
        .post(
            "/v1/auth/login",
            None,
            json!({"login": "mover", "password": user.password}),
        )
        .await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = app
        .post(
            "/v1/auth/login",
            None,
            json!({"login": "mover", "password": "brand-new-pass"}),
        )
        .await;
    assert_eq!(new.status(), StatusCode::OK);
}
