//! The real-time scenario: messages sent through one messaging replica, received on WebSockets
//! held by the other. Latency runs from each message's intended send time (open loop, as in
//! [`crate::driver`]) to its arrival on the recipient's socket, so it covers the send, the
//! commit, the publish through Redis and the delivery by the other replica. The report's
//! `by_kind` splits it: `answered` runs from the same intended time to the send's 201, so a
//! tail that `answered` shares is the send's, and one it lacks is the delivery's.

use crate::driver::{
    Report, Schedule, Targets, http_client, latency, new_histogram, record, report,
};
use crate::seed::Manifest;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Conversations used: each recipient holds one socket.
const CONVERSATIONS: usize = 50;

/// Runs the scenario at `rate` messages per second for `seconds`.
pub async fn run(
    rate: f64,
    seconds: f64,
    targets: &Targets,
    work_dir: &str,
    keys_dir: &str,
) -> anyhow::Result<Report> {
    let manifest = Manifest::load(work_dir)?;
    let pairs: Vec<_> = manifest
        .conversations
        .iter()
        .take(CONVERSATIONS)
        .copied()
        .collect();
    anyhow::ensure!(!pairs.is_empty(), "no conversations in the manifest");
    let senders: Vec<_> = pairs.iter().map(|(_, a, _)| *a).collect();
    let recipients: Vec<_> = pairs.iter().map(|(_, _, b)| *b).collect();
    let sender_tokens = crate::tokens::mint(keys_dir, "http://127.0.0.1:8081", &senders)?;
    let recipient_tokens = crate::tokens::mint(keys_dir, "http://127.0.0.1:8081", &recipients)?;

    // Intended send time of each message, by its number, until it arrives.
    let pending: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(u64, Duration)>();
    let ws_base = targets.messaging_b.replacen("http", "ws", 1);
    for token in &recipient_tokens {
        let mut request = format!("{ws_base}/v1/stream").into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
        let (pending, arrived_tx) = (pending.clone(), arrived_tx.clone());
        tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                let number = event["message"]["body"]
                    .as_str()
                    .and_then(|b| b.strip_prefix("ws "))
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(number) = number
                    && let Some(intended) = pending.lock().ok().and_then(|mut p| p.remove(&number))
                {
                    let _ = arrived_tx.send((number, intended.elapsed()));
                }
            }
        });
    }
    drop(arrived_tx);

    let client = http_client()?;
    let schedule = Schedule::new(rate, seconds);
    let (clock, mut due) = schedule.start();
    let sender_tokens: Arc<Vec<String>> = Arc::new(sender_tokens);
    let conversations: Arc<Vec<uuid::Uuid>> = Arc::new(pairs.iter().map(|(c, _, _)| *c).collect());
    let failed_sends = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // From each measured send's intended time to its 201.
    let answered = Arc::new(Mutex::new(new_histogram()?));
    while let Some((i, intended)) = due.recv().await {
        if let Ok(mut p) = pending.lock() {
            p.insert(i, intended);
        }
        let k = i as usize % conversations.len();
        let url = format!(
            "{}/v1/conversations/{}/messages",
            targets.messaging, conversations[k]
        );
        let (client, tokens, failed, answered) = (
            client.clone(),
            sender_tokens.clone(),
            failed_sends.clone(),
            answered.clone(),
        );
        let measured = i >= schedule.measured_from;
        tokio::spawn(async move {
            let sent = client
                .post(url)
                .bearer_auth(&tokens[k])
                .json(&serde_json::json!({"body": format!("ws {i}")}))
                .send()
                .await;
            let ok = matches!(sent, Ok(r) if r.status().is_success());
            if !measured {
                return;
            }
            if !ok {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else if let Ok(mut answered) = answered.lock() {
                let _ = record(&mut answered, intended.elapsed());
            }
        });
    }
    let clocked = clock
        .join()
        .map_err(|_| anyhow::anyhow!("the clock thread panicked"))?;
    // Whatever has not arrived five seconds after the last send is lost.
    let mut histogram = new_histogram()?;
    let mut received = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let remaining = pending
            .lock()
            .map(|p| p.keys().filter(|n| **n >= schedule.measured_from).count())
            .unwrap_or(0);
        let next = tokio::time::timeout_at(deadline, arrived.recv()).await;
        match next {
            Ok(Some((number, latency))) => {
                if number >= schedule.measured_from {
                    received += 1;
                    record(&mut histogram, latency)?;
                }
            }
            _ => break,
        }
        if remaining == 0 && arrived.is_empty() {
            break;
        }
    }
    let measured = schedule.total - schedule.measured_from;
    let lost = measured.saturating_sub(received);
    let errors = lost.max(failed_sends.load(std::sync::atomic::Ordering::Relaxed));
    if histogram.is_empty() {
        record(&mut histogram, Duration::from_secs(60))?;
    }
    let mut report = report(
        "message-ws",
        &schedule,
        &clocked,
        measured,
        errors,
        &histogram,
    )?;
    let answered = answered
        .lock()
        .map_err(|_| anyhow::anyhow!("a send's task panicked"))?;
    if !answered.is_empty() {
        report.by_kind.insert("answered", latency(&answered));
    }
    report.by_kind.insert("delivered", latency(&histogram));
    Ok(report)
}
