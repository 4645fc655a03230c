//! Posts kept in each process for readers who are not signed in (docs/adr/0027): what is kept,
//! and that every change made through any replica reaches every other one.

use crate::helpers::{TestApp, expect_json, expect_status, spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Changes reach the other replica over Redis in well under a millisecond here; this is only
/// the bound a test waits for. It is far below `POST_CACHE_TTL_SECS` (30 s by default), so a row
/// that expired cannot pass for one that was dropped.
const WITHIN: Duration = Duration::from_secs(5);

async fn anonymous(app: &TestApp, base: &str, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
}

/// Reads `path` anonymously on `base` until `check` holds of the 200 body, for at most
/// [`WITHIN`].
async fn until(app: &TestApp, base: &str, path: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let started = Instant::now();
    loop {
        let body = expect_json(anonymous(app, base, path).await, StatusCode::OK).await;
        if check(&body) {
            return;
        }
        assert!(
            started.elapsed() < WITHIN,
            "{what}: {base}{path} still serves {body} after {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn hits(app: &TestApp, base: &str) -> u64 {
    let metrics = anonymous(app, base, "/metrics").await.text().await.unwrap();
    let series = r#"cache_requests_total{cache="posts_local",result="hit"}"#;
    test_support::metrics::value(&metrics, series).map_or(0, |n| n as u64)
}

#[tokio::test]
async fn an_anonymous_read_is_kept_and_a_signed_in_read_still_asks_postgres() {
    let app = spawn_app().await;
    let author = app.register("author").await;
    let post = app.post(&author, "as written").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    let first = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    assert_eq!(first["text"], "as written");

    app.set_text_behind_the_service(&post["id"], "changed behind the service")
        .await;
    let kept = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    assert_eq!(kept, first, "the second anonymous read is the kept row");
    let signed_in = expect_json(app.get(&path, Some(&author.token)).await, StatusCode::OK).await;
    assert_eq!(signed_in["text"], "changed behind the service");
    assert_eq!(signed_in["liked_by_me"], false);
}

#[tokio::test]
async fn every_change_made_through_one_replica_reaches_the_rows_another_keeps() {
    let app = spawn_app().await;
    let other = app.spawn_replica().await;
    let (author, reader) = (app.register("author").await, app.register("reader").await);
    let post = app.post(&author, "original").await;
    let reply = app.reply(&reader, &post, "first reply").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    let reply_path = format!("/v1/posts/{}", reply["id"].as_str().unwrap());
    for p in [&path, &reply_path] {
        expect_json(anonymous(&app, &other, p).await, StatusCode::OK).await;
    }
    // The reply's change to the post is published after the reply is answered, so it may reach
    // `other` after the reads above and drop what they kept: read until a read is served kept.
    let started = Instant::now();
    loop {
        let before = hits(&app, &other).await;
        expect_json(anonymous(&app, &other, &path).await, StatusCode::OK).await;
        if hits(&app, &other).await == before + 1 {
            break;
        }
        assert!(
            started.elapsed() < WITHIN,
            "the other replica keeps the post"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let like = format!("{path}/like");
    let liked = app
        .request(Method::PUT, &like, Some(&reader.token), None)
        .await;
    expect_status(liked, StatusCode::NO_CONTENT).await;
    until(&app, &other, &path, "like", |p| p["like_count"] == 1).await;

    let unliked = app
        .request(Method::DELETE, &like, Some(&reader.token), None)
        .await;
    expect_status(unliked, StatusCode::NO_CONTENT).await;
    until(&app, &other, &path, "unlike", |p| p["like_count"] == 0).await;

    let edit = json!({"text": "edited"});
    let edited = app
        .request(Method::PATCH, &path, Some(&author.token), Some(edit))
        .await;
    expect_json(edited, StatusCode::OK).await;
    until(&app, &other, &path, "edit", |p| p["text"] == "edited").await;

    app.reply(&reader, &post, "second reply").await;
    until(&app, &other, &path, "reply", |p| p["reply_count"] == 2).await;

    let deleted = app
        .request(Method::DELETE, &path, Some(&author.token), None)
        .await;
    expect_status(deleted, StatusCode::NO_CONTENT).await;
    until(&app, &other, &reply_path, "parent deleted", |r| {
        r["reply_to"].is_null()
    })
    .await;
    let started = Instant::now();
    while anonymous(&app, &other, &path).await.status() != StatusCode::NOT_FOUND {
        assert!(
            started.elapsed() < WITHIN,
            "the deleted post is still served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_account_deletion_reaches_the_counts_another_replica_keeps() {
    let app = spawn_app().await;
    let other = app.spawn_replica().await;
    let (author, leaving) = (app.register("author").await, app.register("leaving").await);
    let post = app.post(&author, "liked by someone who leaves").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    let liked = app
        .request(
            Method::PUT,
            &format!("{path}/like"),
            Some(&leaving.token),
            None,
        )
        .await;
    expect_status(liked, StatusCode::NO_CONTENT).await;
    until(&app, &other, &path, "like", |p| p["like_count"] == 1).await;

    app.delete_account(&leaving).await;
    // The users service's outbox delivers the deletion to the first replica (polled every
    // 100 ms in tests); its like is then uncounted and every replica drops what it keeps.
    until(&app, &other, &path, "deletion", |p| p["like_count"] == 0).await;
}

/// With `POST_CACHE_TTL_SECS` at `lifetime`: reads a new post without a token, rewrites it
/// behind the service, and reads it again. Returns the app, the post's path and what the second
/// read said.
async fn read_after_a_silent_change(lifetime: &str) -> (TestApp, String, Value) {
    let app = spawn_app_with(&[("POST_CACHE_TTL_SECS", lifetime)]).await;
    let author = app.register("author").await;
    let post = app.post(&author, "as written").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    expect_json(app.get(&path, None).await, StatusCode::OK).await;
    app.set_text_behind_the_service(&post["id"], "changed behind the service")
        .await;
    let read = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    (app, path, read)
}

#[tokio::test]
async fn a_change_nobody_published_is_served_for_at_most_the_lifetime() {
    let (app, path, kept) = read_after_a_silent_change("1").await;
    assert_eq!(kept["text"], "as written");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let read = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    assert_eq!(read["text"], "changed behind the service");
}

#[tokio::test]
async fn with_a_zero_lifetime_every_read_asks_postgres() {
    let (_app, _, read) = read_after_a_silent_change("0").await;
    assert_eq!(read["text"], "changed behind the service");
}
