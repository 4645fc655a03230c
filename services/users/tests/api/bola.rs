//! The BOLA matrix for users: profiles and follow lists are public, follows and blocks are the
//! caller's own relations, role and suspension are for admins, and the internal lookups for
//! services. No id-taking operation is owner-only here; the matrix pins each one's access and
//! is checked against the OpenAPI document, so one added later has to say who may use it.

use crate::helpers::{expect_json, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;
use test_support::bola::{Access, Case, as_intruder, assert_covers};

#[tokio::test]
async fn every_id_taking_operation_has_its_stated_access_for_another_user() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let document: serde_json::Value =
        serde_json::from_str(&common::openapi::render(&users::openapi())).unwrap();
    let cases = [
        Case::new(Method::GET, "/v1/users/{id}", None, Access::Anyone(200)),
        Case::new(
            Method::GET,
            "/v1/users/by-username/{username}",
            None,
            Access::Anyone(200),
        ),
        Case::new(
            Method::GET,
            "/v1/users/{id}/followers",
            None,
            Access::Anyone(200),
        ),
        Case::new(
            Method::GET,
            "/v1/users/{id}/following",
            None,
            Access::Anyone(200),
        ),
        Case::new(
            Method::GET,
            "/v1/users/{id}/following/ids",
            None,
            Access::Anyone(200),
        ),
        Case::new(
            Method::PUT,
            "/v1/users/{id}/follow",
            None,
            Access::Anyone(204),
        ),
        Case::new(
            Method::DELETE,
            "/v1/users/{id}/follow",
            None,
            Access::Anyone(204),
        ),
        Case::new(
            Method::PUT,
            "/v1/users/{id}/block",
            None,
            Access::Anyone(204),
        ),
        Case::new(
            Method::DELETE,
            "/v1/users/{id}/block",
            None,
            Access::Anyone(204),
        ),
        Case::new(
            Method::PUT,
            "/v1/admin/users/{id}/role",
            Some(json!({"role": "admin"})),
            Access::Admin,
        ),
        Case::new(
            Method::POST,
            "/v1/admin/users/{id}/suspend",
            None,
            Access::Admin,
        ),
        Case::new(
            Method::POST,
            "/v1/admin/users/{id}/unsuspend",
            None,
            Access::Admin,
        ),
        Case::new(
            Method::GET,
            "/internal/v1/users/{id}",
            None,
            Access::Internal,
        ),
        Case::new(
            Method::POST,
            "/internal/v1/users/{id}/contactability",
            Some(json!({"user_ids": []})),
            Access::Internal,
        ),
    ];
    let ids = [
        ("id", alice.id.to_string()),
        ("username", "alice".to_owned()),
    ];
    assert_covers(&document, &cases);
    as_intruder(&app.client, &app.address, &cases, &ids, &bob.access_token).await;

    // Nothing the refused requests named took effect.
    let me = expect_json(
        app.get("/v1/users/me", Some(&alice.access_token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["role"], "user", "{me}");
    let bob_me = expect_json(
        app.get("/v1/users/me", Some(&bob.access_token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(bob_me["role"], "user", "{bob_me}");
    let suspended: bool =
        sqlx::query_scalar("SELECT suspended_at IS NOT NULL FROM users.accounts WHERE id = $1")
            .bind(alice.id)
            .fetch_one(&app.admin_pool)
            .await
            .unwrap();
    assert!(!suspended);
}
