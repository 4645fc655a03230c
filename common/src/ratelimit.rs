//! Rate limits shared by every replica through Redis, with a per-process fallback.
//!
//! A [`Quota`] allows `limit` requests per `window` to one subject (an account, an IP, an
//! account name being logged into). The count lives in Redis as a fixed window that starts
//! with the subject's first request (`INCR`, then `PEXPIRE … NX`, in one transaction), so every
//! replica sees the same count. When Redis fails or is too slow, the same window is kept in
//! this process instead: each replica then allows up to `limit` on its own, which is looser by
//! the replica count but neither fails open nor refuses everyone. Each fallback is counted in
//! `rate_limit_fallback_total{quota}`.
//!
//! The two quotas every request counts against (per account and per address) do not wait for
//! Redis on every request: a subject's first request in a window is counted there, later ones
//! are counted in this process while far from the limit and added to Redis by a flush every
//! `RATE_LIMIT_FLUSH_MS` ([`RateLimiter::admit`], docs/adr/0024).
//!
//! A refused request is a 429 problem with `Retry-After` and the IETF draft's `RateLimit` and
//! `RateLimit-Policy` headers. See docs/adr/0012-rate-limits.md.

use crate::config::{ConfigError, Env};
use crate::problem::Problem;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, ResponseError, web};
use prometheus::{IntCounterVec, Opts};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod tallies;
use tallies::{Admission, Tallies};

/// At most `limit` requests per `window` for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed in one window.
    pub limit: u32,
    /// The window's length.
    pub window: Duration,
}

impl Quota {
    /// `limit` requests per `seconds`.
    pub const fn per_seconds(limit: u32, seconds: u64) -> Self {
        Self {
            limit,
            window: Duration::from_secs(seconds),
        }
    }
}

/// Parses `LIMIT/SECONDS`, e.g. `300/300` for 300 requests per five minutes.
impl FromStr for Quota {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (limit, seconds) = s
            .split_once('/')
            .ok_or_else(|| "expected LIMIT/SECONDS, e.g. 300/300".to_owned())?;
        let limit: u32 = limit
            .trim()
            .parse()
            .map_err(|e| format!("limit {limit:?}: {e}"))?;
        let seconds: u64 = seconds
            .trim()
            .parse()
            .map_err(|e| format!("seconds {seconds:?}: {e}"))?;
        if limit == 0 || seconds == 0 {
            return Err("limit and seconds must both be at least 1".to_owned());
        }
        Ok(Self::per_seconds(limit, seconds))
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, self.window.as_secs())
    }
}

/// The limits every service applies to every request.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// `RATE_LIMIT_ACCOUNT` (default `300/300`, Mastodon's): requests per signed-in account.
    pub account: Quota,
    /// `RATE_LIMIT_ANONYMOUS` (default `300/300`): requests without credentials, per IP.
    pub anonymous: Quota,
    /// `TRUSTED_PROXY_HOPS` (default 0): how many proxies in front of the service append to
    /// `X-Forwarded-For`. With 0 the peer address is the client's; with n the n-th address from
    /// the right is. Trusting more hops than there are lets clients choose their own IP.
    pub trusted_proxy_hops: usize,
    /// `RATE_LIMIT_FLUSH_MS` (default 100): how often the per-request counts kept in this
    /// process are added to Redis, which answers with what every replica counted.
    pub flush_every: Duration,
}

impl RateLimitSettings {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            account: env.parse("RATE_LIMIT_ACCOUNT", Quota::per_seconds(300, 300))?,
            anonymous: env.parse("RATE_LIMIT_ANONYMOUS", Quota::per_seconds(300, 300))?,
            trusted_proxy_hops: env.parse("TRUSTED_PROXY_HOPS", 0)?,
            flush_every: env.millis("RATE_LIMIT_FLUSH_MS", 100)?,
        })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The quota's limit.
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Seconds until the window ends (at least 1).
    pub reset_secs: u64,
}

impl Decision {
    /// The decision for the `count`-th request of a window that ends in `ttl`.
    fn of(quota: Quota, count: u64, ttl: Duration) -> Self {
        Self {
            allowed: count <= u64::from(quota.limit),
            limit: quota.limit,
            remaining: u32::try_from(u64::from(quota.limit).saturating_sub(count)).unwrap_or(0),
            reset_secs: ttl.as_secs().max(1),
        }
    }
}

