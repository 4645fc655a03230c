//! What the machine's scheduler did while a traced run's slowest requests waited.
//!
//! The half-rate mix's slowest 1 % comes in bursts: requests of every kind sent within a few
//! milliseconds of each other finish together, late. `loadgen stalls` lines each burst up with
//! `perf sched timehist` (the kernel's record of every context switch, taken with
//! `perf sched record -k monotonic` beside the run) and says, for the span of each burst, how
//! long the cores ran kernel threads, other processes and ours, and how long a core sat idle
//! while a task waited to run on it. On a VM a core that the guest thinks idle is a halted
//! virtual CPU: a task woken onto it waits until the host runs that CPU again.

use serde::Serialize;
use std::collections::BTreeMap;

/// One line of `perf sched timehist`: a task (or the idle task) ran on `cpu` from `start` to
/// `end` (seconds on the recording's clock), after waiting `delay` seconds to run once woken.
#[derive(Debug)]
pub struct Slice {
    pub cpu: u32,
    /// The thread's name (`comm`), or `None` for the idle task.
    pub task: Option<String>,
    pub start: f64,
    pub end: f64,
    pub delay: f64,
}

/// The slices of `perf sched timehist` output; lines that are not slices (the header, the
/// summary, lost-event notes) are skipped.
pub fn parse_timehist(text: &str) -> Vec<Slice> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Slice> {
    // "<time> [<cpu>]  <comm>[<tid>/<pid>]  <wait> <sch delay> <run>", all times in ms but the
    // first; a comm may hold spaces ("actix-server wo").
    let line = line.trim();
    let (time, rest) = line.split_once(char::is_whitespace)?;
    let end: f64 = time.parse().ok()?;
    let rest = rest.trim_start().strip_prefix('[')?;
    let (cpu, rest) = rest.split_once(']')?;
    let cpu: u32 = cpu.parse().ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let [name @ .., wait, delay, run] = fields.as_slice() else {
        return None;
    };
    let (run, delay): (f64, f64) = (run.parse().ok()?, delay.parse().ok()?);
    wait.parse::<f64>().ok()?;
    let name = name.join(" ");
    let task = if name == "<idle>" {
        None
    } else {
        Some(name.rsplit_once('[')?.0.to_owned())
    };
    Some(Slice {
        cpu,
        task,
        start: end - run / 1000.0,
        end,
        delay: delay / 1000.0,
    })
}

/// One measured request of a trace (`loadgen run --trace`): when it was meant to leave (Unix
/// milliseconds) and how long it took (microseconds, as the trace has it).
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub sent_unix_ms: f64,
    pub latency_us: f64,
}

impl Request {
    fn answered_unix_ms(&self) -> f64 {
        self.sent_unix_ms + self.latency_us / 1000.0
    }
}

/// Reads a trace written by `loadgen run --trace`.
pub fn parse_trace(text: &str) -> anyhow::Result<Vec<Request>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| anyhow::anyhow!("the trace has no column {name}"))
    };
    let (sent, latency) = (column("sent_unix_ms")?, column("latency_us")?);
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let field = |i: usize| -> anyhow::Result<f64> {
                Ok(fields
                    .get(i)
                    .ok_or_else(|| anyhow::anyhow!("short trace line {line:?}"))?
                    .parse()?)
            };
            Ok(Request {
                sent_unix_ms: field(sent)?,
                latency_us: field(latency)?,
            })
        })
        .collect()
}

/// Who ran on a core: the kernel's own threads, the processes the benchmark measures (the
/// services, PostgreSQL, Redis, the driver), or anything else on the machine.
fn owner(task: &str) -> &'static str {
    const KERNEL: [&str; 14] = [
        "kworker",
        "kdamond",
        "ksoftirqd",
        "kswapd",
        "kcompactd",
        "khugepaged",
        "rcu_",
        "migration/",
        "kthreadd",
        "jbd2",
        "irq/",
        "watchdog",
        "cpuhp",
        "kauditd",
    ];
    const OURS: [&str; 8] = [
        "postgres",
        "redis-server",
        "loadgen",
        "actix-",
        "tokio-rt-worker",
        "users",
        "posts",
        "messaging",
    ];
    if KERNEL.iter().any(|k| task.starts_with(k)) {
        "kernel"
    } else if OURS.iter().any(|o| task.starts_with(o)) {
        "ours"
    } else {
        "other"
    }
}

