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
