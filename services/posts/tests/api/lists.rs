//! Replies and author timelines.

use crate::helpers::*;
use reqwest::StatusCode;

#[tokio::test]
async fn replies_page_oldest_first() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let parent = app.post(&alice, "thread").await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        app.reply(who, &parent, &format!("reply {i}")).await;
        expected.push(format!("reply {i}"));
    }
    let path = format!("/v1/posts/{}/replies", parent["id"].as_str().unwrap());
    assert_eq!(app.walk(&path, None, 2).await, expected);
    let unknown = format!("/v1/posts/{}/replies", uuid::Uuid::now_v7());
    expect_problem(
        app.get(&unknown, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn an_author_timeline_pages_newest_first_and_can_leave_replies_out() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let first = app.post(&alice, "one").await;
    app.reply(&alice, &first, "two (reply)").await;
    app.post(&alice, "three").await;
    let path = format!("/v1/users/{}/posts", alice.id);
    assert_eq!(
        app.walk(&path, None, 2).await,
        vec!["three", "two (reply)", "one"]
    );
    assert_eq!(
        app.walk(&format!("{path}?exclude_replies=true"), None, 1)
            .await,
        vec!["three", "one"]
    );
}

#[tokio::test]
async fn an_unknown_author_is_404_and_bad_queries_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let unknown = format!("/v1/users/{}/posts", uuid::Uuid::now_v7());
    expect_problem(
        app.get(&unknown, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let path = format!("/v1/users/{}/posts", alice.id);
    expect_problem(
        app.get(&format!("{path}?limit=0"), None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_problem(
        app.get(&format!("{path}?limit=many"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    expect_problem(
        app.get(&format!("{path}?exclude_replies=maybe"), None)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    expect_problem(
        app.get(&format!("{path}?cursor=AAAA"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
}