/// What the scheduler did over one burst's span.
#[derive(Debug, Serialize)]
pub struct Burst {
    /// The burst's 100 ms window, in seconds from the trace's first send.
    pub at_s: f64,
    /// How many of the slowest 1 % were sent in it.
    pub slow: usize,
    /// The span looked at: from 20 ms before the first of them was sent until the last was
    /// answered, in milliseconds.
    pub span_ms: f64,
    /// Milliseconds of core time over the span (both cores), by owner: `kernel`, `ours`,
    /// `other`, and `idle_while_waited`: a core idle while at least one task woken onto it
    /// waited to run.
    pub core_ms: BTreeMap<&'static str, f64>,
    /// The longest single run of a thread that is not ours in the span, and its name.
    pub longest_foreign: Option<(String, f64)>,
    /// Our reading of it: `kernel thread <name>` held a core for 2 ms or more at once, else
    /// `core idle while work waited` for 2 ms or more, else `<name>` of another process that ran
    /// 2 ms or more at once, else `load` (our own processes queued behind each other).
    pub cause: String,
}

/// The bursts of a traced run and what the scheduler did in each.
#[derive(Debug, Serialize)]
pub struct Stalls {
    pub slowest: usize,
    pub in_bursts: usize,
    /// The slowest requests in bursts, by [`Burst::cause`].
    pub by_cause: BTreeMap<String, usize>,
    /// The same core time as a burst's, per 100 ms over the whole run: what a span of that
    /// length holds on average.
    pub core_ms_per_100ms: BTreeMap<&'static str, f64>,
    pub bursts: Vec<Burst>,
}

/// A burst's span begins this long before its first slow request was sent: the stall that
/// delays a request may begin just before it.
const LEAD_S: f64 = 0.02;
/// A single run this long holds every task queued behind it long enough to make a burst.
const HOLDS_MS: f64 = 2.0;

/// Lines `requests` (Unix milliseconds) up with `slices` (seconds on the recording's clock,
/// `offset_s` behind Unix time): the slowest 1 % (those that took `slow_ms` or more; by default
/// the trace's own 99th percentile), grouped in 100 ms windows of their send time, and each
/// window holding five or more is a burst, as in the benchmark's summary.
pub fn attribute(
    requests: &[Request],
    slices: &[Slice],
    offset_s: f64,
    slow_ms: Option<f64>,
) -> Stalls {
    // In microseconds, compared as the benchmark's summary compares them.
    let bound = slow_ms.map(|ms| ms * 1000.0).unwrap_or_else(|| {
        let mut latencies: Vec<f64> = requests.iter().map(|r| r.latency_us).collect();
        latencies.sort_by(f64::total_cmp);
        latencies
            .get(latencies.len() * 99 / 100)
            .copied()
            .unwrap_or(f64::INFINITY)
    });
    let slow: Vec<&Request> = requests.iter().filter(|r| r.latency_us >= bound).collect();
    let mut windows: BTreeMap<i64, Vec<&Request>> = BTreeMap::new();
    for r in &slow {
        windows
            .entry((r.sent_unix_ms / 100.0).floor() as i64)
            .or_default()
            .push(r);
    }
    let (first, last) = extent(requests);
    let to_clock = |unix_ms: f64| unix_ms / 1000.0 - offset_s;
    let whole = core_time(slices, to_clock(first), to_clock(last));
    let per_100ms = 0.1 / (to_clock(last) - to_clock(first)).max(0.1);
    let mut stalls = Stalls {
        slowest: slow.len(),
        in_bursts: 0,
        by_cause: BTreeMap::new(),
        core_ms_per_100ms: whole
            .core_ms
            .iter()
            .map(|(k, v)| (*k, round3(v * per_100ms)))
            .collect(),
        bursts: Vec::new(),
    };
    for (window, members) in windows.into_iter().filter(|(_, m)| m.len() >= 5) {
        let (from, to) = extent(members.iter().copied());
        let span = core_time(slices, to_clock(from) - LEAD_S, to_clock(to));
        let cause = match (&span.longest_kernel, &span.longest_foreign) {
            (Some((name, ms)), _) if *ms >= HOLDS_MS => format!("kernel thread {name}"),
            _ if span.longest_idle_wait_ms >= HOLDS_MS => "core idle while work waited".into(),
            (_, Some((name, ms))) if *ms >= HOLDS_MS => name.clone(),
            _ => "load".into(),
        };
        stalls.in_bursts += members.len();
        *stalls.by_cause.entry(cause.clone()).or_default() += members.len();
        stalls.bursts.push(Burst {
            at_s: round3(window as f64 / 10.0 - first / 1000.0),
            slow: members.len(),
            span_ms: round3((to - from) + LEAD_S * 1000.0),
            core_ms: span.core_ms.iter().map(|(k, v)| (*k, round3(*v))).collect(),
            longest_foreign: span
                .longest_kernel
                .into_iter()
                .chain(span.longest_foreign)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(name, ms)| (name, round3(ms))),
            cause,
        });
    }
    stalls
}

