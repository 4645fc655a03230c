//! A crash under load loses nothing: every write acknowledged with 201 before `kill -9` is there
//! afterwards, and writes retried with their idempotency key after the restart exist once.

use crate::helpers::{TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use test_support::Server;
use test_support::crash::{Outcomes, retry_until_acknowledged};

/// The real `posts` binary on `port`, against the test's database and users service.
fn start_binary(app: &TestApp, port: u16) -> Server {
    Server::start(
        env!("CARGO_BIN_EXE_posts"),
        &[
            ("PORT", port.to_string()),
            ("HTTP_WORKERS", "2".to_owned()),
            ("DATABASE_URL", app._db.url_for("posts")),
            ("REDIS_KEY_PREFIX", test_support::redis_prefix()),
            (
                "JWKS_URL",
                format!("{}/.well-known/jwks.json", app.users_address),
            ),
            ("USERS_BASE_URL", app.users_address.clone()),
            ("RATE_LIMIT_ACCOUNT", "100000/60".to_owned()),
            ("RATE_LIMIT_POST_CREATE", "100000/60".to_owned()),
            ("RUST_LOG", "error".to_owned()),
        ],
    )
}

/// Creates a post with `key` as both idempotency key and text: the new post's id, or why not.
async fn create(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
) -> Result<String, String> {
    let response = client
        .post(format!("{base}/v1/posts"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"text": key}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    match body["id"].as_str() {
        Some(id) if status == StatusCode::CREATED => Ok(id.to_owned()),
        _ => Err(format!("{status}: {body}")),
    }
}

#[tokio::test]
async fn kill_9_under_write_load_loses_no_acknowledged_write_and_retries_do_not_duplicate() {
    let app = spawn_app().await;
    let author = app.register("writer").await;
    let port = test_support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut first = start_binary(&app, port);
    test_support::wait_ready(&client, &base).await;

    // Four writers, each with its own keys, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (client, base, token, stop) = (
            client.clone(),
            base.clone(),
            author.token.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("w{writer}-{i}");
                let id = create(&client, &base, &token, &key).await;
                outcomes.push((key, id));
                i += 1;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.kill(); // SIGKILL: no drain, no flush, in-flight requests cut.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut results = Vec::new();
    for writer in writers {
        results.extend(writer.await.unwrap());
    }
    let Outcomes {
        mut acknowledged,
        unacknowledged,
    } = Outcomes::of(results);
    assert!(
        acknowledged.len() >= 10,
        "load was too light: {}",
        acknowledged.len()
    );
    assert!(!unacknowledged.is_empty(), "the crash happened under load");

    let second = start_binary(&app, port);
    test_support::wait_ready(&client, &base).await;
    // Clients retry what was not acknowledged, with the same keys; some acknowledged ones too
    // (an acknowledgement lost on the way), which must answer with the original post.
    // A retry may meet a 409 while PostgreSQL has not yet noticed the dead process's session
    // (its transaction still holds the key's lock); clients retry those after a pause.
    for key in &unacknowledged {
        let id = retry_until_acknowledged(key, || create(&client, &base, &author.token, key)).await;
        acknowledged.insert(key.clone(), id);
    }
    for (key, id) in acknowledged.iter().take(5) {
        let again = create(&client, &base, &author.token, key).await;
        assert_eq!(
            again.as_deref(),
            Ok(id.as_str()),
            "a replay, not a new post"
        );
    }
    drop(second);

    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT text, id::text FROM posts.posts WHERE author_id = $1 ORDER BY text")
            .bind(author.id)
            .fetch_all(&app.admin_pool)
            .await
            .unwrap();
    let texts: BTreeSet<&str> = stored.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts.len(), stored.len(), "no write is stored twice");
    let stored: BTreeMap<String, String> = stored.into_iter().collect();
    assert_eq!(
        stored, acknowledged,
        "every acknowledged write is stored, with the id that was acknowledged, and nothing else"
    );
}
