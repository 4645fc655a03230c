//! `loadgen`: the project's benchmark tool.
//!
//! - `loadgen seed [--small]` fills a bootstrapped, migrated database (default `bench`) with a
//!   fixed-seed synthetic network, writing each schema through COPY as that service's own role.
//! - `loadgen run --scenario NAME --rate R --seconds S` drives an open-loop load against the
//!   running services and prints a JSON report (latency from the *intended* send time, in an
//!   HdrHistogram, so coordinated omission is corrected); `--trace FILE` also writes every
//!   request's send time and latency as CSV.
//! - `loadgen wake [--seconds S] [--interval-ms I]` sleeps for I ms (default 5) over and over for
//!   S seconds (default 10) and prints how late the sleeps ended, as JSON: how long this machine
//!   takes to wake a sleeping thread, which every hop of a request may pay.
//! - `loadgen stalls --trace FILE.csv --sched FILE.txt --clock-offset-s X [--slow-ms P99]` lines
//!   a traced run's bursts of slow requests up with `perf sched timehist` output recorded beside
//!   it (its clock X seconds behind Unix time) and prints, as JSON, what the cores ran in each.
//!
//! docs/PERFORMANCE.md explains the scenarios and how to reproduce the figures.

mod bare;
mod driver;
mod seed;
mod stalls;
mod tokens;
mod wake;
mod ws;
mod zipf;

use anyhow::Context;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The number given as `name`, else `default`.
fn number<T>(args: &[String], name: &str, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    flag(args, name).map_or(Ok(default), |given| Ok(given.parse()?))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("wake") {
        // Plain sleeps on the main thread: no runtime, nothing else awake in this process.
        let seconds: f64 = number(&args, "--seconds", 10.0)?;
        let interval_ms: u64 = number(&args, "--interval-ms", 5)?;
        let samples = (seconds * 1000.0 / interval_ms as f64).round() as usize;
        let late = wake::lateness(std::time::Duration::from_millis(interval_ms), samples)?;
        let report = serde_json::json!({
            "interval_ms": interval_ms, "samples": samples, "lateness_ms": late,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if args.first().map(String::as_str) == Some("stalls") {
        let read = |name: &str| -> anyhow::Result<String> {
            let path = flag(&args, name).with_context(|| format!("{name} is required"))?;
            std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
        };
        let requests = stalls::parse_trace(&read("--trace")?)?;
        let slices = stalls::parse_timehist(&read("--sched")?);
        anyhow::ensure!(!slices.is_empty(), "no scheduler slices in --sched");
        let offset: f64 = number(&args, "--clock-offset-s", 0.0)?;
        let slow_ms = flag(&args, "--slow-ms").map(|ms| ms.parse()).transpose()?;
        let report = stalls::attribute(&requests, &slices, offset, slow_ms);
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    // The open-loop run drives everything from one thread: with tokio's workers, each request
    // task and hyper's connection task woke a parked worker on another thread, and those
    // wake-ups were charged to the server as latency (its no-op p50 read 0.52 ms against
    // oha's 0.32 in alternated runs; 0.41 on one thread). A run at the rates it is asked for
    // (hundreds to a few thousand a second) uses a small part of one core. `saturate` keeps the
    // workers: it needs more than a core to saturate the no-op.
    let runtime = if args.first().map(String::as_str) == Some("run") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()?;
    runtime.block_on(command(args))
}

async fn command(args: Vec<String>) -> anyhow::Result<()> {
    let database = flag(&args, "--database").unwrap_or_else(|| "bench".to_owned());
    let work_dir = flag(&args, "--work-dir").unwrap_or_else(|| "bench/work".to_owned());
    match args.first().map(String::as_str) {
        Some("seed") => {
            let size = if args.iter().any(|a| a == "--small") {
                seed::Size::SMALL
            } else {
                seed::Size::FULL
            };
            let host = flag(&args, "--host").unwrap_or_else(|| "127.0.0.1:5432".to_owned());
            seed::seed(&host, &database, size, 42, &work_dir).await
        }
        Some("run") => {
            let scenario = flag(&args, "--scenario").context("--scenario is required")?;
            let rate: f64 = flag(&args, "--rate")
                .context("--rate is required")?
                .parse()?;
            let seconds: f64 = number(&args, "--seconds", 30.0)?;
            let targets = targets(&args);
            let keys_dir = flag(&args, "--keys-dir").unwrap_or_else(|| ".dev/keys".to_owned());
            let report = if scenario == "message-ws" {
                ws::run(rate, seconds, &targets, &work_dir, &keys_dir).await?
            } else {
                let trace = flag(&args, "--trace");
                driver::run(
                    &scenario,
                    rate,
                    seconds,
                    &targets,
                    &work_dir,
                    &keys_dir,
                    trace.as_deref(),
                )
                .await?
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.valid {
                std::process::exit(3);
            }
            Ok(())
        }
        Some("saturate") => {
            let scenario = flag(&args, "--scenario").context("--scenario is required")?;
            let concurrency: usize = number(&args, "--concurrency", 16)?;
            let seconds: f64 = number(&args, "--seconds", 10.0)?;
            let keys_dir = flag(&args, "--keys-dir").unwrap_or_else(|| ".dev/keys".to_owned());
            let result = driver::saturate(
                &scenario,
                concurrency,
                seconds,
                &targets(&args),
                &work_dir,
                &keys_dir,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: loadgen seed [--small] [--database bench] | loadgen run --scenario NAME --rate R [--seconds S] [--trace FILE.csv] | loadgen saturate --scenario NAME [--concurrency C] [--seconds S] | loadgen wake [--seconds S] [--interval-ms I] | loadgen stalls --trace FILE.csv --sched FILE.txt --clock-offset-s X [--slow-ms MS]"
            );
            std::process::exit(2);
        }
    }
}

fn targets(args: &[String]) -> driver::Targets {
    driver::Targets {
        posts: flag(args, "--posts").unwrap_or_else(|| "http://127.0.0.1:8082".to_owned()),
        messaging: flag(args, "--messaging").unwrap_or_else(|| "http://127.0.0.1:8083".to_owned()),
        messaging_b: flag(args, "--messaging-b")
            .unwrap_or_else(|| "http://127.0.0.1:8084".to_owned()),
    }
}
