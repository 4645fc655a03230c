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
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Where the services are.
pub struct Targets {
    pub posts: String,
    pub messaging: String,
    /// A second messaging replica, where the WebSocket scenario's recipients listen.
    pub messaging_b: String,
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
    /// The errors by what went wrong: the status answered, or `timeout`, `connect` or `other`
    /// when no answer came. Says whether a run failed because the service refused (a 503 of
    /// load shedding, a 429), broke, or never answered.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_cause: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    /// The same latencies by the kind of request, for a scenario that mixes kinds (the mix):
    /// which kind fills the tail.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_kind: BTreeMap<&'static str, Latency>,
    /// How late the driver's clock released each measured request after its intended send
    /// time: the driver's own error, already inside `latency_ms` (which runs from the intended
    /// time). Small beside the latencies, or the run measures the driver.
    pub clock_lateness_ms: Latency,
    /// Achieved rate within 1 % of the target, and no errors.
    pub valid: bool,
}

/// One request of a scenario.
pub enum Call {
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
    /// The kind of request `i` is, for a scenario that mixes kinds.
    kind: Option<fn(u64) -> &'static str>,
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
        "mix" => {
            let feed = feed(readers("1000")?, posts);
            Box::new(move |i| match mix_kind(i) {
                "feed" => feed(i),
                "timeline" => timeline(i),
                _ => compose(i),
            })
        }
        other => anyhow::bail!("unknown scenario {other:?}"),
    };
    let kind = (scenario == "mix").then_some(mix_kind as fn(u64) -> &'static str);
    Ok(Plan { calls, kind })
}

/// DeathStarBench's social-network mix: 60 % home feed, 30 % user timeline, 10 % compose.
fn mix_kind(i: u64) -> &'static str {
    match i % 10 {
        0..=5 => "feed",
        6..=8 => "timeline",
        _ => "compose",
    }
}

/// Sends `call`; an error names its cause (see [`Report::errors_by_cause`]).
async fn send(client: &reqwest::Client, call: Call) -> Result<(), String> {
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
    let cause = |e: reqwest::Error| {
        if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "other"
        }
        .to_owned()
    };
    let response = request.send().await.map_err(cause)?;
    let status = response.status();
    if !status.is_success() {
        return Err(status.as_u16().to_string());
    }
    response.bytes().await.map(drop).map_err(cause)
}

/// The driver's HTTP client: enough idle connections for an open loop, a bound on each request.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// Runs `scenario` at `rate` requests per second for `seconds` (after a warm-up). With `trace`,
/// also writes every measured request to that file as CSV (`i,kind,sent_unix_ms,latency_us,ok`,
/// the intended send time in milliseconds since the Unix epoch): to see whether a tail is
/// spread or comes in stalls, and to line those up with what else the machine recorded.
pub async fn run(
    scenario: &str,
    rate: f64,
    seconds: f64,
    targets: &Targets,
    work_dir: &str,
    keys_dir: &str,
    trace: Option<&str>,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        rate > 0.0 && seconds > 0.0,
        "rate and seconds must be positive"
    );
    let manifest = Manifest::load(work_dir)?;
    let plan = Arc::new(plan(scenario, targets, &manifest, keys_dir)?);
    let client = http_client()?;
    let schedule = Schedule::new(rate, seconds);
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Duration, Result<(), String>)>();
    let (clock, mut due) = schedule.start();
    while let Some((i, intended)) = due.recv().await {
        let (client, plan, tx) = (client.clone(), plan.clone(), tx.clone());
        tokio::spawn(async move {
            let outcome = send(&client, (plan.calls)(i)).await;
            let _ = tx.send((i, intended.elapsed(), outcome));
        });
    }
    let clocked = clock
        .join()
        .map_err(|_| anyhow::anyhow!("the clock thread panicked"))?;
    drop(tx);
    let mut histogram = new_histogram()?;
    let mut kinds: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    let mut lines = trace.map(|_| String::from("i,kind,sent_unix_ms,latency_us,ok\n"));
    // The wall-clock time of the schedule's start (past by now), for the trace.
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(schedule.start.elapsed());
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut errors_by_cause: BTreeMap<String, u64> = BTreeMap::new();
    while let Some((i, latency, outcome)) = rx.recv().await {
        if i < schedule.measured_from {
            continue;
        }
        let kind = plan.kind.map(|kind| kind(i));
        if let Some(lines) = lines.as_mut() {
            let sent = epoch + (schedule.intended(i) - schedule.start);
            let kind = kind.unwrap_or(scenario);
            let ok = outcome.is_ok();
            lines.push_str(&format!(
                "{i},{kind},{:.3},{},{ok}\n",
                sent.as_secs_f64() * 1000.0,
                latency.as_micros()
            ));
        }
        requests += 1;
        if let Err(cause) = outcome {
            errors += 1;
            *errors_by_cause.entry(cause).or_default() += 1;
        }
        record(&mut histogram, latency)?;
        if let Some(kind) = kind {
            let histogram = match kinds.entry(kind) {
                Entry::Occupied(held) => held.into_mut(),
                Entry::Vacant(new) => new.insert(new_histogram()?),
            };
            record(histogram, latency)?;
        }
    }
    if let (Some(path), Some(lines)) = (trace, lines) {
        std::fs::write(path, lines).with_context(|| format!("writing the trace to {path}"))?;
    }
    let mut report = report(scenario, &schedule, &clocked, requests, errors, &histogram)?;
    report.errors_by_cause = errors_by_cause;
    report.by_kind = kinds
        .iter()
        .map(|(kind, histogram)| (*kind, latency(histogram)))
        .collect();
    Ok(report)
}

