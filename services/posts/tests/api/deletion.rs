//! Account deletion reaching the posts service through the users service's outbox: at least
//! once, even when posts is down at the time, and idempotent.

use crate::helpers::{expect_problem, expect_status, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use test_support::db::{count, wait_for_count};
use uuid::Uuid;

#[tokio::test]
async fn a_deletion_made_while_posts_is_down_is_applied_once_it_is_back() {
    let mut app = spawn_app().await;
    let leaving = app.register("leaving").await;
    let staying = app.register("staying").await;
    let own = app.post(&leaving, "mine").await;
    let theirs = app.post(&staying, "theirs").await;
    let reply = app.reply(&leaving, &theirs, "a reply of mine").await;
    let liked_own = format!("/v1/posts/{}/like", own["id"].as_str().unwrap());
    let liked_theirs = format!("/v1/posts/{}/like", theirs["id"].as_str().unwrap());
    for (who, path) in [(&staying, &liked_own), (&leaving, &liked_theirs)] {
        let liked = app.request(Method::PUT, path, Some(&who.token), None).await;
        expect_status(liked, StatusCode::NO_CONTENT).await;
    }
    let theirs_id: Uuid = theirs["id"].as_str().unwrap().parse().unwrap();

    app.stop_posts().await;
    app.delete_account(&leaving).await;
    // The relay tries, fails, and keeps the event.
    let failed_attempt = "SELECT count(*) FROM users.outbox
         WHERE subject_id = $1 AND target = 'posts' AND delivered_at IS NULL AND attempts > 0";
    wait_for_count(
        &app.admin_pool,
        failed_attempt,
        leaving.id,
        100,
        "the relay never tried while posts was down",
    )
    .await;
    let left = "SELECT count(*) FROM posts.posts WHERE author_id = $1";
    assert_eq!(
        count(&app.admin_pool, left, leaving.id).await,
        2,
        "nothing happened yet"
    );

    app.restart_posts().await;
    let delivered = "SELECT count(*) FROM users.outbox
         WHERE subject_id = $1 AND target = 'posts' AND delivered_at IS NOT NULL";
    wait_for_count(
        &app.admin_pool,
        delivered,
        leaving.id,
        200,
        "the deletion never reached posts after it came back",
    )
    .await;
    assert_eq!(count(&app.admin_pool, left, leaving.id).await, 0);
    let likes = "SELECT count(*) FROM posts.likes WHERE user_id = $1";
    assert_eq!(count(&app.admin_pool, likes, leaving.id).await, 0);
    // The other author's post keeps exact counters: the like and the reply are gone.
    let counters: (i64, i64) =
        sqlx::query_as("SELECT like_count, reply_count FROM posts.posts WHERE id = $1")
            .bind(theirs_id)
            .fetch_one(&app.admin_pool)
            .await
            .unwrap();
    assert_eq!(counters, (0, 0));
    let gone = app
        .get(
            &format!("/v1/posts/{}", reply["id"].as_str().unwrap()),
            None,
        )
        .await;
    expect_problem(gone, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_deletion_endpoint_is_idempotent_and_only_for_the_users_service() {
    let app = spawn_app().await;
    let author = app.register("author").await;
    app.post(&author, "soon gone").await;
    let path = format!("/internal/v1/accounts/{}/deletion", author.id);
    let token_of = |service: &str| {
        test_support::tokens::valid(&test_support::tokens::claims(
            author.id,
            json!({"sub": format!("svc:{service}"), "aud": "social-internal", "role": "service"}),
        ))
    };
    // A user token, even the account's own, and another service are refused.
    let by_user = app
        .request(Method::POST, &path, Some(&author.token), None)
        .await;
    expect_problem(by_user, StatusCode::FORBIDDEN, "forbidden").await;
    let by_messaging = app
        .request(Method::POST, &path, Some(&token_of("messaging")), None)
        .await;
    expect_problem(by_messaging, StatusCode::FORBIDDEN, "forbidden").await;
    let anonymous = app.request(Method::POST, &path, None, None).await;
    expect_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let left = "SELECT count(*) FROM posts.posts WHERE author_id = $1";
    assert_eq!(count(&app.admin_pool, left, author.id).await, 1);
    // Delivered twice (a lost acknowledgement), applied once.
    for _ in 0..2 {
        let by_users = app
            .request(Method::POST, &path, Some(&token_of("users")), None)
            .await;
        expect_status(by_users, StatusCode::NO_CONTENT).await;
    }
    assert_eq!(count(&app.admin_pool, left, author.id).await, 0);
}

#[tokio::test]
async fn a_moderation_action_reaches_the_audit_log_even_when_users_was_down_at_the_time() {
    let app = crate::helpers::spawn_behind_proxies(&[("AUDIT_REPORT_POLL_MS", "100")]).await;
    let author = app.register("author").await;
    let moderator = app.with_role("mod", "moderator").await;
    let admin = app.with_role("root", "admin").await;
    let post = app.post(&author, "rule-breaking").await;
    let post_id = post["id"].as_str().unwrap().to_owned();

    // Users is unreachable from posts while the moderator acts: the action is kept and reported
    // once it is back. (Tokens still verify from cached keys.)
    let users = &app.proxies.as_ref().unwrap().users;
    users.set(faultproxy::Fault::Down);
    let deleted = app
        .client
        .delete(format!("{}/v1/posts/{post_id}", app.address))
        .bearer_auth(&moderator.token)
        .header("user-agent", "mod-console/2")
        .header("x-request-id", "moderation-1")
        .send()
        .await
        .unwrap();
    expect_status(deleted, StatusCode::NO_CONTENT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reported = "SELECT count(*) FROM posts.moderation_actions WHERE author_id = $1 AND reported_at IS NOT NULL";
    assert_eq!(count(&app.admin_pool, reported, author.id).await, 0);

    users.set(faultproxy::Fault::None);
    let mut tries = 0;
    let entry = loop {
        let page: serde_json::Value = app
            .users_call(
                Method::GET,
                "/v1/admin/audit?event=moderation.post_deleted",
                Some(&admin.token),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        if let Some(entry) = page["items"].as_array().and_then(|items| items.first()) {
            break entry.clone();
        }
        tries += 1;
        assert!(
            tries < 100,
            "the moderation action never reached the audit log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["actor_id"], moderator.id.to_string());
    assert_eq!(entry["subject_id"], author.id.to_string());
    assert_eq!(entry["detail"]["post_id"], post_id);
    assert_eq!(entry["user_agent"], "mod-console/2");
    assert_eq!(entry["request_id"], "moderation-1");
    // Users commits the entry before it answers, and posts marks the action reported only once
    // the answer is back: the entry can be read before the mark is made.
    wait_for_count(
        &app.admin_pool,
        reported,
        author.id,
        100,
        "the action was never marked reported",
    )
    .await;

    // Reported once, even if delivered again.
    let again = "UPDATE posts.moderation_actions SET reported_at = NULL, next_report_at = now() WHERE author_id = $1";
    sqlx::query(again)
        .bind(author.id)
        .execute(&app.admin_pool)
        .await
        .unwrap();
    wait_for_count(&app.admin_pool, reported, author.id, 100, "never re-sent").await;
    let recorded = "SELECT count(*) FROM users.audit_log WHERE event = 'moderation.post_deleted' AND subject_id = $1";
    assert_eq!(count(&app.admin_pool, recorded, author.id).await, 1);
}

/// A token issued before the deletion verifies until it expires; posts itself refuses it once
/// the deletion has reached it. Writers racing the deletion leave nothing behind: each write
/// either committed before the sweep (and was swept) or was refused.
#[tokio::test]
async fn once_the_deletion_has_arrived_the_accounts_token_can_write_nothing() {
    let app = crate::helpers::spawn_app_with(&[
        ("RATE_LIMIT_ACCOUNT", "100000/60"),
        ("RATE_LIMIT_POST_CREATE", "100000/60"),
    ])
    .await;
    let leaving = app.register("leaving").await;
    let other = app.register("other").await;
    let target = app.post(&other, "like me").await;
    let like_path = format!("/v1/posts/{}/like", target["id"].as_str().unwrap());
    let users_token = test_support::tokens::valid(&test_support::tokens::claims(
        leaving.id,
        json!({"sub": "svc:users", "aud": "social-internal", "role": "service"}),
    ));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let (client, base, token, stop) = (
            app.client.clone(),
            app.address.clone(),
            leaving.token.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Writers with a key take the account's lock with the key's (one statement).
                let mut request = client
                    .post(format!("{base}/v1/posts"))
                    .bearer_auth(&token)
                    .json(&json!({"text": format!("w{writer}-{i}")}));
                if writer % 2 == 1 {
                    request = request.header("idempotency-key", format!("w{writer}-{i}"));
                }
                let response = request.send().await.unwrap();
                statuses.push(response.status());
                i += 1;
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("/internal/v1/accounts/{}/deletion", leaving.id);
    let deleted = app
        .request(Method::POST, &path, Some(&users_token), None)
        .await;
    expect_status(deleted, StatusCode::NO_CONTENT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut created = 0;
    let mut refused = 0;
    for writer in writers {
        for status in writer.await.unwrap() {
            match status {
                StatusCode::CREATED => created += 1,
                StatusCode::UNAUTHORIZED => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert!(
        created > 0 && refused > 0,
        "the race was run: {created} created, {refused} refused"
    );
    let left = "SELECT count(*) FROM posts.posts WHERE author_id = $1";
    assert_eq!(
        count(&app.admin_pool, left, leaving.id).await,
        0,
        "no post outlived the deletion"
    );

    // The account still exists in users (only posts was told), so it is posts that refuses.
    let post = app
        .request(
            Method::POST,
            "/v1/posts",
            Some(&leaving.token),
            Some(json!({"text": "back?"})),
        )
        .await;
    expect_problem(post, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let keyed = app
        .client
        .post(format!("{}/v1/posts", app.address))
        .bearer_auth(&leaving.token)
        .header("idempotency-key", "back-with-a-key")
        .json(&json!({"text": "back?"}))
        .send()
        .await
        .unwrap();
    expect_problem(keyed, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let like = app
        .request(Method::PUT, &like_path, Some(&leaving.token), None)
        .await;
    expect_problem(like, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let likes = "SELECT count(*) FROM posts.likes WHERE user_id = $1";
    assert_eq!(count(&app.admin_pool, likes, leaving.id).await, 0);
    // Others are unaffected.
    let liked = app
        .request(Method::PUT, &like_path, Some(&other.token), None)
        .await;
    expect_status(liked, StatusCode::NO_CONTENT).await;
}
