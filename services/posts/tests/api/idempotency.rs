//! `Idempotency-Key` on post creation: retries never duplicate.

use crate::helpers::*;
use posts::store::posts::{self as store, Creation};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection};

/// `POST /v1/posts` with `body`, under `key`.
async fn keyed(
    app: &TestApp,
    user: &TestUser,
    key: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/posts", app.address))
        .bearer_auth(&user.token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn create_with_key(
    app: &TestApp,
    user: &TestUser,
    key: &str,
    text: &str,
) -> reqwest::Response {
    keyed(app, user, key, json!({"text": text})).await
}

async fn count_posts(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM posts.posts")
        .fetch_one(&app.admin_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_original_response_and_creates_nothing() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let first = expect_json(
        create_with_key(&app, &alice, "key-1", "once").await,
        StatusCode::CREATED,
    )
    .await;
    let retry = create_with_key(&app, &alice, "key-1", "once").await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let second = expect_json(retry, StatusCode::CREATED).await;
    assert_eq!(first, second);
    assert_eq!(count_posts(&app).await, 1);
}

async fn stored_keys(app: &TestApp, user: &TestUser) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM posts.idempotency_keys WHERE user_id = $1")
        .bind(user.id)
        .fetch_one(&app.admin_pool)
        .await
        .unwrap()
}

async fn reply_count(app: &TestApp, post: &serde_json::Value) -> i64 {
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    let view = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    view["reply_count"].as_i64().unwrap()
}

#[tokio::test]
async fn a_retried_reply_is_replayed_and_counted_on_its_parent_once() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let parent = app.post(&alice, "a question").await;
    let body = json!({"text": "an answer", "reply_to": parent["id"]});
    let first = expect_json(
        keyed(&app, &bob, "answer-1", body.clone()).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(first["reply_to"], parent["id"]);
    assert_eq!(first["author"]["id"], bob.id.to_string());
    assert_eq!(first["liked_by_me"], false);
    let retry = keyed(&app, &bob, "answer-1", body).await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_json(retry, StatusCode::CREATED).await, first);
    assert_eq!(count_posts(&app).await, 2);
    assert_eq!(reply_count(&app, &parent).await, 1);
}

#[tokio::test]
async fn a_reply_to_an_unknown_post_stores_no_outcome_under_its_key() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let body = json!({"text": "to nobody", "reply_to": uuid::Uuid::now_v7()});
    for _ in 0..2 {
        expect_problem(
            keyed(&app, &alice, "lost", body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_reference",
        )
        .await;
    }
    assert_eq!(stored_keys(&app, &alice).await, 0);
    assert_eq!(count_posts(&app).await, 0);
    // The key is still free for the request the client meant.
    expect_status(
        create_with_key(&app, &alice, "lost", "to everyone").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(stored_keys(&app, &alice).await, 1);
}

#[tokio::test]
async fn a_key_is_remembered_for_24_hours_and_then_does_the_work_again() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let first = expect_json(
        create_with_key(&app, &alice, "daily", "same words").await,
        StatusCode::CREATED,
    )
    .await;
    sqlx::query(
        "UPDATE posts.idempotency_keys SET created_at = now() - interval '24 hours 1 minute'
         WHERE user_id = $1",
    )
    .bind(alice.id)
    .execute(&app.admin_pool)
    .await
    .unwrap();
    let again = create_with_key(&app, &alice, "daily", "same words").await;
    assert!(!again.headers().contains_key("idempotent-replayed"));
    let second = expect_json(again, StatusCode::CREATED).await;
    assert_ne!(second["id"], first["id"]);
    assert_eq!(count_posts(&app).await, 2);
    // The key now holds the second outcome.
    let replayed = expect_json(
        create_with_key(&app, &alice, "daily", "same words").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(replayed, second);
    assert_eq!(stored_keys(&app, &alice).await, 1);
}

/// The release before ADR 0033 stored the 201's body as the service serialized it; a retry
/// after the upgrade still gets that answer.
#[tokio::test]
async fn an_outcome_stored_by_the_previous_release_is_replayed_as_it_was_answered() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let first = expect_json(
        create_with_key(&app, &alice, "upgrade", "before the release").await,
        StatusCode::CREATED,
    )
    .await;
    sqlx::query("UPDATE posts.idempotency_keys SET response_body = $2 WHERE user_id = $1")
        .bind(alice.id)
        .bind(&first)
        .execute(&app.admin_pool)
        .await
        .unwrap();
    let retry = create_with_key(&app, &alice, "upgrade", "before the release").await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_json(retry, StatusCode::CREATED).await, first);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    expect_status(
        create_with_key(&app, &alice, "key-1", "once").await,
        StatusCode::CREATED,
    )
    .await;
    expect_problem(
        create_with_key(&app, &alice, "key-1", "twice").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(count_posts(&app).await, 1);
}

#[tokio::test]
async fn keys_belong_to_their_user() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    expect_status(
        create_with_key(&app, &alice, "shared", "hello").await,
        StatusCode::CREATED,
    )
    .await;
    expect_status(
        create_with_key(&app, &bob, "shared", "hello").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(count_posts(&app).await, 2);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_create_exactly_one_post() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let attempts = futures_util::future::join_all(
        (0..8).map(|_| create_with_key(&app, &alice, "burst", "only once")),
    )
    .await;
    let mut created_ids = Vec::new();
    for response in attempts {
        match response.status() {
            StatusCode::CREATED => {
                created_ids.push(response.json::<serde_json::Value>().await.unwrap()["id"].clone())
            }
            StatusCode::CONFLICT => assert!(response.headers().contains_key("retry-after")),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(!created_ids.is_empty());
    assert!(
        created_ids.windows(2).all(|w| w[0] == w[1]),
        "every 201 is the same post"
    );
    assert_eq!(count_posts(&app).await, 1, "exactly one row");
}

#[tokio::test]
async fn malformed_keys_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for key in ["has space", &"k".repeat(256)] {
        let problem = expect_problem(
            create_with_key(&app, &alice, key, "hi").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    }
}

/// Posts as an account whose deletion holds its lock, then commits the deletion: the post
/// must wait for it, see it, and write nothing.
async fn post_while_leaving(key: Option<&'static str>) {
    let app = spawn_app().await;
    let leaving = app.register("leaving").await;
    // The deletion's transaction, as `store::accounts::forget` opens it.
    let mut deletion = app.admin_pool.begin().await.unwrap();
    common::db::lock_account(&mut deletion, leaving.id, common::db::AccountLock::Delete)
        .await
        .unwrap();
    let create = tokio::spawn({
        let (client, address, token) = (
            app.client.clone(),
            app.address.clone(),
            leaving.token.clone(),
        );
        async move {
            let request = client
                .post(format!("{address}/v1/posts"))
                .bearer_auth(&token)
                .json(&json!({"text": "last words"}));
            match key {
                Some(key) => request.header("idempotency-key", key),
                None => request,
            }
            .send()
            .await
            .unwrap()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !create.is_finished(),
        "a write takes the account's lock, so it waits for the deletion"
    );
    sqlx::query("INSERT INTO posts.departed_accounts (account_id) VALUES ($1)")
        .bind(leaving.id)
        .execute(&mut *deletion)
        .await
        .unwrap();
    deletion.commit().await.unwrap();
    let refused = create.await.unwrap();
    expect_problem(refused, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(count_posts(&app).await, 0, "nothing was written");
}

#[tokio::test]
async fn a_keyed_post_waits_for_its_accounts_deletion_in_flight_and_is_then_refused() {
    post_while_leaving(Some("written-while-leaving")).await;
}

#[tokio::test]
async fn a_post_without_a_key_waits_for_its_accounts_deletion_in_flight_and_is_then_refused() {
    post_while_leaving(None).await;
}

/// The key's stored outcome is read through the key's index, however empty the table was when
/// the connection planned the lookup (migration 20261204000001). A connection keeps its plans:
/// one made over an empty, vacuumed table was a sequential scan of every stored key, kept while
/// the table grew, so that each keyed post read every key stored before it.
#[tokio::test]
async fn the_keys_outcome_is_read_by_index_even_when_planned_over_an_empty_table() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    // Empty and measured so, as after a purge that left no key, or the benchmark's reset.
    sqlx::raw_sql("VACUUM (ANALYZE) posts.idempotency_keys")
        .execute(&app.admin_pool)
        .await
        .unwrap();
    let mut conn = PgConnection::connect(&app._db.url_for("posts"))
        .await
        .unwrap();
    // One transaction, so that its own scans can be counted at its end. The plans are the
    // connection's either way, and from the sixth call on they are generic ones.
    let mut tx = conn.begin().await.unwrap();
    let author = json!({"id": alice.id, "username": "alice", "display_name": "alice"});
    for i in 0..12 {
        let key = format!("key-{i}");
        let creation = store::create(
            &mut *tx,
            alice.id,
            author.clone(),
            "once",
            None,
            Some((&key, b"hash".as_slice())),
        )
        .await
        .unwrap();
        assert!(matches!(creation, Creation::Created(_)), "{creation:?}");
    }
    // The lookups found nothing so far; a retry shows they read what was stored.
    let retry = store::create(
        &mut *tx,
        alice.id,
        author.clone(),
        "once",
        None,
        Some(("key-0", b"hash".as_slice())),
    )
    .await
    .unwrap();
    assert!(matches!(retry, Creation::Replayed(_)), "{retry:?}");
    let seq_scans: i64 = sqlx::query_scalar(
        "SELECT seq_scan FROM pg_stat_xact_user_tables
         WHERE relid = 'posts.idempotency_keys'::regclass",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(seq_scans, 0, "no lookup scanned the stored keys");
}
