//! A crash under load loses nothing: every message acknowledged with 201 before `kill -9` is
//! there afterwards, a send retried with its idempotency key exists once, and the
//! conversation's seqs stay gapless.

use crate::helpers::{TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use test_support::Server;
use test_support::crash::{Outcomes, retry_until_acknowledged};

/// The real `messaging` binary on `port`, against the test's database and users service.
fn start_binary(app: &TestApp, port: u16) -> Server {
    Server::start(
        env!("CARGO_BIN_EXE_messaging"),
        &[
            ("PORT", port.to_string()),
            ("HTTP_WORKERS", "2".to_owned()),
            ("DATABASE_URL", app._db.url_for("messaging")),
            ("REDIS_KEY_PREFIX", test_support::redis_prefix()),
            (
                "JWKS_URL",
                format!("{}/.well-known/jwks.json", app.users_address),
            ),
            ("USERS_BASE_URL", app.users_address.clone()),
            ("RATE_LIMIT_ACCOUNT", "100000/60".to_owned()),
            ("RATE_LIMIT_MESSAGE_SEND", "100000/60".to_owned()),
            ("RUST_LOG", "error".to_owned()),
        ],
    )
}

/// Sends `key` as both idempotency key and body: the message's id, or why not.
async fn send(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
) -> Result<String, String> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"body": key}))
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
async fn kill_9_under_send_load_loses_no_acknowledged_message_and_retries_do_not_duplicate() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conversation = app.conversation(&alice, &[&bob]).await;
    let port = test_support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/v1/conversations/{conversation}/messages");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut first = start_binary(&app, port);
    test_support::wait_ready(&client, &base).await;

    // Four senders on one conversation (they contend for its row lock), each with its own keys.
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let token = if sender % 2 == 0 {
            &alice.token
        } else {
            &bob.token
        };
        let (client, url, token, stop) = (client.clone(), url.clone(), token.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("s{sender}-{i}");
                let outcome = send(&client, &url, &token, &key).await;
                if outcome.is_err() {
                    // Refused connections come back at once: no need for thousands of them.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                outcomes.push((key, outcome));
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
    for sender in senders {
        results.extend(sender.await.unwrap());
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

    // Senders 0 and 2 are alice, 1 and 3 bob.
    let token_of = |key: &str| {
        if key.starts_with("s0") || key.starts_with("s2") {
            &alice.token
        } else {
            &bob.token
        }
    };
    let second = start_binary(&app, port);
    test_support::wait_ready(&client, &base).await;
    // Clients retry what was not acknowledged, with the same keys, and replay a few that were
    // (an acknowledgement lost on the way): those must answer with the original message.
    for key in &unacknowledged {
        let token = token_of(key);
        let id = retry_until_acknowledged(key, || send(&client, &url, token, key)).await;
        acknowledged.insert(key.clone(), id);
    }
    for (key, id) in acknowledged.iter().take(5) {
        let token = token_of(key);
        let again = send(&client, &url, token, key).await;
        assert_eq!(
            again.as_deref(),
            Ok(id.as_str()),
            "a replay, not a new message"
        );
    }
    drop(second);

    let stored: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT body, id::text, seq FROM messaging.messages
         WHERE conversation_id = $1::uuid AND kind = 'text' ORDER BY seq",
    )
    .bind(&conversation)
    .fetch_all(&app.admin_pool)
    .await
    .unwrap();
    let seqs: Vec<i64> = stored.iter().map(|(_, _, seq)| *seq).collect();
    let first_seq = seqs[0];
    assert_eq!(
        seqs,
        (first_seq..first_seq + seqs.len() as i64).collect::<Vec<_>>(),
        "seqs are gapless"
    );
    let stored: BTreeMap<String, String> =
        stored.into_iter().map(|(body, id, _)| (body, id)).collect();
    assert_eq!(stored.len(), seqs.len(), "no message is stored twice");
    assert_eq!(
        stored, acknowledged,
        "every acknowledged message is stored, with the id that was acknowledged, and nothing else"
    );
}
