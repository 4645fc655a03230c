//! The BOLA matrix for posts: posts are public, so reading them is for anyone and liking one is
//! about the liker's own like; changing or deleting a post is its author's alone, and anyone
//! else gets 404 exactly as for a post that does not exist. The list is checked against the
//! OpenAPI document.

use crate::helpers::{expect_json, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;
use test_support::bola::{Access, Case, as_intruder, as_owner, assert_covers};

#[tokio::test]
async fn only_the_author_can_change_or_delete_a_post() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.post(&alice, "original").await;
    let post_id = post["id"].as_str().unwrap().to_owned();

    let document: serde_json::Value =
        serde_json::from_str(&common::openapi::render(&posts::openapi())).unwrap();
    let cases = [
        Case::new(Method::GET, "/v1/posts/{id}", None, Access::Anyone(200)),
        Case::new(
            Method::GET,
            "/v1/posts/{id}/replies",
            None,
            Access::Anyone(200),
        ),
        Case::new(
            Method::GET,
            "/v1/users/{id}/posts",
            None,
            Access::Anyone(200),
        )
        .with_id("id", alice.id),
        // A like is the liker's own: anyone may like and unlike a post they can read.
        Case::new(
            Method::PUT,
            "/v1/posts/{id}/like",
            None,
            Access::Anyone(204),
        ),
        Case::new(
            Method::DELETE,
            "/v1/posts/{id}/like",
            None,
            Access::Anyone(204),
        ),
        Case::new(
            Method::PATCH,
            "/v1/posts/{id}",
            Some(json!({"text": "edited"})),
            Access::Owner { owner: 200 },
        ),
        Case::new(
            Method::DELETE,
            "/v1/posts/{id}",
            None,
            Access::Owner { owner: 204 },
        ),
        Case::new(
            Method::POST,
            "/internal/v1/accounts/{id}/deletion",
            None,
            Access::Internal,
        )
        .with_id("id", alice.id),
    ];
    let ids = [("id", post_id.clone())];
    assert_covers(&document, &cases);
    as_intruder(&app.client, &app.address, &cases, &ids, &bob.token).await;

    let seen = expect_json(
        app.get(&format!("/v1/posts/{post_id}"), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seen["text"], "original", "{seen}");
    assert!(seen["edited_at"].is_null(), "{seen}");

    as_owner(&app.client, &app.address, &cases, &ids, &alice.token).await;
    let gone = app.get(&format!("/v1/posts/{post_id}"), None).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}