/// The values of the keys a check read, in order (`None` for a missing key).
type Values = Vec<Option<Vec<u8>>>;

/// Counts requests against quotas; registered once per service as `web::Data<RateLimiter>`.
pub struct RateLimiter {
    redis: crate::redis::Pool,
    timeout: Duration,
    prefix: String,
    settings: RateLimitSettings,
    local: Mutex<HashMap<String, LocalWindow>>,
    /// The per-request quotas' counts between flushes; `None` outside a Tokio runtime, where
    /// no flush could run and every request is counted in Redis.
    tallies: Option<Arc<Tallies>>,
    fallbacks: IntCounterVec,
    refused: IntCounterVec,
}

#[derive(Debug, Clone, Copy)]
struct LocalWindow {
    count: u32,
    ends: Instant,
}

/// Above this many subjects, expired local windows are swept before a new one is added.
const LOCAL_SWEEP_AT: usize = 10_000;

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter counting in `redis` under `key_prefix`, registering its counters in `metrics`.
    /// Inside a Tokio runtime it starts the flush of [`admit`](Self::admit)'s counts, which ends
    /// with the limiter.
    pub fn new(
        redis: crate::redis::Pool,
        timeout: Duration,
        key_prefix: &str,
        settings: RateLimitSettings,
        metrics: &crate::metrics::Metrics,
    ) -> anyhow::Result<Self> {
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "rate_limit_fallback_total",
                "Rate-limit checks counted in this process because Redis failed",
            ),
            &["quota"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new("rate_limited_total", "Requests refused with 429"),
            &["quota"],
        )?;
        metrics.register(Box::new(fallbacks.clone()))?;
        metrics.register(Box::new(refused.clone()))?;
        let tallies = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let tallies = Arc::new(Tallies::default());
            runtime.spawn(flush_every(
                settings.flush_every,
                Arc::downgrade(&tallies),
                tallies.work(),
                redis.clone(),
                timeout,
            ));
            tallies
        });
        Ok(Self {
            redis,
            timeout,
            prefix: format!("{key_prefix}rl:"),
            settings,
            local: Mutex::new(HashMap::new()),
            tallies,
            fallbacks,
            refused,
        })
    }

    /// The limits applied to every request.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Counts one request of `subject` against `quota` (named `name` in headers and metrics).
    pub async fn check(&self, name: &str, quota: Quota, subject: &str) -> Decision {
        self.check_and_read(name, quota, subject, &[]).await.0
    }

    /// Like [`check`](Self::check), and reads `keys` in the same round trip: their values in
    /// order (`None` for a missing key), or `None` in all when Redis failed and the count was
    /// kept in this process.
    pub async fn check_and_read(
        &self,
        name: &str,
        quota: Quota,
        subject: &str,
        keys: &[String],
    ) -> (Decision, Option<Values>) {
        let key = self.key(name, subject);
        let (count, ttl, values) = match self.count_in_redis(&key, quota, 1, keys).await {
            Ok(counted) => counted,
            Err(e) => {
                self.fell_back(name, &e);
                let (count, ttl) = self.count_locally(key, quota);
                (count, ttl, None)
            }
        };
        (Decision::of(quota, count, ttl), values)
    }

    /// The Redis key of `subject`'s count under the quota `name`, whichever way it is counted.
    fn key(&self, name: &str, subject: &str) -> String {
        format!("{}{name}:{subject}", self.prefix)
    }

    fn fell_back(&self, name: &str, error: &anyhow::Error) {
        tracing::warn!(error = %error, quota = name, "rate limit counted in-process");
        self.fallbacks.with_label_values(&[name]).inc();
    }

    /// Counts one request of `subject` against a quota every request counts against and refuses
    /// with the 429 problem. Unlike a check, a request of a subject this process has counted in
    /// this window, far from the limit, is counted here and added to Redis by the next flush: it
    /// does not wait for Redis. `keys` are read only when the count goes to Redis, in its round
    /// trip (as [`check_and_read`](Self::check_and_read) reads them); otherwise the answer is
    /// `None` and the handler reads what it needs itself, where it can overlap the read with
    /// its own work (docs/adr/0031-feed-reads-while-confirming.md).
    pub async fn admit(
        &self,
        name: &str,
        quota: Quota,
        subject: &str,
        keys: &[String],
    ) -> Result<Option<Values>, Problem> {
        let Some(tallies) = &self.tallies else {
            return self.enforce_and_read(name, quota, subject, keys).await;
        };
        let key = self.key(name, subject);
        let (decision, values) = match tallies.admit(&key, quota, Instant::now()) {
            Admission::Counted(decision) => {
                if tallies.failing() {
                    self.fallbacks.with_label_values(&[name]).inc();
                }
                (decision, None)
            }
            Admission::Ask { generation, taken } => {
                let answer = self.count_in_redis(&key, quota, taken + 1, keys).await;
                let (counted, values) = match answer {
                    Ok((count, ttl, values)) => (Ok((count, ttl)), values),
                    Err(e) => {
                        self.fell_back(name, &e);
                        (Err(()), None)
                    }
                };
                let settled =
                    tallies.settle(&key, quota, (generation, taken), counted, Instant::now());
                let decision = settled.unwrap_or_else(|| {
                    let (count, ttl) = self.count_locally(key, quota);
                    Decision::of(quota, count, ttl)
                });
                (decision, values)
            }
        };
        if decision.allowed {
            return Ok(values);
        }
        self.refused.with_label_values(&[name]).inc();
        Err(too_many_requests(name, quota, &decision))
    }

    /// Like [`check`](Self::check), but a refusal is the 429 problem to answer with.
    pub async fn enforce(&self, name: &str, quota: Quota, subject: &str) -> Result<(), Problem> {
        self.enforce_and_read(name, quota, subject, &[])
            .await
            .map(|_| ())
    }

    /// Like [`check_and_read`](Self::check_and_read), but a refusal is the 429 problem.
    pub async fn enforce_and_read(
        &self,
        name: &str,
        quota: Quota,
        subject: &str,
        keys: &[String],
    ) -> Result<Option<Values>, Problem> {
        let (decision, values) = self.check_and_read(name, quota, subject, keys).await;
        if decision.allowed {
            return Ok(values);
        }
        self.refused.with_label_values(&[name]).inc();
        Err(too_many_requests(name, quota, &decision))
    }

    /// The count and the window's remaining time after adding `by` requests, and the values of
    /// `keys` (`None` when there are none to read).
    async fn count_in_redis(
        &self,
        key: &str,
        quota: Quota,
        by: u64,
        keys: &[String],
    ) -> anyhow::Result<(u64, Duration, Option<Values>)> {
        let window_ms = u64::try_from(quota.window.as_millis()).unwrap_or(u64::MAX);
        crate::redis::with_timeout(self.timeout, async {
            let mut conn = self.redis.get().await?;
            let mut pipe = deadpool_redis::redis::pipe();
            pipe.atomic()
                .incr(key, by)
                .cmd("PEXPIRE")
                .arg(key)
                .arg(window_ms)
                .arg("NX")
                .ignore()
                .cmd("PTTL")
                .arg(key);
            let (count, ttl_ms, values) = if keys.is_empty() {
                let (count, ttl_ms): (u64, i64) = pipe.query_async(&mut *conn).await?;
                (count, ttl_ms, None)
            } else {
                pipe.cmd("MGET").arg(keys);
                let (count, ttl_ms, values): (u64, i64, Values) =
                    pipe.query_async(&mut *conn).await?;
                anyhow::ensure!(
                    values.len() == keys.len(),
                    "MGET answered {} values",
                    values.len()
                );
                (count, ttl_ms, Some(values))
            };
            let ttl = u64::try_from(ttl_ms).unwrap_or(window_ms);
            anyhow::Ok((count, Duration::from_millis(ttl), values))
        })
        .await
    }

    fn count_locally(&self, key: String, quota: Quota) -> (u64, Duration) {
        let now = Instant::now();
        let mut windows = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= LOCAL_SWEEP_AT {
            windows.retain(|_, w| w.ends > now);
        }
        let window = windows.entry(key).or_insert(LocalWindow {
            count: 0,
            ends: now + quota.window,
        });
        if window.ends <= now {
            *window = LocalWindow {
                count: 0,
                ends: now + quota.window,
            };
        }
        window.count = window.count.saturating_add(1);
        (u64::from(window.count), window.ends - now)
    }
}