/// When the first of `requests` was sent and the last answered (Unix milliseconds).
fn extent<'a>(requests: impl IntoIterator<Item = &'a Request>) -> (f64, f64) {
    requests
        .into_iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(from, to), r| {
            (from.min(r.sent_unix_ms), to.max(r.answered_unix_ms()))
        })
}

/// Milliseconds of `[from, to]` inside `spans`, a core's idle spans in time order.
fn idle_within(spans: &[(f64, f64)], from: f64, to: f64) -> f64 {
    let first = spans.partition_point(|(_, end)| *end <= from);
    spans[first..]
        .iter()
        .take_while(|(start, _)| *start < to)
        .map(|(a, b)| (b.min(to) - a.max(from)).max(0.0) * 1000.0)
        .sum()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Span {
    core_ms: BTreeMap<&'static str, f64>,
    longest_kernel: Option<(String, f64)>,
    longest_foreign: Option<(String, f64)>,
    /// The longest time a woken task waited on a core that sat idle all that while.
    longest_idle_wait_ms: f64,
}

/// The core time of `[from, to]` by owner, and the longest runs of threads not ours.
fn core_time(slices: &[Slice], from: f64, to: f64) -> Span {
    let overlap = |a: f64, b: f64| (b.min(to) - a.max(from)).max(0.0) * 1000.0;
    let mut span = Span {
        core_ms: BTreeMap::new(),
        longest_kernel: None,
        longest_foreign: None,
        longest_idle_wait_ms: 0.0,
    };
    let mut idle: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    for s in slices
        .iter()
        .filter(|s| s.end >= from - 1.0 && s.start <= to)
    {
        match &s.task {
            None => idle.entry(s.cpu).or_default().push((s.start, s.end)),
            Some(name) => {
                let ms = overlap(s.start, s.end);
                let owner = owner(name);
                *span.core_ms.entry(owner).or_default() += ms;
                let run = (s.end - s.start) * 1000.0;
                let longest = match owner {
                    "kernel" => &mut span.longest_kernel,
                    "other" => &mut span.longest_foreign,
                    _ => continue,
                };
                if ms > 0.0 && longest.as_ref().is_none_or(|(_, l)| run > *l) {
                    *longest = Some((name.clone(), run));
                }
            }
        }
    }
    // A task that waited `delay` before it ran waited from `start - delay`: the part of that
    // wait its core spent idle is time the core could have run it and did not. Counted once
    // however many tasks waited at the time.
    let mut waits: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    for s in slices.iter().filter(|s| s.task.is_some() && s.delay > 0.0) {
        let (waited_from, waited_to) = (s.start - s.delay, s.start);
        if waited_to < from || waited_from > to {
            continue;
        }
        let spans = idle.get(&s.cpu).map(Vec::as_slice).unwrap_or_default();
        span.longest_idle_wait_ms =
            span.longest_idle_wait_ms
                .max(idle_within(spans, waited_from, waited_to));
        waits
            .entry(s.cpu)
            .or_default()
            .push((waited_from.max(from), waited_to.min(to)));
    }
    let mut idle_while_waited = 0.0;
    for (cpu, mut intervals) in waits {
        intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut merged: Vec<(f64, f64)> = Vec::new();
        for (a, b) in intervals {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let spans = idle.get(&cpu).map(Vec::as_slice).unwrap_or_default();
        idle_while_waited += merged
            .iter()
            .map(|(a, b)| idle_within(spans, *a, *b))
            .sum::<f64>();
    }
    span.core_ms.insert("idle_while_waited", idle_while_waited);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEHIST: &str =
        "           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
    100.012000 [0000]  <idle>                              0.000      0.000     10.000
    100.013000 [0001]  kdamond.0[83]                     500.000      0.200      4.000
    100.014000 [0000]  actix-server wo[7/5]                9.000      3.500      0.500
    100.020000 [0001]  1_scheduler[3018/3000]              1.000      0.010      0.010
";

    #[test]
    fn a_timehist_line_gives_the_task_its_core_and_when_it_ran() {
        let slices = parse_timehist(TIMEHIST);
        assert_eq!(slices.len(), 4, "the header lines are skipped");
        let worker = &slices[2];
        assert_eq!(worker.cpu, 0);
        assert_eq!(worker.task.as_deref(), Some("actix-server wo"));
        assert!((worker.start - 100.0135).abs() < 1e-9);
        assert!((worker.delay - 0.0035).abs() < 1e-9);
        assert_eq!(slices[0].task, None, "the idle task");
        assert!(parse_line("lost 3 events").is_none());
    }

    fn burst_of_requests(at_unix_ms: f64, n: usize, latency_us: f64) -> Vec<Request> {
        (0..n)
            .map(|i| Request {
                sent_unix_ms: at_unix_ms + i as f64 * 0.5,
                latency_us,
            })
            .collect()
    }

    /// 1,000 quick requests, one every ms from Unix time 999.5 s (clock time 99.5 s with an
    /// offset of 900 s), with eleven slow ones (8 ms) sent from `slow_at` (Unix ms) on.
    fn run_with_burst_at(slow_at: f64) -> Vec<Request> {
        let mut requests: Vec<Request> = (0..1000)
            .map(|i| Request {
                sent_unix_ms: 1_000_000.0 - 500.0 + i as f64,
                latency_us: 500.0,
            })
            .collect();
        requests.extend(burst_of_requests(slow_at, 11, 8000.0));
        requests
    }

    #[test]
    fn a_burst_under_a_long_kernel_thread_run_is_put_down_to_it() {
        // The slow requests leave at clock time 100.010 s, while kdamond holds core 1.
        let requests = run_with_burst_at(1_000_010.0);
        let stalls = attribute(&requests, &parse_timehist(TIMEHIST), 900.0, None);
        assert_eq!(stalls.in_bursts, 11);
        assert_eq!(stalls.bursts.len(), 1);
        let burst = &stalls.bursts[0];
        assert_eq!(burst.cause, "kernel thread kdamond.0");
        assert_eq!(burst.longest_foreign, Some(("kdamond.0".to_owned(), 4.0)));
        assert!(burst.core_ms["kernel"] > 3.9);
        // The worker waited 3.5 ms on core 0, idle for the first 2 ms of it.
        assert!(
            (burst.core_ms["idle_while_waited"] - 2.0).abs() < 1e-6,
            "{burst:?}"
        );
    }

    #[test]
    fn a_burst_where_a_core_sat_idle_while_work_waited_says_so() {
        let timehist = "    100.013000 [0000]  <idle>           0.000      0.000     10.000
    100.014000 [0000]  postgres[9]      9.000      3.500      0.500
    100.020000 [0001]  posts[5]         0.000      0.010      1.000
";
        let requests = run_with_burst_at(1_000_010.0);
        let stalls = attribute(&requests, &parse_timehist(timehist), 900.0, None);
        assert_eq!(stalls.bursts[0].cause, "core idle while work waited");
        assert_eq!(stalls.by_cause["core idle while work waited"], 11);
    }

    #[test]
    fn a_burst_with_nothing_but_our_own_work_is_load() {
        let timehist = "    100.014000 [0000]  postgres[9]      9.000      0.500      4.500
    100.020000 [0001]  posts[5]         0.000      0.010      6.000
";
        let requests = run_with_burst_at(1_000_010.0);
        let stalls = attribute(&requests, &parse_timehist(timehist), 900.0, None);
        assert_eq!(stalls.bursts[0].cause, "load");
        assert!(stalls.bursts[0].longest_foreign.is_none());
    }

    #[test]
    fn slow_requests_spread_over_the_run_make_no_burst() {
        let mut requests = run_with_burst_at(1_000_010.0);
        requests.truncate(1000);
        for i in 0..11 {
            requests[i * 90].latency_us = 9000.0;
        }
        let stalls = attribute(&requests, &parse_timehist(TIMEHIST), 900.0, None);
        assert_eq!(stalls.slowest, 11);
        assert_eq!(stalls.in_bursts, 0);
        assert!(stalls.bursts.is_empty());
    }

    #[test]
    fn a_bound_given_decides_which_requests_are_the_slowest() {
        let requests = run_with_burst_at(1_000_010.0);
        let stalls = attribute(&requests, &parse_timehist(TIMEHIST), 900.0, Some(9.0));
        assert_eq!(stalls.slowest, 0, "none took 9 ms");
        let stalls = attribute(&requests, &parse_timehist(TIMEHIST), 900.0, Some(0.5));
        assert_eq!(stalls.slowest, requests.len());
    }

    #[test]
    fn a_trace_is_read_by_its_header() {
        let trace = "i,kind,sent_unix_ms,latency_us,ok\n3,feed,1000.5,1500,true\n";
        let requests = parse_trace(trace).unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].sent_unix_ms, 1000.5);
        assert_eq!(requests[0].latency_us, 1500.0);
        assert!(parse_trace("i,kind\n1,feed\n").is_err());
    }
}