/// An empty latency histogram: microseconds, from 1 µs to 60 s, to three significant digits.
pub fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
}

/// Records one latency, in microseconds.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) -> anyhow::Result<()> {
    histogram.record(
        u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1),
    )?;
    Ok(())
}

/// The fixed arrival schedule of a run: a warm-up, then `seconds` measured.
pub struct Schedule {
    pub rate: f64,
    pub seconds: f64,
    pub start: Instant,
    pub interval: Duration,
    pub total: u64,
    /// Requests before this one are the warm-up.
    pub measured_from: u64,
}

impl Schedule {
    /// `rate` per second for a warm-up of up to 3 s and then `seconds`.
    pub fn new(rate: f64, seconds: f64) -> Self {
        let warmup = 3.0_f64.min(seconds);
        Self {
            rate,
            seconds,
            start: Instant::now() + Duration::from_millis(200),
            interval: Duration::from_secs_f64(1.0 / rate),
            total: ((warmup + seconds) * rate).round() as u64,
            measured_from: (warmup * rate).round() as u64,
        }
    }

    /// The intended send time of request `i`.
    pub fn intended(&self, i: u64) -> Instant {
        self.start + self.interval.mul_f64(i as f64)
    }

    /// Starts the clock: `(i, intended time)` for every request, on time. The schedule is kept
    /// by an OS thread: tokio's timer has a 1 ms resolution, and every millisecond of lateness
    /// would be charged to the server as latency. The thread returns, when the last was sent,
    /// that time and how late it released each measured request.
    pub fn start(
        &self,
    ) -> (
        std::thread::JoinHandle<Clocked>,
        mpsc::UnboundedReceiver<(u64, Instant)>,
    ) {
        let (ticks, due) = mpsc::unbounded_channel::<(u64, Instant)>();
        let (start, interval, total, measured_from) =
            (self.start, self.interval, self.total, self.measured_from);
        let spin = spin_for(interval);
        let clock = std::thread::spawn(move || {
            precise_sleeps();
            let mut last_sent = start;
            let mut lateness = Vec::with_capacity(total.saturating_sub(measured_from) as usize);
            for i in 0..total {
                let intended = start + interval.mul_f64(i as f64);
                // Sleep most of the wait, then spin the last fraction: a sleeping thread wakes
                // tens of microseconds late.
                if let Some(wait) = intended.checked_duration_since(Instant::now())
                    && wait > spin
                {
                    std::thread::sleep(wait - spin);
                }
                while Instant::now() < intended {
                    std::hint::spin_loop();
                }
                last_sent = Instant::now();
                if i >= measured_from {
                    lateness.push(last_sent.saturating_duration_since(intended));
                }
                if ticks.send((i, intended)).is_err() {
                    break;
                }
            }
            Clocked {
                last_sent,
                lateness,
            }
        });
        (clock, due)
    }
}

/// Asks that this thread's sleeps end as close to their deadlines as the timer allows. A sleep
/// may end up to the thread's timer slack after its deadline: 50 µs by default on Linux, which
/// would be charged to the server (or to the host's wake-up). 1 ns asks for the timer's own
/// precision. Should it fail, the lateness is still measured and reported.
pub fn precise_sleeps() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
}

/// How long the clock spins before each send, after sleeping the rest of the wait: a tenth of
/// the interval, at most 300 µs. Spinning a fixed 300 µs took 43 % of a core at the mix's
/// half-saturation rate (1,445/s, a request every 692 µs) from the two cores the services
/// share, and all of one at 5,000/s, where its no-op p99 read 2.7 ms against oha's 0.6–0.7 ms.
/// A tenth keeps the clock under a tenth of a core at any rate, and the same 300 µs at the busy
/// and light rates (200/s and 20/s) as every earlier run. With the timer slack at 1 ns, sleeps
/// end within tens of microseconds; what they end later than that is measured:
/// [`Report::clock_lateness_ms`].
fn spin_for(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_micros(300))
}

