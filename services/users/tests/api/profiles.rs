//! Own account, public profiles, batch lookups.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_public_profile_never_shows_the_email_and_shows_relationships_when_signed_in() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    expect_status(
        app.put(
            &format!("/v1/users/{}/follow", bob.id),
            Some(&alice.access_token),
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;

    let anonymous = expect_json(
        app.get(&format!("/v1/users/{}", bob.id), None).await,
        StatusCode::OK,
    )
    .await;
    assert!(anonymous.get("email").is_none());
    assert!(anonymous.get("followed_by_me").is_none());
    assert_eq!(anonymous["followers_count"], 1);

    let seen_by_alice = expect_json(
        app.get(&format!("/v1/users/{}", bob.id), Some(&alice.access_token))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            seen_by_alice["followed_by_me"].as_bool(),
            seen_by_alice["follows_me"].as_bool()
        ),
        (Some(true), Some(false))
    );

    let by_name = expect_json(
        app.get("/v1/users/by-username/BOB", Some(&bob.access_token))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_name["id"], bob.id.to_string());
    assert_eq!(
        (
            by_name["followed_by_me"].as_bool(),
            by_name["follows_me"].as_bool()
        ),
        (Some(false), Some(false))
    );
}

#[tokio::test]
async fn unknown_or_malformed_ids_and_usernames_are_404() {
    let app = spawn_app().await;
    for path in [
        format!("/v1/users/{}", uuid::Uuid::now_v7()),
        "/v1/users/not-a-uuid".to_owned(),
        "/v1/users/by-username/nobody".to_owned(),
        "/v1/users/by-username/x".to_owned(),
    ] {
        expect_problem(
            app.get(&path, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
}

#[tokio::test]
async fn patching_me_changes_only_the_fields_sent_and_null_resets() {
    let app = spawn_app().await;
    let user = app.register("carol").await;
    let token = Some(user.access_token.as_str());
    let patch = |body| app.request(Method::PATCH, "/v1/users/me", token, Some(body));

    let after = expect_json(
        patch(json!({"display_name": "Carol C", "bio": "hello"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (after["display_name"].as_str(), after["bio"].as_str()),
        (Some("Carol C"), Some("hello"))
    );
    let bio_only = expect_json(patch(json!({"bio": "changed"})).await, StatusCode::OK).await;
    assert_eq!(
        (bio_only["display_name"].as_str(), bio_only["bio"].as_str()),
        (Some("Carol C"), Some("changed"))
    );
    let reset = expect_json(
        patch(json!({"display_name": null, "bio": null})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (reset["display_name"].as_str(), reset["bio"].as_str()),
        (Some("carol"), Some(""))
    );
}

#[tokio::test]
async fn patching_me_refuses_bad_values_unknown_fields_and_anonymous_callers() {
    let app = spawn_app().await;
    let user = app.register("dora").await;
    let token = Some(user.access_token.as_str());
    for (body, field) in [
        (json!({"display_name": "x".repeat(51)}), "display_name"),
        (json!({"display_name": "   "}), "display_name"),
        (json!({"bio": "b".repeat(301)}), "bio"),
        (json!({"email": "new@example.com"}), "email"),
        (json!({"role": "admin"}), "role"),
    ] {
        let response = app
            .request(Method::PATCH, "/v1/users/me", token, Some(body))
            .await;
        let problem = expect_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    let anonymous = app
        .request(
            Method::PATCH,
            "/v1/users/me",
            None,
            Some(json!({"bio": "x"})),
        )
        .await;
    expect_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn batch_lookup_returns_known_profiles_and_omits_unknown_ids() {
    let app = spawn_app().await;
    let a = app.register("batch_a").await;
    let b = app.register("batch_b").await;
    let unknown = uuid::Uuid::now_v7();
    let body = expect_json(
        app.get(&format!("/v1/users?ids={},{},{unknown}", a.id, b.id), None)
            .await,
        StatusCode::OK,
    )
    .await;
    let mut ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![a.id.to_string(), b.id.to_string()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(body["items"][0].get("email").is_none());
}

#[tokio::test]
async fn batch_lookup_refuses_missing_malformed_and_too_many_ids() {
    let app = spawn_app().await;
    let too_many = (0..101)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect::<Vec<_>>()
        .join(",");
    for query in [
        "/v1/users".to_owned(),
        "/v1/users?ids=".to_owned(),
        "/v1/users?ids=nope".to_owned(),
        format!("/v1/users?ids={too_many}"),
    ] {
        let problem = expect_problem(
            app.get(&query, None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "ids", "{query}");
    }
}
