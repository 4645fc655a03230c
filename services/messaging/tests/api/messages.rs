//! Messages: validation, gapless seqs under concurrency, idempotent sends, pages both ways,
//! edits and tombstones, and who may send.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_sent_message_has_the_documented_shape_and_the_next_seq() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let id = app.conversation(&alice, &[&bob]).await;
    let first = app.send(&alice, &id, "hello").await;
    let second = app.send(&bob, &id, "hi!").await;
    assert_eq!(
        (first["seq"].as_i64(), second["seq"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(first["conversation_id"], id);
    assert_eq!(first["sender_id"], alice.id.to_string());
    assert_eq!(
        (first["body"].as_str(), first["deleted"].as_bool()),
        (Some("hello"), Some(false))
    );
    assert!(
        first["edited_at"].is_null() && first["created_at"].is_string() && first["id"].is_string()
    );
}

#[tokio::test]
async fn bad_messages_are_refused_with_the_field_named() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let id = app.conversation(&alice, &[&bob]).await;
    let path = format!("/v1/conversations/{id}/messages");
    let cases = [
        (json!({"body": ""}), "body"),
        (json!({"body": "   "}), "body"),
        (json!({"body": "x".repeat(4001)}), "body"),
        (json!({}), "body"),
        (json!({"body": 7}), "body"),
        (json!({"body": "hi", "client_id": "has space"}), "client_id"),
        (json!({"body": "hi", "urgent": true}), "urgent"),
    ];
    for (body, field) in cases {
        let problem = expect_problem(
            app.post(&path, &alice.token, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    expect_status(
        app.post(&path, &alice.token, json!({"body": "é".repeat(4000)}))
            .await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn concurrent_senders_get_strictly_increasing_seqs_without_gaps() {
    let app = spawn_app().await;
    let (a, b, c) = (
        app.register("a_user").await,
        app.register("b_user").await,
        app.register("c_user").await,
    );
    let id = app.conversation(&a, &[&b, &c]).await;
    let app = &app;
    let path = format!("/v1/conversations/{id}/messages");
    let path = &path;
    let sends = [&a, &b, &c]
        .into_iter()
        .flat_map(|u| (0..8).map(move |i| (u, i)))
        .map(|(u, i)| async move {
            app.post(path, &u.token, json!({"body": format!("m{i}")}))
                .await
        });
    let mut seqs = Vec::new();
    for response in futures_util::future::join_all(sends).await {
        seqs.push(
            expect_json(response, StatusCode::CREATED).await["seq"]
                .as_i64()
                .unwrap(),
        );
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=24).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_retried_send_returns_the_original_message_even_when_retries_race() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let id = app.conversation(&alice, &[&bob]).await;
    let path = format!("/v1/conversations/{id}/messages");
    let body = json!({"body": "once", "client_id": "c-1"});
    let attempts =
        futures_util::future::join_all((0..6).map(|_| app.post(&path, &alice.token, body.clone())))
            .await;
    let mut ids = Vec::new();
    for response in attempts {
        ids.push(expect_json(response, StatusCode::CREATED).await["id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    // The Idempotency-Key header works the same way.
    let with_header = |key: &'static str| {
        app.client
            .post(format!("{}{path}", app.address))
            .bearer_auth(&alice.token)
            .header("idempotency-key", key)
            .json(&json!({"body": "twice?"}))
            .send()
    };
    let first = expect_json(with_header("k-2").await.unwrap(), StatusCode::CREATED).await;
    let again = with_header("k-2").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        expect_json(again, StatusCode::CREATED).await,
        first,
        "the replay is the first message, field for field"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messaging.messages")
        .fetch_one(&app.admin_pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM messaging.messages ORDER BY seq")
        .fetch_all(&app.admin_pool)
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2], "no seq was burnt by the retries");
}

#[tokio::test]
async fn a_retried_send_does_not_count_against_the_quota() {
    let app = spawn_app_with(&[], &[("RATE_LIMIT_MESSAGE_SEND", "1/60")]).await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let id = app.conversation(&alice, &[&bob]).await;
    let path = format!("/v1/conversations/{id}/messages");
    let body = json!({"body": "once", "client_id": "c-1"});
    let first = expect_json(
        app.post(&path, &alice.token, body.clone()).await,
        StatusCode::CREATED,
    )
    .await;
    for _ in 0..3 {
        let again = app.post(&path, &alice.token, body.clone()).await;
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(expect_json(again, StatusCode::CREATED).await, first);
    }
    // A new message is over the quota of one.
    expect_problem(
        app.post(
            &path,
            &alice.token,
            json!({"body": "twice", "client_id": "c-2"}),
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
}

#[tokio::test]
async fn messages_page_newest_first_and_catch_up_oldest_first() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let id = app.conversation(&alice, &[&bob]).await;
    for i in 1..=5 {
        app.send(&alice, &id, &format!("m{i}")).await;
    }
    let base = format!("/v1/conversations/{id}/messages");
    let seqs = |page: &serde_json::Value| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let newest = expect_json(
        app.get(&format!("{base}?limit=2"), &bob.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seqs(&newest), vec![5, 4]);
    let next = expect_json(
        app.get(
            &format!(
                "{base}?limit=2&cursor={}",
                newest["next_cursor"].as_str().unwrap()
            ),
            &bob.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seqs(&next), vec![3, 2]);
    let before = expect_json(
        app.get(&format!("{base}?before_seq=2"), &bob.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seqs(&before), vec![1]);
    let catch_up = expect_json(
        app.get(&format!("{base}?after_seq=2&limit=2"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seqs(&catch_up), vec![3, 4]);
    let rest = expect_json(
        app.get(
            &format!(
                "{base}?limit=2&cursor={}",
                catch_up["next_cursor"].as_str().unwrap()
            ),
            &bob.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seqs(&rest), vec![5]);
    assert!(rest["next_cursor"].is_null());

    expect_problem(
        app.get(&format!("{base}?after_seq=1&before_seq=3"), &bob.token)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "conflicting_parameters",
    )
    .await;
    expect_problem(
        app.get(&format!("{base}?after_seq=x"), &bob.token).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    expect_problem(
        app.get(&format!("{base}?limit=0"), &bob.token).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_problem(
        app.get(&format!("{base}?cursor=bad"), &bob.token).await,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
    )
    .await;
}

#[tokio::test]
async fn the_sender_edits_and_deletes_and_others_get_404() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let id = app.conversation(&alice, &[&bob]).await;
    let message = app.send(&alice, &id, "draft").await;
    let path = format!(
        "/v1/conversations/{id}/messages/{}",
        message["id"].as_str().unwrap()
    );

    let by_bob = app
        .request(
            Method::PATCH,
            &path,
            Some(&bob.token),
            Some(json!({"body": "hijack"})),
        )
        .await;
    expect_problem(by_bob, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(
        app.request(Method::DELETE, &path, Some(&bob.token), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let bad = app
        .request(
            Method::PATCH,
            &path,
            Some(&alice.token),
            Some(json!({"body": ""})),
        )
        .await;
    expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let edited = expect_json(
        app.request(
            Method::PATCH,
            &path,
            Some(&alice.token),
            Some(json!({"body": "final"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited["body"], "final");
    assert!(edited["edited_at"].is_string());
    expect_status(
        app.request(Method::DELETE, &path, Some(&alice.token), None)
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect_status(
        app.request(Method::DELETE, &path, Some(&alice.token), None)
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let list = expect_json(
        app.get(&format!("/v1/conversations/{id}/messages"), &bob.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            list["items"][0]["deleted"].as_bool(),
            list["items"][0]["body"].is_null()
        ),
        (Some(true), true)
    );
    assert_eq!(list["items"][0]["seq"], 1, "the tombstone keeps its place");
    let edit_tombstone = app
        .request(
            Method::PATCH,
            &path,
            Some(&alice.token),
            Some(json!({"body": "back"})),
        )
        .await;
    expect_problem(edit_tombstone, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_block_after_the_conversation_started_stops_direct_messages_and_suspension_stops_sending()
{
    let app = spawn_app().await;
    let (alice, bob, carol) = (
        app.register("alice").await,
        app.register("bob").await,
        app.register("carol").await,
    );
    let direct = app.conversation(&alice, &[&bob]).await;
    let group = app.conversation(&alice, &[&bob, &carol]).await;
    app.send(&alice, &direct, "hi").await;
    app.block(&bob, &alice).await;
    let path = format!("/v1/conversations/{direct}/messages");
    expect_problem(
        app.post(&path, &alice.token, json!({"body": "hello?"}))
            .await,
        StatusCode::FORBIDDEN,
        "recipient_unavailable",
    )
    .await;
    expect_problem(
        app.post(&path, &bob.token, json!({"body": "go away"}))
            .await,
        StatusCode::FORBIDDEN,
        "recipient_unavailable",
    )
    .await;

    app.suspend(&carol).await;
    let group_path = format!("/v1/conversations/{group}/messages");
    expect_problem(
        app.post(&group_path, &carol.token, json!({"body": "hi all"}))
            .await,
        StatusCode::FORBIDDEN,
        "account_suspended",
    )
    .await;
}

#[tokio::test]
async fn a_send_over_the_quota_is_refused_for_the_quota_even_when_users_also_refuses_it() {
    // The quota is counted, and users asked, at once when no answer is kept for the pair.
    let app = spawn_app_with(&[], &[("RATE_LIMIT_MESSAGE_SEND", "2/60")]).await;
    let (alice, bob, carol) = (
        app.register("alice").await,
        app.register("bob").await,
        app.register("carol").await,
    );
    let with_carol = app.conversation(&alice, &[&carol]).await;
    let with_bob = app.conversation(&alice, &[&bob]).await;
    app.send(&alice, &with_carol, "one").await;
    app.send(&alice, &with_carol, "two").await;
    app.block(&bob, &alice).await;
    let asked = contactability_calls(&app).await;
    let path = format!("/v1/conversations/{with_bob}/messages");
    expect_problem(
        app.post(&path, &alice.token, json!({"body": "three"}))
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    assert_eq!(
        contactability_calls(&app).await,
        asked + 1,
        "nothing was kept for alice and bob, so users was asked alongside the count"
    );
    let list = app
        .get(&path, &bob.token)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing was sent"
    );
}

/// This replica's `/metrics` page.
async fn metrics_of(app: &TestApp) -> String {
    app.request(Method::GET, "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap()
}

/// How many times this messaging replica asked users for contactability.
async fn contactability_calls(app: &TestApp) -> u64 {
    let metrics = metrics_of(app).await;
    let series =
        r#"upstream_request_duration_seconds_count{operation="contactability",target="users"}"#;
    test_support::metrics::value(&metrics, series).map_or(0, |n| n as u64)
}

#[tokio::test]
async fn a_kept_contactability_answer_serves_until_a_suspension_or_a_block_changes_it() {
    let app = spawn_app().await;
    let (alice, bob, carol, admin) = (
        app.register("alice").await,
        app.register("bob").await,
        app.register("carol").await,
        app.register("admin").await,
    );
    sqlx::query("UPDATE users.accounts SET role = 'admin' WHERE id = $1")
        .bind(admin.id)
        .execute(&app.admin_pool)
        .await
        .unwrap();
    let direct = app.conversation(&alice, &[&bob]).await;
    let group = app.conversation(&alice, &[&bob, &carol]).await;
    let path = format!("/v1/conversations/{direct}/messages");
    let group_path = format!("/v1/conversations/{group}/messages");
    app.send(&alice, &direct, "one").await;
    app.send(&alice, &group, "one").await;
    let asked = contactability_calls(&app).await;
    app.send(&alice, &direct, "two").await;
    app.send(&alice, &group, "two").await;
    app.send(&alice, &direct, "three").await;
    app.send(&alice, &group, "three").await;
    assert_eq!(
        contactability_calls(&app).await,
        asked,
        "nothing changed: the kept answers serve"
    );

    // A suspension through the users service is in the very next send, and so is its end.
    let admin_call = async |action: &str| {
        app.users_call(
            Method::POST,
            &format!("/v1/admin/users/{}/{action}", alice.id),
            Some(&admin.token),
            None,
        )
        .await
    };
    assert_eq!(admin_call("suspend").await.status(), StatusCode::NO_CONTENT);
    for path in [&path, &group_path] {
        expect_problem(
            app.post(path, &alice.token, json!({"body": "four"})).await,
            StatusCode::FORBIDDEN,
            "account_suspended",
        )
        .await;
    }
    assert_eq!(
        admin_call("unsuspend").await.status(),
        StatusCode::NO_CONTENT
    );
    app.send(&alice, &direct, "five").await;
    app.send(&alice, &group, "five").await;

    // So is a block by the recipient, and the lifting of it.
    app.block(&bob, &alice).await;
    expect_problem(
        app.post(&path, &alice.token, json!({"body": "six"})).await,
        StatusCode::FORBIDDEN,
        "recipient_unavailable",
    )
    .await;
    app.unblock(&bob, &alice).await;
    app.send(&alice, &direct, "seven").await;
}

#[tokio::test]
async fn a_retry_that_waited_for_the_first_send_under_the_lock_returns_it_and_burns_no_seq() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let id = app.conversation(&alice, &[&bob]).await;
    let conversation: uuid::Uuid = id.parse().unwrap();
    // Another transaction holds the conversation's row lock, as a send in flight would: both
    // attempts find no message with their key before the lock, then wait for it.
    let mut holder = app.admin_pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM messaging.conversations WHERE id = $1 FOR UPDATE")
        .bind(conversation)
        .execute(&mut *holder)
        .await
        .unwrap();
    let attempts: Vec<_> = (0..2)
        .map(|_| {
            let (client, token) = (app.client.clone(), alice.token.clone());
            let url = format!("{}/v1/conversations/{id}/messages", app.address);
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"body": "once", "client_id": "k-1"}))
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let waiting = "SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let mut blocked = 0_i64;
    for _ in 0..100 {
        blocked = sqlx::query_scalar(waiting)
            .fetch_one(&app.admin_pool)
            .await
            .unwrap();
        if blocked == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(blocked, 2, "both attempts wait for the conversation's lock");
    holder.commit().await.unwrap();

    let (mut ids, mut replays) = (Vec::new(), 0);
    for attempt in attempts {
        let response = attempt.await.unwrap();
        replays += usize::from(response.headers().contains_key("idempotent-replayed"));
        ids.push(expect_json(response, StatusCode::CREATED).await["id"].clone());
    }
    assert_eq!(ids[0], ids[1], "the retry returns the first message");
    assert_eq!(replays, 1, "exactly one of the two is the replay");
    let next = app.send(&alice, &id, "next").await;
    assert_eq!(next["seq"], 2, "the replay took no seq");
}

/// A send's two statements run on the statement pool (docs/adr/0023), which takes a connection
/// back without a round trip: sends one after another reuse one connection, idle between them.
#[tokio::test]
async fn sends_run_their_statements_on_the_statement_pool() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let id = app.conversation(&alice, &[&bob]).await;
    for text in ["one", "two", "three"] {
        app.send(&alice, &id, text).await;
    }
    let metrics = metrics_of(&app).await;
    assert_eq!(
        test_support::metrics::statement_pool_connections(&metrics),
        (Some(1.0), Some(1.0)),
        "{metrics}"
    );
}

/// The statements of a send read and write rows by unique keys, so none of them scans a table,
/// however small the tables were when a connection planned them (see
/// migrations/messaging/20261204000002_sends_read_by_key.sql).
#[tokio::test]
async fn a_sends_statements_read_by_index_even_when_planned_over_empty_tables() {
    use messaging::store::messages::{self, Appended};
    use sqlx::{Connection, PgConnection};

    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let conversation: uuid::Uuid = app.conversation(&alice, &[&bob]).await.parse().unwrap();
    // Measured nearly empty, as on a new deployment before any ANALYZE.
    sqlx::raw_sql(
        "VACUUM (ANALYZE) messaging.messages, messaging.conversations, \
         messaging.participants, messaging.departed_accounts",
    )
    .execute(&app.admin_pool)
    .await
    .unwrap();
    let mut conn = PgConnection::connect(&app._db.url_for("messaging"))
        .await
        .unwrap();
    // One transaction, so that its own scans can be counted at its end. The plans are the
    // connection's either way, and from the sixth call on they are generic ones.
    let mut tx = conn.begin().await.unwrap();
    for i in 0..12 {
        let key = format!("k-{i}");
        let sent = messages::send(&mut *tx, conversation, alice.id, "hi", Some(&key))
            .await
            .unwrap();
        assert!(matches!(sent, Some(Appended::Message(_))), "{sent:?}");
    }
    // The key's lookups found nothing so far; a retry shows they read what was stored.
    let retry = messages::send(&mut *tx, conversation, alice.id, "hi", Some("k-0"))
        .await
        .unwrap();
    assert!(matches!(retry, Some(Appended::Replayed(_))), "{retry:?}");
    let scans: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan FROM pg_stat_xact_user_tables
         WHERE schemaname = 'messaging' AND seq_scan > 0 ORDER BY relname",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(scans, vec![], "no statement of a send scanned a table");
}
