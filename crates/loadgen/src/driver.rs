//! The open-loop load driver.
//!
//! Requests leave on a fixed schedule (one every 1/rate seconds) whatever the server does;
//! each one's latency is measured from its *intended* send time, so a stalled server shows up
//! as latency rather than as fewer requests (no coordinated omission). Latencies go into an
//! HdrHistogram. A run is valid only if the achieved rate is within 1 % of the target and no
//! request failed. The first seconds warm caches and connections and are not recorded.

use crate::seed::Manifest;
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Where the services are.
pub struct Targets {
    pub posts: String,
    pub messaging: String,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

/// The outcome of one run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub latency_ms: Latency,
    /// Achieved rate within 1 % of the target, and no errors.
    pub valid: bool,
}

/// One request of a scenario.
enum Call {
    Get {
        url: String,
        token: Option<Arc<str>>,
    },
    Post {
        url: String,
        token: Arc<str>,
        body: serde_json::Value,
        key: Option<String>,
    },
}

struct Plan {
    calls: Box<dyn Fn(u64) -> Call + Send + Sync>,
}

fn tokens_for(keys_dir: &str, users: &[Uuid]) -> anyhow::Result<Vec<Arc<str>>> {
    Ok(
        crate::tokens::mint(keys_dir, "http://127.0.0.1:8081", users)?
            .into_iter()
            .map(Arc::from)
            .collect(),
    )
}

fn plan(
    scenario: &str,
    targets: &Targets,
    manifest: &Manifest,
    keys_dir: &str,
) -> anyhow::Result<Plan> {
    let readers = |size: &str| -> anyhow::Result<Vec<Arc<str>>> {
        tokens_for(
            keys_dir,
            manifest
                .readers
                .get(size)
                .context("no readers of that size")?,
        )
    };
    let posts = targets.posts.clone();
    let feed = |tokens: Vec<Arc<str>>, posts: String| {
        move |i: u64| Call::Get {
            url: format!("{posts}/v1/feed?limit=20"),
            token: Some(tokens[i as usize % tokens.len()].clone()),
        }
    };
    let authors = manifest.authors.clone();
    let timeline = {
        let posts = posts.clone();
        move |i: u64| Call::Get {
            url: format!(
                "{posts}/v1/users/{}/posts?limit=20",
                authors[(i as usize * 7919) % authors.len()]
            ),
            token: None,
        }
    };
    let writers = readers("100")?;
    let compose = {
        let posts = posts.clone();
        let writers = writers.clone();
        move |i: u64| Call::Post {
            url: format!("{posts}/v1/posts"),
            token: writers[i as usize % writers.len()].clone(),
            body: serde_json::json!({"text": format!("benchmark post {i}")}),
            key: Some(Uuid::new_v4().to_string()),
        }
    };
    let calls: Box<dyn Fn(u64) -> Call + Send + Sync> = match scenario {
        "feed-100" => Box::new(feed(readers("100")?, posts)),
        "feed-1000" => Box::new(feed(readers("1000")?, posts)),
        "feed-5000" => Box::new(feed(readers("5000")?, posts)),
        "timeline" => Box::new(timeline),
        "post" => {
            let ids = manifest.posts.clone();
            Box::new(move |i| Call::Get {
                url: format!("{posts}/v1/posts/{}", ids[i as usize % ids.len()]),
                token: None,
            })
        }
        "compose" => Box::new(compose),
        "noop" => Box::new(move |_| Call::Get {
            url: format!("{posts}/health/live"),
            token: None,
        }),
        "message" => {
            let senders: Vec<Uuid> = manifest.conversations.iter().map(|(_, a, _)| *a).collect();
            let tokens = tokens_for(keys_dir, &senders)?;
            let conversations: Vec<Uuid> = manifest
                .conversations
                .iter()
                .map(|(id, _, _)| *id)
                .collect();
            let messaging = targets.messaging.clone();
            Box::new(move |i| {
                let k = i as usize % conversations.len();
                Call::Post {
                    url: format!("{messaging}/v1/conversations/{}/messages", conversations[k]),
                    token: tokens[k].clone(),
                    body: serde_json::json!({"body": format!("benchmark message {i}")}),
                    key: None,
                }
            })
        }
        // DeathStarBench's social-network mix: 60 % home feed, 30 % user timeline, 10 % compose.
        "mix" => {
            let feed = feed(readers("1000")?, posts);
            Box::new(move |i| match i % 10 {
                0..=5 => feed(i),
                6..=8 => timeline(i),
                _ => compose(i),
            })
        }
        other => anyhow::bail!("unknown scenario {other:?}"),
    };
    Ok(Plan { calls })
}

