//! Creating, reading, editing and deleting posts; who may do what.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_created_post_is_returned_with_its_author_and_readable_by_anyone() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let post = app.post(&alice, "hello world").await;
    assert_eq!(post["text"], "hello world");
    assert_eq!(post["author"]["id"], alice.id.to_string());
    assert_eq!(post["author"]["username"], "alice");
    assert_eq!(
        (post["like_count"].as_i64(), post["reply_count"].as_i64()),
        (Some(0), Some(0))
    );
    assert!(post["edited_at"].is_null() && post["reply_to"].is_null());

    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    let anonymous = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    assert_eq!(anonymous["text"], "hello world");
    assert!(anonymous.get("liked_by_me").is_none());
    let signed_in = expect_json(app.get(&path, Some(&alice.token)).await, StatusCode::OK).await;
    assert_eq!(signed_in["liked_by_me"], false);
}

#[tokio::test]
async fn post_creation_refuses_bad_bodies_with_the_field_named() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let unknown_parent = uuid::Uuid::now_v7();
    // A reply to a post that does not exist is well-formed: its own type says so (ADR 0015).
    let v = "validation_failed";
    let cases = [
        (json!({"text": ""}), v, "text", "empty"),
        (json!({"text": "   \n"}), v, "text", "only whitespace"),
        (json!({"text": "x".repeat(501)}), v, "text", "too long"),
        (json!({"text": "a\u{0}b"}), v, "text", "NUL"),
        (json!({}), v, "text", "missing"),
        (
            json!({"text": "hi", "mood": "happy"}),
            v,
            "mood",
            "unknown field",
        ),
        (json!({"text": 5}), v, "body", "wrong type"),
        (
            json!({"text": "hi", "reply_to": "not-a-uuid"}),
            v,
            "body",
            "reply_to not a uuid",
        ),
        (
            json!({"text": "hi", "reply_to": unknown_parent}),
            "unknown_reference",
            "reply_to",
            "reply_to unknown",
        ),
    ];
    for (body, code, field, why) in cases {
        let response = app
            .request(Method::POST, "/v1/posts", Some(&alice.token), Some(body))
            .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, code).await;
        assert_eq!(problem["errors"][0]["field"], field, "{why}: {problem}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM posts.posts")
        .fetch_one(&app.admin_pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing was written");
    let exactly_500 = app
        .request(
            Method::POST,
            "/v1/posts",
            Some(&alice.token),
            Some(json!({"text": "é".repeat(500)})),
        )
        .await;
    expect_status(exactly_500, StatusCode::CREATED).await;
}

