//! Roles and suspension, for admins only.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn an_admin_sets_roles_and_the_next_token_carries_them() {
    let app = spawn_app().await;
    let admin = app.register_admin("root").await;
    let user = app.register("mod").await;
    let path = format!("/v1/admin/users/{}/role", user.id);
    let response = app
        .request(
            Method::PUT,
            &path,
            Some(&admin.access_token),
            Some(json!({"role": "moderator"})),
        )
        .await;
    expect_status(response, StatusCode::NO_CONTENT).await;
    let login = expect_json(
        app.post(
            "/v1/auth/login",
            None,
            json!({"login": "mod", "password": user.password}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let me = expect_json(
        app.get("/v1/users/me", login["access_token"].as_str())
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["role"], "moderator");
}

#[tokio::test]
async fn role_changes_refuse_non_admins_unknown_roles_and_unknown_accounts() {
    let app = spawn_app().await;
    let admin = app.register_admin("root").await;
    let user = app.register("plain").await;
    let path = format!("/v1/admin/users/{}/role", user.id);
    let by_user = app
        .request(
            Method::PUT,
            &path,
            Some(&user.access_token),
            Some(json!({"role": "admin"})),
        )
        .await;
    expect_problem(by_user, StatusCode::FORBIDDEN, "forbidden").await;
    let bad_role = app
        .request(
            Method::PUT,
            &path,
            Some(&admin.access_token),
            Some(json!({"role": "god"})),
        )
        .await;
    expect_problem(
        bad_role,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let unknown = format!("/v1/admin/users/{}/role", uuid::Uuid::now_v7());
    let response = app
        .request(
            Method::PUT,
            &unknown,
            Some(&admin.access_token),
            Some(json!({"role": "user"})),
        )
        .await;
    expect_problem(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_suspended_user_can_neither_log_in_nor_refresh_until_reinstated() {
    let app = spawn_app().await;
    let admin = app.register_admin("root").await;
    let user = app.register("rowdy").await;
    let suspend = app
        .post(
            &format!("/v1/admin/users/{}/suspend", user.id),
            Some(&admin.access_token),
            json!({}),
        )
        .await;
    expect_status(suspend, StatusCode::NO_CONTENT).await;

    let login = app
        .post(
            "/v1/auth/login",
            None,
            json!({"login": "rowdy", "password": user.password}),
        )
        .await;
    expect_problem(login, StatusCode::FORBIDDEN, "account_suspended").await;
    let refresh = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    expect_problem(refresh, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;

    let unsuspend = app
        .post(
            &format!("/v1/admin/users/{}/unsuspend", user.id),
            Some(&admin.access_token),
            json!({}),
        )
        .await;
    expect_status(unsuspend, StatusCode::NO_CONTENT).await;
    let login = app
        .post(
            "/v1/auth/login",
            None,
            json!({"login": "rowdy", "password": user.password}),
        )
        .await;
    expect_json(login, StatusCode::OK).await;
}

#[tokio::test]
async fn only_admins_suspend_and_a_demoted_admin_loses_the_power_at_once() {
    let app = spawn_app().await;
    let admin = app.register_admin("root").await;
    let user = app.register("target").await;
    let path = format!("/v1/admin/users/{}/suspend", user.id);
    expect_problem(
        app.post(&path, Some(&user.access_token), json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let unknown = format!("/v1/admin/users/{}/suspend", uuid::Uuid::now_v7());
    expect_problem(
        app.post(&unknown, Some(&admin.access_token), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    sqlx::query("UPDATE users.accounts SET role = 'user' WHERE id = $1")
        .bind(admin.id)
        .execute(&app.admin_pool)
        .await
        .unwrap();
    // The token still says admin; the database says otherwise, and wins.
    expect_problem(
        app.post(&path, Some(&admin.access_token), json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}