/// Adds the counts [`RateLimiter::admit`] kept in this process to Redis every `period`, until
/// the limiter is dropped. A failed flush keeps its counts for the next one. After a flush that
/// found nothing to send it waits for the next count: an idle process does not wake ten times a
/// second for nothing (on the VMs we measure on, each wake-up costs about 0.1 ms of CPU).
async fn flush_every(
    period: Duration,
    tallies: std::sync::Weak<Tallies>,
    work: Arc<tokio::sync::Notify>,
    redis: crate::redis::Pool,
    timeout: Duration,
) {
    // The first tick is a period away, not at once: an interval's immediate first tick could
    // come after the process's first counts (it waits for the runtime's timer to turn) and send
    // them at once, where every later count waits a period.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(tallies) = tallies.upgrade() else {
            return;
        };
        let sent = tallies.take_pending(Instant::now());
        if sent.is_empty() {
            drop(tallies);
            work.notified().await;
            // The counts that woke it go one period later, with whatever follows them.
            ticks.reset();
            continue;
        }
        for chunk in sent.chunks(tallies::FLUSH_CHUNK) {
            let added = crate::redis::with_timeout(timeout, async {
                let mut conn = redis.get().await?;
                let mut pipe = deadpool_redis::redis::pipe();
                pipe.atomic();
                for s in chunk {
                    let window_ms = u64::try_from(s.quota.window.as_millis()).unwrap_or(u64::MAX);
                    pipe.incr(&s.key, s.count)
                        .cmd("PEXPIRE")
                        .arg(&s.key)
                        .arg(window_ms)
                        .arg("NX")
                        .ignore();
                }
                let counts: Vec<u64> = pipe.query_async(&mut *conn).await?;
                anyhow::ensure!(
                    counts.len() == chunk.len(),
                    "INCRBY answered {} counts",
                    counts.len()
                );
                anyhow::Ok(counts)
            })
            .await;
            match added {
                Ok(counts) => tallies.settle_sent(chunk, Ok(&counts)),
                Err(e) => {
                    tracing::warn!(error = %e, subjects = chunk.len(), "request counts kept in-process until the next flush");
                    tallies.settle_sent(chunk, Err(()));
                }
            }
        }
    }
}