#[tokio::test]
async fn creating_a_post_needs_a_valid_token_and_a_json_body() {
    let app = spawn_app().await;
    let anonymous = app
        .request(Method::POST, "/v1/posts", None, Some(json!({"text": "hi"})))
        .await;
    expect_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let forged = app
        .request(
            Method::POST,
            "/v1/posts",
            Some("a.b.c"),
            Some(json!({"text": "hi"})),
        )
        .await;
    expect_problem(forged, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let alice = app.register("alice").await;
    let form = app
        .client
        .post(format!("{}/v1/posts", app.address))
        .bearer_auth(&alice.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=hi")
        .send()
        .await
        .unwrap();
    expect_problem(
        form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let huge = app
        .request(
            Method::POST,
            "/v1/posts",
            Some(&alice.token),
            Some(json!({"text": "x".repeat(20_000)})),
        )
        .await;
    expect_problem(huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn unknown_and_malformed_post_ids_are_404() {
    let app = spawn_app().await;
    for path in [
        format!("/v1/posts/{}", uuid::Uuid::now_v7()),
        "/v1/posts/123".to_owned(),
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
async fn only_the_author_edits_and_others_get_404() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let post = app.post(&alice, "first draft").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());

    let by_bob = app
        .request(
            Method::PATCH,
            &path,
            Some(&bob.token),
            Some(json!({"text": "hacked"})),
        )
        .await;
    expect_problem(by_bob, StatusCode::NOT_FOUND, "not_found").await;
    let bad = app
        .request(
            Method::PATCH,
            &path,
            Some(&alice.token),
            Some(json!({"text": ""})),
        )
        .await;
    expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let edited = expect_json(
        app.request(
            Method::PATCH,
            &path,
            Some(&alice.token),
            Some(json!({"text": "final"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["text"], "final");
    assert!(edited["edited_at"].is_string());
    let unknown = format!("/v1/posts/{}", uuid::Uuid::now_v7());
    let missing = app
        .request(
            Method::PATCH,
            &unknown,
            Some(&alice.token),
            Some(json!({"text": "x"})),
        )
        .await;
    expect_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_author_deletes_their_post_and_others_get_404() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let post = app.post(&alice, "mine").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    expect_problem(
        app.request(Method::DELETE, &path, Some(&bob.token), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_status(
        app.request(Method::DELETE, &path, Some(&alice.token), None)
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect_problem(
        app.get(&path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        app.request(Method::DELETE, &path, Some(&alice.token), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_moderator_deletes_anyones_post_and_the_deletion_is_recorded() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let moderator = app.with_role("mod", "moderator").await;
    let post = app.post(&alice, "rule-breaking").await;
    let id: uuid::Uuid = post["id"].as_str().unwrap().parse().unwrap();
    expect_status(
        app.request(
            Method::DELETE,
            &format!("/v1/posts/{id}"),
            Some(&moderator.token),
            None,
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;

    let (moderator_id, author_id, text): (uuid::Uuid, uuid::Uuid, String) =
        sqlx::query_as("SELECT moderator_id, author_id, post_text FROM posts.moderation_actions WHERE post_id = $1")
            .bind(id)
            .fetch_one(&app.admin_pool)
            .await
            .unwrap();
    assert_eq!(
        (moderator_id, author_id, text.as_str()),
        (moderator.id, alice.id, "rule-breaking")
    );

    // A moderator deleting their own post is no moderation action.
    let own = app.post(&moderator, "mine").await;
    expect_status(
        app.request(
            Method::DELETE,
            &format!("/v1/posts/{}", own["id"].as_str().unwrap()),
            Some(&moderator.token),
            None,
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM posts.moderation_actions")
        .fetch_one(&app.admin_pool)
        .await
        .unwrap();
    assert_eq!(actions, 1);
}

#[tokio::test]
async fn replies_are_counted_on_their_parent_and_uncounted_when_deleted() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let parent = app.post(&alice, "question").await;
    let reply = app.reply(&bob, &parent, "answer").await;
    assert_eq!(reply["reply_to"], parent["id"]);
    // The feed's heads: a reply moves its author's newest post, not their newest root post.
    let topic = app.post(&alice, "another question").await;
    let bobs_root = app.post(&bob, "a post of my own").await;
    let bobs_reply = app.reply(&bob, &topic, "and another answer").await;
    let at = |post: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(post["created_at"].as_str().unwrap()).unwrap()
    };
    let head: (
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT last_post_at, last_root_post_at FROM posts.author_heads WHERE author_id = $1",
    )
    .bind(bob.id)
    .fetch_one(&app.admin_pool)
    .await
    .unwrap();
    assert_eq!(head.0, at(&bobs_reply));
    assert_eq!(head.1, Some(at(&bobs_root).into()));
    let replier_only = app.register("carol").await;
    app.reply(&replier_only, &topic, "only replies").await;
    let (roots,): (Option<chrono::DateTime<chrono::Utc>>,) =
        sqlx::query_as("SELECT last_root_post_at FROM posts.author_heads WHERE author_id = $1")
            .bind(replier_only.id)
            .fetch_one(&app.admin_pool)
            .await
            .unwrap();
    assert_eq!(roots, None, "no root post, no root head");
    let path = format!("/v1/posts/{}", parent["id"].as_str().unwrap());
    assert_eq!(
        expect_json(app.get(&path, None).await, StatusCode::OK).await["reply_count"],
        1
    );
    let reply_path = format!("/v1/posts/{}", reply["id"].as_str().unwrap());
    expect_status(
        app.request(Method::DELETE, &reply_path, Some(&bob.token), None)
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(
        expect_json(app.get(&path, None).await, StatusCode::OK).await["reply_count"],
        0
    );
}

#[tokio::test]
async fn posts_of_a_deleted_account_disappear_from_every_endpoint() {
    // The author cache lives one second here (and a tenth of that in the process), so the
    // deletion is seen once it expires.
    let app = spawn_app_with(&[("AUTHOR_CACHE_TTL_SECS", "1")]).await;
    let (gone, reader) = (app.register("gone").await, app.register("reader").await);
    app.follow(&reader, &gone).await;
    let post = app.post(&gone, "soon gone").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    assert_eq!(
        app.walk("/v1/feed", Some(&reader.token), 20).await,
        vec!["soon gone"]
    );

    // The account is deleted in the users service (the deletion endpoint arrives with the
    // hardening work; the effect on posts is the same).
    sqlx::query("DELETE FROM users.accounts WHERE id = $1")
        .bind(gone.id)
        .execute(&app.admin_pool)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    expect_problem(
        app.get(&path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        app.get(&format!("/v1/users/{}/posts", gone.id), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(
        app.walk("/v1/feed", Some(&reader.token), 20)
            .await
            .is_empty()
    );
}
