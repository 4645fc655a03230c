//! Follows, blocks and the listings built on them.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::Value;

async fn follow(app: &TestApp, who: &TestUser, whom: uuid::Uuid) -> reqwest::Response {
    app.put(&format!("/v1/users/{whom}/follow"), Some(&who.access_token))
        .await
}

async fn counts(app: &TestApp, id: uuid::Uuid) -> (i64, i64) {
    let p = expect_json(
        app.get(&format!("/v1/users/{id}"), None).await,
        StatusCode::OK,
    )
    .await;
    (
        p["followers_count"].as_i64().unwrap(),
        p["following_count"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn follow_and_unfollow_are_idempotent_and_keep_counts_exact() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    for _ in 0..2 {
        expect_status(follow(&app, &alice, bob.id).await, StatusCode::NO_CONTENT).await;
    }
    assert_eq!(counts(&app, bob.id).await, (1, 0));
    assert_eq!(counts(&app, alice.id).await, (0, 1));
    for _ in 0..2 {
        expect_status(
            app.delete(
                &format!("/v1/users/{}/follow", bob.id),
                Some(&alice.access_token),
            )
            .await,
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    assert_eq!(counts(&app, bob.id).await, (0, 0));
    assert_eq!(counts(&app, alice.id).await, (0, 0));
}

#[tokio::test]
async fn concurrent_follows_of_one_account_count_each_follower_once() {
    let app = spawn_app().await;
    let star = app.register("star").await;
    let mut fans = Vec::new();
    for i in 0..6 {
        fans.push(app.register(&format!("fan{i}")).await);
    }
    let attempts = fans
        .iter()
        .flat_map(|fan| [follow(&app, fan, star.id), follow(&app, fan, star.id)]);
    for response in futures_util::future::join_all(attempts).await {
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(counts(&app, star.id).await, (6, 0));
}

#[tokio::test]
async fn following_yourself_is_422_and_unknown_accounts_are_404() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    expect_problem(
        follow(&app, &alice, alice.id).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "self_action",
    )
    .await;
    expect_problem(
        follow(&app, &alice, uuid::Uuid::now_v7()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let unfollow_unknown = app
        .delete(
            &format!("/v1/users/{}/follow", uuid::Uuid::now_v7()),
            Some(&alice.access_token),
        )
        .await;
    expect_problem(unfollow_unknown, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(
        app.put("/v1/users/not-a-uuid/follow", Some(&alice.access_token))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let anonymous = app
        .put(&format!("/v1/users/{}/follow", alice.id), None)
        .await;
    expect_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn blocking_removes_follows_both_ways_and_prevents_new_ones() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    expect_status(follow(&app, &alice, bob.id).await, StatusCode::NO_CONTENT).await;
    expect_status(follow(&app, &bob, alice.id).await, StatusCode::NO_CONTENT).await;

    expect_status(
        app.put(
            &format!("/v1/users/{}/block", bob.id),
            Some(&alice.access_token),
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(counts(&app, alice.id).await, (0, 0));
    assert_eq!(counts(&app, bob.id).await, (0, 0));
    expect_problem(
        follow(&app, &bob, alice.id).await,
        StatusCode::FORBIDDEN,
        "follow_not_allowed",
    )
    .await;
    expect_problem(
        follow(&app, &alice, bob.id).await,
        StatusCode::FORBIDDEN,
        "follow_not_allowed",
    )
    .await;

    expect_status(
        app.delete(
            &format!("/v1/users/{}/block", bob.id),
            Some(&alice.access_token),
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect_status(follow(&app, &bob, alice.id).await, StatusCode::NO_CONTENT).await;
}

#[tokio::test]
async fn blocking_yourself_or_unknown_accounts_is_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let own = app
        .put(
            &format!("/v1/users/{}/block", alice.id),
            Some(&alice.access_token),
        )
        .await;
    expect_problem(own, StatusCode::UNPROCESSABLE_ENTITY, "self_action").await;
    let unknown = app
        .put(
            &format!("/v1/users/{}/block", uuid::Uuid::now_v7()),
            Some(&alice.access_token),
        )
        .await;
    expect_problem(unknown, StatusCode::NOT_FOUND, "not_found").await;
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn follower_and_following_lists_page_newest_first_without_gaps_or_duplicates() {
    let app = spawn_app().await;
    let star = app.register("star").await;
    let mut fans = Vec::new();
    for i in 0..5 {
        let fan = app.register(&format!("fan{i}")).await;
        expect_status(follow(&app, &fan, star.id).await, StatusCode::NO_CONTENT).await;
        expect_status(follow(&app, &star, fan.id).await, StatusCode::NO_CONTENT).await;
        fans.push(fan.id.to_string());
    }
    fans.reverse();
    for listing in ["followers", "following"] {
        let mut seen = Vec::new();
        let mut path = format!("/v1/users/{}/{listing}?limit=2", star.id);
        loop {
            let page = expect_json(app.get(&path, None).await, StatusCode::OK).await;
            seen.extend(ids_of(&page));
            match page["next_cursor"].as_str() {
                Some(cursor) => {
                    path = format!("/v1/users/{}/{listing}?limit=2&cursor={cursor}", star.id)
                }
                None => break,
            }
        }
        assert_eq!(seen, fans, "{listing}");
    }
}

#[tokio::test]
async fn listings_refuse_bad_limits_and_tampered_cursors() {
    let app = spawn_app().await;
    let star = app.register("star").await;
    let base = format!("/v1/users/{}/followers", star.id);
    for limit in ["0", "101"] {
        let problem = expect_problem(
            app.get(&format!("{base}?limit={limit}"), None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "limit");
    }
    expect_problem(
        app.get(&format!("{base}?limit=abc"), None).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    expect_problem(
        app.get(&format!("{base}?cursor=bm90LWEtY3Vyc29y"), None)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
    let unknown = format!("/v1/users/{}/following", uuid::Uuid::now_v7());
    expect_problem(
        app.get(&unknown, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn following_ids_lists_every_followee() {
    let app = spawn_app().await;
    let reader = app.register("reader").await;
    let mut expected = Vec::new();
    for i in 0..3 {
        let author = app.register(&format!("author{i}")).await;
        expect_status(
            follow(&app, &reader, author.id).await,
            StatusCode::NO_CONTENT,
        )
        .await;
        expected.push(author.id.to_string());
    }
    expected.sort();
    let body = expect_json(
        app.get(&format!("/v1/users/{}/following/ids", reader.id), None)
            .await,
        StatusCode::OK,
    )
    .await;
    let mut ids: Vec<String> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, expected);
    let unknown = format!("/v1/users/{}/following/ids", uuid::Uuid::now_v7());
    expect_problem(
        app.get(&unknown, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn the_followee_list_etag_changes_exactly_when_the_set_changes() {
    let app = spawn_app().await;
    let (reader, a, b) = (
        app.register("reader").await,
        app.register("a_author").await,
        app.register("b_author").await,
    );
    let path = format!("/v1/users/{}/following/ids", reader.id);
    let etag_of = |r: &reqwest::Response| r.headers()["etag"].to_str().unwrap().to_owned();
    let conditional = |etag: String| {
        app.client
            .get(app.url(&path))
            .header("if-none-match", etag)
            .send()
    };

    let first = app.get(&path, None).await;
    let etag0 = etag_of(&first);
    assert_eq!(
        conditional(etag0.clone()).await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );

    expect_status(follow(&app, &reader, a.id).await, StatusCode::NO_CONTENT).await;
    let changed = conditional(etag0.clone()).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK, "a follow changes the set");
    let etag1 = etag_of(&changed);
    // Following again changes nothing.
    expect_status(follow(&app, &reader, a.id).await, StatusCode::NO_CONTENT).await;
    assert_eq!(
        conditional(etag1.clone()).await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );
    // Someone else's follow does not touch this reader's set.
    expect_status(follow(&app, &b, a.id).await, StatusCode::NO_CONTENT).await;
    assert_eq!(
        conditional(etag1.clone()).await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );
    // Being blocked by a followee removes the follow, and so changes the set.
    expect_status(
        app.put(
            &format!("/v1/users/{}/block", reader.id),
            Some(&a.access_token),
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let after_block = conditional(etag1).await.unwrap();
    assert_eq!(after_block.status(), StatusCode::OK);
    let body: Value = after_block.json().await.unwrap();
    assert_eq!(body["ids"], serde_json::json!([]));
}

#[tokio::test]
async fn every_change_to_a_followee_set_is_published_before_it_is_answered() {
    let app = spawn_app().await;
    let (reader, a, b) = (
        app.register("reader").await,
        app.register("a_author").await,
        app.register("b_author").await,
    );
    let path = format!("/v1/users/{}/following/ids", reader.id);
    let published = || app.published_graph_version(reader.id);
    assert_eq!(
        published().await,
        None,
        "nothing is published before it is asked"
    );
    // Serving the list publishes the version served, as the ETag says it.
    let served = app.get(&path, None).await;
    let etag = served.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        published().await.map(common::graph_versions::etag),
        Some(etag)
    );

    expect_status(follow(&app, &reader, a.id).await, StatusCode::NO_CONTENT).await;
    let after_follow = published().await.unwrap();
    let served = app.get(&path, None).await;
    assert_eq!(
        served.headers()["etag"].to_str().unwrap(),
        common::graph_versions::etag(after_follow),
        "published before the 204, and the same version the list is served at"
    );
    // A follow that changes nothing publishes nothing new.
    expect_status(follow(&app, &reader, a.id).await, StatusCode::NO_CONTENT).await;
    assert_eq!(published().await, Some(after_follow));

    let unfollow = format!("/v1/users/{}/follow", a.id);
    let unfollowed = app.delete(&unfollow, Some(&reader.access_token)).await;
    expect_status(unfollowed, StatusCode::NO_CONTENT).await;
    let after_unfollow = published().await.unwrap();
    assert!(after_unfollow > after_follow);

    // A block removes the follow of the blocked account, which changes the blocked one's set.
    expect_status(follow(&app, &reader, a.id).await, StatusCode::NO_CONTENT).await;
    let before_block = published().await.unwrap();
    let block = format!("/v1/users/{}/block", reader.id);
    let blocked = app.put(&block, Some(&a.access_token)).await;
    expect_status(blocked, StatusCode::NO_CONTENT).await;
    assert!(published().await.unwrap() > before_block);

    // An account deletion changes the sets of its followers.
    expect_status(follow(&app, &reader, b.id).await, StatusCode::NO_CONTENT).await;
    let before_deletion = published().await.unwrap();
    let deletion = app.request(
        reqwest::Method::DELETE,
        "/v1/users/me",
        Some(&b.access_token),
        Some(serde_json::json!({"password": b.password})),
    );
    expect_status(deletion.await, StatusCode::NO_CONTENT).await;
    let after_deletion = published().await.unwrap();
    assert!(after_deletion > before_deletion);
    let served = app.get(&path, None).await;
    assert_eq!(
        served.headers()["etag"].to_str().unwrap(),
        common::graph_versions::etag(after_deletion)
    );
}