/// The 429 answer: `Retry-After`, and the IETF draft's `RateLimit-Policy` (the quota) and
/// `RateLimit` (what is left of it, and when it resets).
pub fn too_many_requests(name: &str, quota: Quota, decision: &Decision) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests",
    )
    .with_detail(format!(
        "at most {} requests per {} seconds ({name}); retry in {} seconds",
        quota.limit,
        quota.window.as_secs(),
        decision.reset_secs
    ))
    .with_retry_after(decision.reset_secs)
    .with_header(
        "ratelimit-policy",
        format!("\"{name}\";q={};w={}", quota.limit, quota.window.as_secs()),
    )
    .with_header(
        "ratelimit",
        format!(
            "\"{name}\";r={};t={}",
            decision.remaining, decision.reset_secs
        ),
    )
}

/// The client's IP: the peer, or the address `TRUSTED_PROXY_HOPS` proxies put in
/// `X-Forwarded-For`.
pub fn client_ip(req: &HttpRequest, trusted_proxy_hops: usize) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip());
    if trusted_proxy_hops == 0 {
        return peer;
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .len()
        .checked_sub(trusted_proxy_hops)
        .and_then(|i| forwarded.get(i).copied())
        .or(peer)
}

/// The IP of a request as a rate-limit subject (`unknown` when there is none, as in tests
/// that call handlers without a socket).
pub fn ip_subject(req: &HttpRequest, limiter: &RateLimiter) -> String {
    client_ip(req, limiter.settings.trusted_proxy_hops)
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// The Redis keys a route reads first, for a request with a verified user: given the path and
/// the user, fetched in the round trip of the request's count when that goes to Redis, and
/// handed to the handler as [`Prefetched`] (docs/adr/0019-followees-in-process.md). A request
/// counted in the process prefetches nothing (docs/adr/0031-feed-reads-while-confirming.md).
/// Registered as app data.
#[derive(Clone)]
pub struct Prefetch(Arc<PrefetchFn>);

type PrefetchFn = dyn Fn(&str, Uuid) -> Vec<String> + Send + Sync;

impl Prefetch {
    /// Prefetches what `keys` names for each request (nothing when it returns no keys).
    pub fn new(keys: impl Fn(&str, Uuid) -> Vec<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(keys))
    }
}

