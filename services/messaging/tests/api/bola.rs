//! The BOLA matrix for messaging: every operation that names a conversation or a message, tried
//! by a user who is not a participant, answers 404 exactly as for an id that does not exist;
//! the list is checked against the OpenAPI document.

use crate::helpers::{expect_json, expect_problem, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;
use test_support::bola::{Access, Case, as_intruder, as_owner, assert_covers};

#[tokio::test]
async fn no_one_outside_a_conversation_can_see_or_touch_it() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let dave = app.register("dave").await;
    let erin = app.register("erin").await;
    let bob = app.register("bob").await;
    let conversation = app.conversation(&alice, &[&carol, &dave]).await;
    let message = app.send(&alice, &conversation, "original").await;
    let message_id = message["id"].as_str().unwrap().to_owned();

    let document: serde_json::Value =
        serde_json::from_str(&common::openapi::render(&messaging::openapi())).unwrap();
    let owner = |status| Access::Owner { owner: status };
    let cases = [
        Case::new(Method::GET, "/v1/conversations/{id}", None, owner(200)),
        Case::new(
            Method::GET,
            "/v1/conversations/{id}/messages",
            None,
            owner(200),
        ),
        Case::new(
            Method::POST,
            "/v1/conversations/{id}/messages",
            Some(json!({"body": "hi"})),
            owner(201),
        ),
        Case::new(
            Method::POST,
            "/v1/conversations/{id}/read",
            Some(json!({"seq": 1})),
            owner(200),
        ),
        Case::new(
            Method::PATCH,
            "/v1/conversations/{id}/messages/{message_id}",
            Some(json!({"body": "edited"})),
            owner(200),
        ),
        Case::new(
            Method::POST,
            "/v1/conversations/{id}/participants",
            Some(json!({"user_ids": [erin.id]})),
            owner(200),
        ),
        Case::new(
            Method::DELETE,
            "/v1/conversations/{id}/participants/{user_id}",
            None,
            owner(204),
        ),
        Case::new(
            Method::DELETE,
            "/v1/conversations/{id}/messages/{message_id}",
            None,
            owner(204),
        ),
        Case::new(
            Method::POST,
            "/internal/v1/accounts/{id}/deletion",
            None,
            Access::Internal,
        ),
    ];
    let ids = [
        ("id", conversation.clone()),
        ("message_id", message_id.clone()),
        ("user_id", dave.id.to_string()),
    ];

    // A participant who is not the sender cannot edit or delete the message either.
    let message_path = format!("/v1/conversations/{conversation}/messages/{message_id}");
    let edit = app
        .request(
            Method::PATCH,
            &message_path,
            Some(&carol.token),
            Some(json!({"body": "mine now"})),
        )
        .await;
    expect_problem(edit, StatusCode::NOT_FOUND, "not_found").await;
    let delete = app
        .request(Method::DELETE, &message_path, Some(&carol.token), None)
        .await;
    expect_problem(delete, StatusCode::NOT_FOUND, "not_found").await;

    assert_covers(&document, &cases);
    as_intruder(&app.client, &app.address, &cases, &ids, &bob.token).await;

    // The intruder's requests changed nothing.
    let page = expect_json(
        app.get(
            &format!("/v1/conversations/{conversation}/messages"),
            &alice.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let texts: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "text")
        .collect();
    assert_eq!(texts.len(), 1, "{page}");
    assert_eq!(texts[0]["body"], "original");
    let view = expect_json(
        app.get(&format!("/v1/conversations/{conversation}"), &alice.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["participants"].as_array().unwrap().len(), 3, "{view}");

    as_owner(&app.client, &app.address, &cases, &ids, &alice.token).await;
}