/// What the clock thread did: when it released the last request, and how late it released
/// each measured one.
pub struct Clocked {
    pub last_sent: Instant,
    pub lateness: Vec<Duration>,
}

impl Clocked {
    /// The lateness as percentiles.
    pub fn lateness_ms(&self) -> anyhow::Result<Latency> {
        let mut histogram = new_histogram()?;
        for late in &self.lateness {
            record(&mut histogram, *late)?;
        }
        Ok(latency(&histogram))
    }
}

/// The report of a run on `schedule`, whose clock did what `clocked` says.
pub fn report(
    scenario: &str,
    schedule: &Schedule,
    clocked: &Clocked,
    requests: u64,
    errors: u64,
    histogram: &Histogram<u64>,
) -> anyhow::Result<Report> {
    let last_sent = clocked.last_sent;
    let rate = schedule.rate;
    let measured_start = schedule.intended(schedule.measured_from);
    let sending = last_sent.saturating_duration_since(measured_start) + schedule.interval;
    let achieved_rate = requests as f64 / sending.as_secs_f64();
    let latency_ms = latency(histogram);
    let valid = errors == 0 && (achieved_rate - rate).abs() <= rate * 0.01;
    Ok(Report {
        scenario: scenario.to_owned(),
        target_rate: rate,
        achieved_rate,
        seconds: schedule.seconds,
        requests,
        errors,
        errors_by_cause: BTreeMap::new(),
        latency_ms,
        by_kind: BTreeMap::new(),
        clock_lateness_ms: clocked.lateness_ms()?,
        valid,
    })
}

/// The percentiles of `histogram` (microseconds), in milliseconds.
pub fn latency(histogram: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        p50: ms(histogram.value_at_quantile(0.5)),
        p90: ms(histogram.value_at_quantile(0.9)),
        p99: ms(histogram.value_at_quantile(0.99)),
        p99_9: ms(histogram.value_at_quantile(0.999)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1000.0,
    }
}

/// A closed-loop saturation run: `concurrency` workers send `scenario`'s requests back to back
/// for `seconds` (after a 2 s warm-up); the answer is how many succeeded per second.
pub async fn saturate(
    scenario: &str,
    concurrency: usize,
    seconds: f64,
    targets: &Targets,
    work_dir: &str,
    keys_dir: &str,
) -> anyhow::Result<serde_json::Value> {
    let manifest = Manifest::load(work_dir)?;
    let plan = Arc::new(plan(scenario, targets, &manifest, keys_dir)?);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let measure_from = Instant::now() + Duration::from_secs(2);
    let end = measure_from + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (plan, next) = (plan.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut all) = (0u64, 0u64, 0u64);
            let mut client = crate::bare::Worker::default();
            while Instant::now() < end {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sent = Instant::now();
                let success = client.send((plan.calls)(i)).await.is_ok();
                all += 1;
                if sent >= measure_from && Instant::now() <= end {
                    if success { ok += 1 } else { failed += 1 }
                }
            }
            (ok, failed, all)
        }));
    }
    let (mut ok, mut failed, mut all) = (0u64, 0u64, 0u64);
    for worker in workers {
        let (o, f, a) = worker.await?;
        ok += o;
        failed += f;
        all += a;
    }
    // `requests_total` counts the warm-up too: what a caller measuring the processes' CPU over
    // the whole run divides by.
    Ok(serde_json::json!({
        "scenario": scenario, "concurrency": concurrency, "seconds": seconds,
        "throughput_per_s": ok as f64 / seconds, "errors": failed, "requests_total": all,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_spins_a_tenth_of_the_interval_and_never_more_than_300_microseconds() {
        let at = |rate: f64| spin_for(Duration::from_secs_f64(1.0 / rate));
        // The busy and light rates keep the 300 µs of every earlier run.
        assert_eq!(at(20.0), Duration::from_micros(300));
        assert_eq!(at(200.0), Duration::from_micros(300));
        // The mix at half its saturation, and a no-op pushed hard: a tenth of a core.
        assert_eq!(at(1445.0).as_micros(), 69);
        assert_eq!(at(5000.0), Duration::from_micros(20));
    }

    /// A server on loopback that answers every connection with `response`, verbatim.
    async fn answering(response: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        format!("http://{address}/")
    }

    fn get(url: String) -> Call {
        Call::Get { url, token: None }
    }

    #[tokio::test]
    async fn an_error_names_its_cause() {
        let client = http_client().unwrap();
        let ok = answering("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
        assert_eq!(send(&client, get(ok)).await, Ok(()));
        let shed = answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(send(&client, get(shed)).await, Err("503".to_owned()));
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        assert_eq!(send(&client, get(url)).await, Err("connect".to_owned()));
    }
}