impl fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prefetch")
    }
}

/// What the rate-limit middleware read for a request's handler (see [`Prefetch`]), in the
/// request's extensions. Absent when nothing was asked, the count stayed in the process, or
/// Redis failed.
#[derive(Debug, Clone, Default)]
pub struct Prefetched(Vec<(String, Option<Vec<u8>>)>);

impl Prefetched {
    /// `Some` with the value read (`None` for a missing key) when `key` was prefetched.
    pub fn get(&self, key: &str) -> Option<Option<&[u8]>> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_deref())
    }
}

/// Middleware: every request counts against a quota before it reaches a handler. A request
/// with a valid user token counts against `RATE_LIMIT_ACCOUNT` for its account (and the verified
/// user is kept in the request's extensions, so the extractors of [`crate::auth`] do not verify
/// the token twice); any other request counts against `RATE_LIMIT_ANONYMOUS` for its IP, bad
/// tokens included. Health checks, metrics and `/internal/` calls between services (which
/// accept only service tokens) are not limited. A user's count also reads the keys the app's
/// [`Prefetch`] names for the request.
pub async fn limit_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = req.path();
    let exempt = crate::http::is_operational(path) || path.starts_with("/internal/");
    let limiter = req.app_data::<web::Data<RateLimiter>>().cloned();
    let verifier = req
        .app_data::<web::Data<crate::auth::TokenVerifier>>()
        .cloned();
    if let (false, Some(limiter), Some(verifier)) = (exempt, limiter, verifier) {
        let user = match crate::auth::bearer_token(req.request()) {
            Ok(Some(token)) => crate::auth::authenticate_user(&verifier, token).await.ok(),
            _ => None,
        };
        let outcome = match &user {
            Some(user) => {
                let keys = req
                    .app_data::<web::Data<Prefetch>>()
                    .map(|prefetch| (prefetch.0)(req.path(), user.id))
                    .unwrap_or_default();
                let quota = limiter.settings.account;
                limiter
                    .admit("account", quota, &user.id.to_string(), &keys)
                    .await
                    .map(|values| {
                        values.map(|values| Prefetched(keys.into_iter().zip(values).collect()))
                    })
            }
            None => {
                let subject = ip_subject(req.request(), &limiter);
                let quota = limiter.settings.anonymous;
                limiter
                    .admit("anonymous", quota, &subject, &[])
                    .await
                    .map(|_| None)
            }
        };
        let prefetched = match outcome {
            Ok(prefetched) => prefetched,
            Err(problem) => {
                let response = problem.error_response();
                return Ok(req.into_response(response).map_into_right_body());
            }
        };
        if let Some(user) = user {
            req.extensions_mut().insert(user);
        }
        if let Some(prefetched) = prefetched {
            req.extensions_mut().insert(prefetched);
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_from_limit_and_seconds() {
        assert_eq!("300/300".parse(), Ok(Quota::per_seconds(300, 300)));
        assert_eq!(" 5 / 1800 ".parse(), Ok(Quota::per_seconds(5, 1800)));
        assert!("300".parse::<Quota>().is_err());
        assert!("0/60".parse::<Quota>().is_err());
        assert!("10/0".parse::<Quota>().is_err());
        assert!("ten/60".parse::<Quota>().is_err());
    }

    #[test]
    fn the_forwarded_address_is_trusted_only_as_far_as_configured() {
        let req = actix_web::test::TestRequest::default()
            .peer_addr("10.0.0.9:4000".parse().unwrap())
            .insert_header(("x-forwarded-for", "6.6.6.6, 203.0.113.7"))
            .to_http_request();
        assert_eq!(client_ip(&req, 0), "10.0.0.9".parse().ok());
        assert_eq!(client_ip(&req, 1), "203.0.113.7".parse().ok());
        assert_eq!(client_ip(&req, 2), "6.6.6.6".parse().ok());
        // More hops than addresses: the header is not trusted at all.
        assert_eq!(client_ip(&req, 3), "10.0.0.9".parse().ok());
    }
}
