//! The audit log: security events recorded with who, what, when and from where, readable by
//! admins only, and append-only.

use crate::helpers::{TestApp, expect_json, expect_problem, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

/// Every entry of the log about `user` (or all), following cursors, newest first.
async fn entries(app: &TestApp, admin_token: &str, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/admin/audit?limit=2{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = expect_json(app.get(&path, Some(admin_token)).await, StatusCode::OK).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

fn events(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn security_events_are_recorded_with_their_request_and_read_by_admins() {
    let app = spawn_app_with(|s| s.base.rate_limits.trusted_proxy_hops = 1).await;
    let admin = app.register_admin("root").await;
    let alice = app.register("alice").await;

    // A failed and a successful sign-in, from a known address, agent and request id.
    for (password, status) in [("wrong-password", 401), ("password-alice", 200)] {
        let response = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("user-agent", "audit-test/1.0")
            .header("x-request-id", format!("req-{status}"))
            .json(&json!({"login": "alice", "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
    }
    // Refresh-token re-use, logout, a role change and a suspension.
    let first = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": alice.refresh_token}),
        )
        .await;
    let pair = expect_json(first, StatusCode::OK).await;
    let reuse = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": alice.refresh_token}),
        )
        .await;
    assert_eq!(reuse.status(), StatusCode::UNAUTHORIZED);
    let logout = app
        .post(
            "/v1/auth/logout",
            None,
            json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let role = app
        .request(
            reqwest::Method::PUT,
            &format!("/v1/admin/users/{}/role", alice.id),
            Some(&admin.access_token),
            Some(json!({"role": "moderator"})),
        )
        .await;
    assert_eq!(role.status(), StatusCode::NO_CONTENT);
    let suspend = app
        .post(
            &format!("/v1/admin/users/{}/suspend", alice.id),
            Some(&admin.access_token),
            json!(null),
        )
        .await;
    assert_eq!(suspend.status(), StatusCode::NO_CONTENT);

    let about_alice = entries(&app, &admin.access_token, &format!("&user_id={}", alice.id)).await;
    assert_eq!(
        events(&about_alice),
        [
            "admin.suspended",
            "admin.role_changed",
            "auth.logged_out",
            "auth.refresh_token_reused",
            "auth.login_succeeded",
            "auth.login_failed",
            "account.registered",
        ]
    );
    let failed = &about_alice[5];
    assert_eq!(failed["ip"], "203.0.113.9");
    assert_eq!(failed["user_agent"], "audit-test/1.0");
    assert_eq!(failed["request_id"], "req-401");
    assert_eq!(failed["actor_id"], Value::Null);
    assert_eq!(failed["subject_id"], alice.id.to_string());
    assert_eq!(failed["detail"]["reason"], "wrong_password");
    assert_eq!(about_alice[4]["request_id"], "req-200");
    let role_change = &about_alice[1];
    assert_eq!(role_change["actor_id"], admin.id.to_string());
    assert_eq!(role_change["detail"]["role"], "moderator");

    // Filtered by event, across users.
    let registrations = entries(&app, &admin.access_token, "&event=account.registered").await;
    assert_eq!(registrations.len(), 2, "{registrations:?}");

    // The log cannot be changed, even by the service's own role.
    let mut conn = sqlx::PgConnection::connect(&app.db.url_for("users"))
        .await
        .unwrap();
    let tampering = sqlx::query("DELETE FROM users.audit_log")
        .execute(&mut conn)
        .await;
    assert!(tampering.is_err(), "the audit log must refuse deletes");
    let rewriting = sqlx::query("UPDATE users.audit_log SET event = 'auth.logged_out'")
        .execute(&mut conn)
        .await;
    assert!(rewriting.is_err(), "the audit log must refuse updates");
}

#[tokio::test]
async fn only_admins_read_the_audit_log() {
    let app = spawn_app().await;
    let user = app.register("plain").await;
    let moderator = app.register("mod").await;
    sqlx::query("UPDATE users.accounts SET role = 'moderator' WHERE id = $1")
        .bind(moderator.id)
        .execute(&app.admin_pool)
        .await
        .unwrap();
    expect_problem(
        app.get("/v1/admin/audit", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    for token in [&user.access_token, &moderator.access_token] {
        expect_problem(
            app.get("/v1/admin/audit", Some(token)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
}

#[tokio::test]
async fn bad_audit_queries_are_refused() {
    let app = spawn_app().await;
    let admin = app.register_admin("root").await;
    let token = Some(admin.access_token.as_str());
    for (query, status, code) in [
        (
            "event=not.an_event",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "limit=101",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        ("limit=ten", StatusCode::BAD_REQUEST, "invalid_query"),
        ("user_id=nope", StatusCode::BAD_REQUEST, "invalid_query"),
        ("cursor=garbage", StatusCode::BAD_REQUEST, "invalid_cursor"),
        ("role=admin", StatusCode::BAD_REQUEST, "invalid_query"),
    ] {
        let response = app.get(&format!("/v1/admin/audit?{query}"), token).await;
        expect_problem(response, status, code).await;
    }
}

fn service_token(service: &str) -> String {
    test_support::tokens::valid(&test_support::tokens::claims(
        uuid::Uuid::nil(),
        json!({"sub": format!("svc:{service}"), "aud": "social-internal", "role": "service"}),
    ))
}

#[tokio::test]
async fn only_posts_reports_moderation_and_each_report_is_recorded_once() {
    let app = spawn_app().await;
    let admin = app.register_admin("root").await;
    let report = json!({
        "source_id": "moderation:1", "event": "moderation.post_deleted",
        "occurred_at": "2026-11-22T10:00:00Z", "actor_id": admin.id, "subject_id": admin.id,
        "ip": "192.0.2.1", "user_agent": "ua", "request_id": "r-1", "detail": {"post_id": "p"},
    });
    let user = app.register("plain").await;
    let as_user = app
        .post(
            "/internal/v1/audit",
            Some(&user.access_token),
            report.clone(),
        )
        .await;
    expect_problem(as_user, StatusCode::FORBIDDEN, "forbidden").await;
    let as_messaging = app
        .post(
            "/internal/v1/audit",
            Some(&service_token("messaging")),
            report.clone(),
        )
        .await;
    expect_problem(
        as_messaging,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let mut bad = report.clone();
    bad["ip"] = json!("not an address");
    bad["event"] = json!("admin.suspended");
    let body = expect_problem(
        app.post("/internal/v1/audit", Some(&service_token("posts")), bad)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
    for _ in 0..2 {
        let response = app
            .post(
                "/internal/v1/audit",
                Some(&service_token("posts")),
                report.clone(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let entries = entries(&app, &admin.access_token, "&event=moderation.post_deleted").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["ip"], "192.0.2.1");
    assert_eq!(entries[0]["occurred_at"], "2026-11-22T10:00:00Z");
}
