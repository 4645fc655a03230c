//! Account deletion reaching messaging through the users service's outbox: the account's
//! messages become tombstones; the conversation keeps its order.

use crate::helpers::{expect_json, expect_problem, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use test_support::db::{count, wait_for_count};

#[tokio::test]
async fn a_deleted_accounts_messages_become_tombstones() {
    let app = spawn_app().await;
    let leaving = app.register("leaving").await;
    let staying = app.register("staying").await;
    let conversation = app.conversation(&staying, &[&leaving]).await;
    app.send(&leaving, &conversation, "from the leaver").await;
    app.send(&staying, &conversation, "from the stayer").await;

    let deleted = app
        .users_call(
            Method::DELETE,
            "/v1/users/me",
            Some(&leaving.token),
            Some(json!({"password": "password-123"})),
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let path = format!("/v1/conversations/{conversation}/messages");
    let mut tries = 0;
    let messages = loop {
        let page = expect_json(app.get(&path, &staying.token).await, StatusCode::OK).await;
        let items = page["items"].as_array().unwrap().clone();
        let leaver_says = items
            .iter()
            .find(|m| m["sender_id"] == leaving.id.to_string())
            .unwrap()
            .clone();
        if leaver_says["body"].is_null() {
            break items;
        }
        tries += 1;
        assert!(
            tries < 100,
            "the deletion never reached messaging: {leaver_says}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(messages.len(), 2, "seqs and order are kept");
    let stayer_says = messages
        .iter()
        .find(|m| m["sender_id"] == staying.id.to_string())
        .unwrap();
    assert_eq!(stayer_says["body"], "from the stayer");
    let tombstone = messages
        .iter()
        .find(|m| m["sender_id"] == leaving.id.to_string())
        .unwrap();
    assert_eq!(tombstone["deleted"], true, "{tombstone}");
}

#[tokio::test]
async fn only_the_users_service_reports_deletions() {
    let app = spawn_app().await;
    let user = app.register("someone").await;
    let path = format!("/internal/v1/accounts/{}/deletion", user.id);
    let by_user = app
        .request(Method::POST, &path, Some(&user.token), None)
        .await;
    expect_problem(by_user, StatusCode::FORBIDDEN, "forbidden").await;
    let posts_token = test_support::tokens::valid(&test_support::tokens::claims(
        user.id,
        json!({"sub": "svc:posts", "aud": "social-internal", "role": "service"}),
    ));
    let by_posts = app
        .request(Method::POST, &path, Some(&posts_token), None)
        .await;
    expect_problem(by_posts, StatusCode::FORBIDDEN, "forbidden").await;
}

/// The outbox keeps the event while messaging is down and delivers it once it is back; from
/// then on the leaver's still-valid token can send nothing and start nothing.
#[tokio::test]
async fn a_deletion_made_while_messaging_is_down_is_applied_once_it_is_back() {
    let mut app = spawn_app().await;
    let leaving = app.register("leaving").await;
    let staying = app.register("staying").await;
    let conversation = app.conversation(&staying, &[&leaving]).await;
    app.send(&leaving, &conversation, "one").await;
    app.send(&leaving, &conversation, "two").await;
    app.send(&staying, &conversation, "three").await;

    app.stop_a().await;
    let deleted = app
        .users_call(
            Method::DELETE,
            "/v1/users/me",
            Some(&leaving.token),
            Some(json!({"password": "password-123"})),
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let failed_attempt = "SELECT count(*) FROM users.outbox
         WHERE subject_id = $1 AND target = 'messaging' AND delivered_at IS NULL AND attempts > 0";
    wait_for_count(
        &app.admin_pool,
        failed_attempt,
        leaving.id,
        200,
        "the relay never tried while messaging was down",
    )
    .await;
    let readable =
        "SELECT count(*) FROM messaging.messages WHERE sender_id = $1 AND body IS NOT NULL";
    assert_eq!(
        count(&app.admin_pool, readable, leaving.id).await,
        2,
        "nothing happened yet"
    );

    app.restart_a().await;
    let delivered = "SELECT count(*) FROM users.outbox
         WHERE subject_id = $1 AND target = 'messaging' AND delivered_at IS NOT NULL";
    wait_for_count(
        &app.admin_pool,
        delivered,
        leaving.id,
        200,
        "the deletion never reached messaging after it came back",
    )
    .await;
    assert_eq!(count(&app.admin_pool, readable, leaving.id).await, 0);
    let kept = "SELECT count(*) FROM messaging.messages WHERE sender_id = $1 AND body = 'three'";
    assert_eq!(
        count(&app.admin_pool, kept, staying.id).await,
        1,
        "the other side's message stays"
    );

    // The leaver's access token is still within its lifetime, and still verifies: messaging
    // itself refuses it now.
    let path = format!("/v1/conversations/{conversation}/messages");
    let sent = app
        .post(&path, &leaving.token, json!({"body": "still here?"}))
        .await;
    expect_problem(sent, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let started = app
        .post(
            "/v1/conversations",
            &leaving.token,
            json!({"participant_ids": [staying.id]}),
        )
        .await;
    expect_problem(started, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let after = "SELECT count(*) FROM messaging.messages WHERE sender_id = $1";
    assert_eq!(
        count(&app.admin_pool, after, leaving.id).await,
        2,
        "nothing new was stored"
    );
}

#[tokio::test]
async fn a_send_waits_for_its_accounts_deletion_in_flight_and_is_then_refused() {
    let app = spawn_app().await;
    let leaving = app.register("leaving").await;
    let staying = app.register("staying").await;
    let conversation = app.conversation(&staying, &[&leaving]).await;
    app.send(&leaving, &conversation, "before").await;
    // The deletion's transaction, as `store::accounts::depart`'s caller opens it.
    let mut deletion = app.admin_pool.begin().await.unwrap();
    common::db::lock_account(&mut deletion, leaving.id, common::db::AccountLock::Delete)
        .await
        .unwrap();
    let send = tokio::spawn({
        let (client, address, token) = (
            app.client.clone(),
            app.address.clone(),
            leaving.token.clone(),
        );
        let path = format!("/v1/conversations/{conversation}/messages");
        async move {
            client
                .post(format!("{address}{path}"))
                .bearer_auth(&token)
                .json(&json!({"body": "while leaving"}))
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !send.is_finished(),
        "a send takes its account's lock, so it waits for the deletion"
    );
    sqlx::query("INSERT INTO messaging.departed_accounts (account_id) VALUES ($1)")
        .bind(leaving.id)
        .execute(&mut *deletion)
        .await
        .unwrap();
    deletion.commit().await.unwrap();
    let refused = send.await.unwrap();
    expect_problem(refused, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let sent = "SELECT count(*) FROM messaging.messages WHERE sender_id = $1";
    assert_eq!(
        count(&app.admin_pool, sent, leaving.id).await,
        1,
        "only the first"
    );
}

#[tokio::test]
async fn a_departed_owner_can_no_longer_change_who_is_in_a_group() {
    let app = spawn_app().await;
    let (owner, bob, carol, dave) = (
        app.register("owner").await,
        app.register("bob").await,
        app.register("carol").await,
        app.register("dave").await,
    );
    let conversation = app.conversation(&owner, &[&bob, &carol]).await;
    // As the deletion's outbox delivers it; the owner's token stays valid until it expires.
    sqlx::query("INSERT INTO messaging.departed_accounts (account_id) VALUES ($1)")
        .bind(owner.id)
        .execute(&app.admin_pool)
        .await
        .unwrap();
    let path = format!("/v1/conversations/{conversation}/participants");
    expect_problem(
        app.post(&path, &owner.token, json!({"user_ids": [dave.id]}))
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    expect_problem(
        app.leave(&owner, &conversation).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    let id: uuid::Uuid = conversation.parse().unwrap();
    let members = "SELECT count(*) FROM messaging.participants WHERE conversation_id = $1";
    assert_eq!(
        count(&app.admin_pool, members, id).await,
        3,
        "nobody joined or left"
    );
    let notes =
        "SELECT count(*) FROM messaging.messages WHERE kind = 'system' AND conversation_id = $1";
    assert_eq!(
        count(&app.admin_pool, notes, id).await,
        0,
        "no system message"
    );
}
