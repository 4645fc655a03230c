//! Likes: idempotent, exact under concurrency.

use crate::helpers::*;
use reqwest::{Method, StatusCode};

async fn like_count(app: &TestApp, post: &str) -> i64 {
    expect_json(
        app.get(&format!("/v1/posts/{post}"), None).await,
        StatusCode::OK,
    )
    .await["like_count"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn likes_are_idempotent_both_ways_and_show_as_liked_by_me() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let post = app.post(&alice, "likeable").await;
    let id = post["id"].as_str().unwrap();
    let path = format!("/v1/posts/{id}/like");
    for _ in 0..2 {
        expect_status(
            app.request(Method::PUT, &path, Some(&bob.token), None)
                .await,
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    assert_eq!(like_count(&app, id).await, 1);
    let seen = expect_json(
        app.get(&format!("/v1/posts/{id}"), Some(&bob.token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seen["liked_by_me"], true);
    for _ in 0..2 {
        expect_status(
            app.request(Method::DELETE, &path, Some(&bob.token), None)
                .await,
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    assert_eq!(like_count(&app, id).await, 0);
}

#[tokio::test]
async fn concurrent_likes_are_counted_exactly() {
    let app = spawn_app().await;
    let author = app.register("author").await;
    let post = app.post(&author, "popular").await;
    let id = post["id"].as_str().unwrap().to_owned();
    let mut fans = Vec::new();
    for i in 0..8 {
        fans.push(app.register(&format!("fan{i}")).await);
    }
    let path = format!("/v1/posts/{id}/like");
    let attempts = fans.iter().flat_map(|fan| {
        [
            app.request(Method::PUT, &path, Some(&fan.token), None),
            app.request(Method::PUT, &path, Some(&fan.token), None),
        ]
    });
    for response in futures_util::future::join_all(attempts).await {
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(like_count(&app, &id).await, 8);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM posts.likes")
        .fetch_one(&app.admin_pool)
        .await
        .unwrap();
    assert_eq!(rows, 8);
}

#[tokio::test]
async fn liking_unknown_posts_or_anonymously_is_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let unknown = format!("/v1/posts/{}/like", uuid::Uuid::now_v7());
    expect_problem(
        app.request(Method::PUT, &unknown, Some(&alice.token), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(
        app.request(Method::DELETE, &unknown, Some(&alice.token), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let post = app.post(&alice, "x").await;
    let path = format!("/v1/posts/{}/like", post["id"].as_str().unwrap());
    expect_problem(
        app.request(Method::PUT, &path, None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
}

/// `liked_by_me` of each item, by text; `None` where the field is absent.
fn liked_flags(page: &serde_json::Value) -> Vec<(String, Option<bool>)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["text"].as_str().unwrap().to_owned(),
                p.get("liked_by_me").map(|v| v.as_bool().unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn liked_by_me_is_the_viewers_own_like_on_every_read() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (
        app.register("alice").await,
        app.register("bob").await,
        app.register("carol").await,
    );
    app.follow(&bob, &alice).await;
    app.follow(&carol, &alice).await;
    let liked = app.post(&alice, "liked").await;
    app.post(&alice, "not liked").await;
    let reply = app.reply(&alice, &liked, "liked reply").await;
    for post in [&liked, &reply] {
        let path = format!("/v1/posts/{}/like", post["id"].as_str().unwrap());
        let response = app
            .request(Method::PUT, &path, Some(&bob.token), None)
            .await;
        expect_status(response, StatusCode::NO_CONTENT).await;
    }
    // A new post is answered as not liked by its author.
    assert_eq!(liked["liked_by_me"], false);

    let timeline = format!("/v1/users/{}/posts", alice.id);
    let replies = format!("/v1/posts/{}/replies", liked["id"].as_str().unwrap());
    let single = format!("/v1/posts/{}", liked["id"].as_str().unwrap());
    let read = |path: String, token: Option<String>| {
        let app = &app;
        async move { expect_json(app.get(&path, token.as_deref()).await, StatusCode::OK).await }
    };
    let own = |flag: bool| -> Vec<(String, Option<bool>)> {
        vec![
            ("liked reply".to_owned(), Some(flag)),
            ("not liked".to_owned(), Some(false)),
            ("liked".to_owned(), Some(flag)),
        ]
    };
    for (who, flag) in [(&bob, true), (&carol, false)] {
        let token = Some(who.token.clone());
        // The feed and the timeline read likes in their statements; replies ask afterwards.
        let feed = read("/v1/feed".to_owned(), token.clone()).await;
        assert_eq!(liked_flags(&feed), own(flag), "feed");
        let page = read(timeline.clone(), token.clone()).await;
        assert_eq!(liked_flags(&page), own(flag), "timeline");
        let page = read(replies.clone(), token.clone()).await;
        assert_eq!(
            liked_flags(&page),
            vec![("liked reply".to_owned(), Some(flag))],
            "replies"
        );
        let post = read(single.clone(), token).await;
        assert_eq!(post["liked_by_me"], flag, "single post");
    }
    // Anonymous readers have no likes to show.
    let page = read(timeline.clone(), None).await;
    assert!(liked_flags(&page).iter().all(|(_, flag)| flag.is_none()));
    let post = read(single, None).await;
    assert!(post.get("liked_by_me").is_none());
}