async fn send(client: &reqwest::Client, call: Call) -> bool {
    let request = match call {
        Call::Get { url, token } => {
            let request = client.get(url);
            match token {
                Some(token) => request.bearer_auth(&*token),
                None => request,
            }
        }
        Call::Post {
            url,
            token,
            body,
            key,
        } => {
            let request = client.post(url).bearer_auth(&*token).json(&body);
            match key {
                Some(key) => request.header("idempotency-key", key),
                None => request,
            }
        }
    };
    match request.send().await {
        Ok(response) => {
            let ok = response.status().is_success();
            ok && response.bytes().await.is_ok()
        }
        Err(_) => false,
    }
}

/// Runs `scenario` at `rate` requests per second for `seconds` (after a warm-up).
pub async fn run(
    scenario: &str,
    rate: f64,
    seconds: f64,
    targets: &Targets,
    work_dir: &str,
    keys_dir: &str,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        rate > 0.0 && seconds > 0.0,
        "rate and seconds must be positive"
    );
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(format!("{work_dir}/manifest.json")).context("run `loadgen seed` first")?,
    )?;
    let plan = Arc::new(plan(scenario, targets, &manifest, keys_dir)?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()?;
    let warmup = 3.0_f64.min(seconds);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = ((warmup + seconds) * rate).round() as u64;
    let measured_from = (warmup * rate).round() as u64;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Duration, bool)>();
    let start = Instant::now() + Duration::from_millis(200);
    // The schedule is kept by an OS thread: tokio's timer has a 1 ms resolution, and every
    // millisecond of lateness would be charged to the server as latency.
    let (ticks, mut due) = mpsc::unbounded_channel::<(u64, Instant)>();
    let clock = std::thread::spawn(move || {
        let mut last_sent = start;
        for i in 0..total {
            let intended = start + interval.mul_f64(i as f64);
            // Sleep most of the wait, then spin the last fraction: a sleeping thread wakes
            // tens of microseconds late.
            let spin = Duration::from_micros(300);
            if let Some(wait) = intended.checked_duration_since(Instant::now())
                && wait > spin
            {
                std::thread::sleep(wait - spin);
            }
            while Instant::now() < intended {
                std::hint::spin_loop();
            }
            last_sent = Instant::now();
            if ticks.send((i, intended)).is_err() {
                break;
            }
        }
        last_sent
    });
    while let Some((i, intended)) = due.recv().await {
        let (client, plan, tx) = (client.clone(), plan.clone(), tx.clone());
        tokio::spawn(async move {
            let ok = send(&client, (plan.calls)(i)).await;
            let _ = tx.send((i, intended.elapsed(), ok));
        });
    }
    let last_sent = clock
        .join()
        .map_err(|_| anyhow::anyhow!("the clock thread panicked"))?;
    drop(tx);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut errors) = (0u64, 0u64);
    while let Some((i, latency, ok)) = rx.recv().await {
        if i < measured_from {
            continue;
        }
        requests += 1;
        if !ok {
            errors += 1;
        }
        histogram.record(
            u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        )?;
    }
    let measured_start = start + interval.mul_f64(measured_from as f64);
    let sending = last_sent.saturating_duration_since(measured_start) + interval;
    let achieved_rate = requests as f64 / sending.as_secs_f64();
    let ms = |us: u64| us as f64 / 1000.0;
    let latency_ms = Latency {
        p50: ms(histogram.value_at_quantile(0.5)),
        p90: ms(histogram.value_at_quantile(0.9)),
        p99: ms(histogram.value_at_quantile(0.99)),
        p99_9: ms(histogram.value_at_quantile(0.999)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1000.0,
    };
    let valid = errors == 0 && (achieved_rate - rate).abs() <= rate * 0.01;
    Ok(Report {
        scenario: scenario.to_owned(),
        target_rate: rate,
        achieved_rate,
        seconds,
        requests,
        errors,
        latency_ms,
        valid,
    })
}
