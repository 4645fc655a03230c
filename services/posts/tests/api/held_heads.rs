//! The newest author heads each posts process holds, so that a first feed page reads only the
//! followees that can be on it (docs/adr/0028): every post reaches them, whichever replica took
//! it, and one whose publish was lost reaches them at the next load.

use crate::helpers::{TestApp, TestUser, expect_json, spawn_app_with, texts_of};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// A post reaches the other replica over Redis in well under a millisecond here, and a load
/// every second in the second test; this is only the bound a test waits for.
const WITHIN: Duration = Duration::from_secs(5);

async fn first_page(app: &TestApp, base: &str, reader: &TestUser) -> Vec<String> {
    let response = app
        .client
        .get(format!("{base}/v1/feed?limit=1"))
        .bearer_auth(&reader.token)
        .send()
        .await
        .unwrap();
    texts_of(&expect_json(response, StatusCode::OK).await)
}

/// How many feed pages `base` planned from the heads it holds.
async fn planned(app: &TestApp, base: &str) -> u64 {
    let metrics = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = r#"cache_requests_total{cache="feed_heads",result="hit"}"#;
    test_support::metrics::value(&metrics, series).map_or(0, |n| n as u64)
}

/// Reads `reader`'s first page (of one post) on `base` until it is `expected` and was planned
/// from held heads, for at most [`WITHIN`].
async fn until_planned(app: &TestApp, base: &str, reader: &TestUser, expected: &str) {
    let started = Instant::now();
    loop {
        let before = planned(app, base).await;
        let page = first_page(app, base, reader).await;
        if page == [expected] && planned(app, base).await > before {
            return;
        }
        assert!(
            started.elapsed() < WITHIN,
            "{base} still serves {page:?} (planned {before}) after {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A reader who follows x, y and z, whose posts were written behind the service 30 (z), 20 (x)
/// and 10 (y) minutes ago. With a page of one post, two posts prove it: the floor is x's post,
/// and only x and y are read. A new post by z is on the page only if its head was heard.
async fn reader_of_three(app: &TestApp) -> (TestUser, TestUser) {
    let reader = app.register("reader").await;
    let (x, y, z) = (
        app.register("author_x").await,
        app.register("author_y").await,
        app.register("author_z").await,
    );
    for (author, text, minutes_ago) in [(&z, "z, old", 30), (&x, "x, old", 20), (&y, "y, old", 10)]
    {
        app.follow(&reader, author).await;
        app.post_behind_the_service(author, text, minutes_ago).await;
    }
    (reader, z)
}

#[tokio::test]
async fn a_post_taken_by_one_replica_is_on_first_pages_planned_by_another() {
    // No load but the first: only the published post can move z's head on the other replica.
    let app = spawn_app_with(&[("FEED_HEADS_RELOAD_SECS", "3600")]).await;
    let (reader, z) = reader_of_three(&app).await;
    // Started after the posts were written, the replica loads their heads.
    let other = app.spawn_replica().await;
    until_planned(&app, &other, &reader, "y, old").await;

    app.post(&z, "z, new").await;
    until_planned(&app, &other, &reader, "z, new").await;
}

#[tokio::test]
async fn a_post_whose_publish_was_lost_is_on_first_pages_after_the_next_load() {
    let app = spawn_app_with(&[("FEED_HEADS_RELOAD_SECS", "1")]).await;
    let (reader, z) = reader_of_three(&app).await;
    // The posts, written behind the service, are held from the next load on.
    until_planned(&app, &app.address, &reader, "y, old").await;

    // A post nobody heard of, as when its publish failed: the held heads leave it out until the
    // next load.
    app.post_behind_the_service(&z, "z, new", 0).await;
    until_planned(&app, &app.address, &reader, "z, new").await;
}
