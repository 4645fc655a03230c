//! The typed client other services use to ask the users service what they need to know about
//! users: followee ids (with a conditional request, so a cached list costs a 304) and author
//! profiles in batches.
//!
//! One `reqwest::Client` built once, with connect and request timeouts; the request id and trace
//! context are forwarded; reads are retried once on a connection failure and never otherwise, so
//! a slow users service is not hammered, and a circuit breaker stops calling it for a while after
//! repeated failures (callers then answer from cache or 503 at once). A process has a bounded
//! number of calls in flight: beyond it a call is refused at once in the same way, so that when
//! a cheaper source (Redis) fails under load, the fallback to users cannot multiply the load
//! (docs/adr/0030-shedding-load-and-bounding-the-fallbacks.md). Answers are untrusted: strict
//! types and a size cap.

use crate::config::{ConfigError, Env};
use crate::telemetry::{CallContext, REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// Largest answer accepted from the users service (10,000 followee ids are ~400 KB).
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// Most ids one batch profile request may name (the users service's limit).
const BATCH: usize = 100;

/// Where the users service is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct UsersClientSettings {
    /// `USERS_BASE_URL` (default `http://127.0.0.1:8081`).
    pub base_url: String,
    /// `USERS_CONNECT_TIMEOUT_MS` (default 500).
    pub connect_timeout: Duration,
    /// `USERS_TIMEOUT_MS` (default 2000): bound on a whole request, retries included.
    pub timeout: Duration,
    /// `USERS_BREAKER_FAILURES` (default 5): consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// `USERS_BREAKER_COOLDOWN_MS` (default 5000): how long an open circuit refuses calls before
    /// one probe is let through.
    pub breaker_cooldown: Duration,
    /// `USERS_MAX_IN_FLIGHT` (default 64): calls one process may have waiting on users at once;
    /// more are refused at once, as an open circuit refuses them.
    pub max_in_flight: usize,
}

impl UsersClientSettings {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let base_url = env.string("USERS_BASE_URL", "http://127.0.0.1:8081");
        reqwest::Url::parse(&base_url)
            .map_err(|e| env.invalid("USERS_BASE_URL", format!("not a URL: {e}")))?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            connect_timeout: env.millis("USERS_CONNECT_TIMEOUT_MS", 500)?,
            timeout: env.millis("USERS_TIMEOUT_MS", 2000)?,
            breaker_failures: env.parse("USERS_BREAKER_FAILURES", 5)?,
            breaker_cooldown: env.millis("USERS_BREAKER_COOLDOWN_MS", 5000)?,
            max_in_flight: env.bound("USERS_MAX_IN_FLIGHT", 64)?,
        })
    }
}

/// What other services show of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserSummary {
    /// The account id.
    pub id: Uuid,
    /// The username.
    pub username: String,
    /// The display name.
    pub display_name: String,
}

/// The answer to a conditional followee-id request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followees {
    /// The cached copy with the given ETag is current.
    Unchanged,
    /// The current list and its ETag.
    Current {
        /// Opaque version of the list.
        etag: String,
        /// Every followee id.
        ids: Vec<Uuid>,
    },
}

/// Asks whether a user may message others.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactabilityRequest {
    /// The accounts to message, at most 100.
    pub user_ids: Vec<Uuid>,
}

/// A security event another service reports to the users service's audit log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditReport {
    /// The reporter's own id for the event, unique per event: a report delivered twice is
    /// recorded once.
    pub source_id: String,
    /// What happened (`moderation.post_deleted`).
    pub event: String,
    /// When it happened.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// Who acted.
    pub actor_id: Option<Uuid>,
    /// Whom it concerned.
    pub subject_id: Option<Uuid>,
    /// The acting client's address.
    pub ip: Option<String>,
    /// Its user agent.
    pub user_agent: Option<String>,
    /// The request id of the request that did it.
    pub request_id: Option<String>,
    /// Event-specific facts.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Whether a user may message others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contactability {
    /// The asking user is suspended.
    pub suspended: bool,
    /// Ids that name no account.
    pub unknown: Vec<Uuid>,
    /// Accounts that do not accept messages from the asking user: suspended, or a block either
    /// way (deliberately not told apart).
    pub unavailable: Vec<Uuid>,
    /// The contact version (ADR 0022) of the asking user and of each account found, as read
    /// with the answer: the answer holds while none of them changes. Empty from a users
    /// service that predates it.
    #[serde(default)]
    pub versions: std::collections::HashMap<Uuid, i64>,
}

/// A service's client credentials, exchanged for short-lived service tokens.
#[derive(Debug, Clone)]
pub struct ServiceCredentials {
    /// `SERVICE_CLIENT_ID`.
    pub client_id: String,
    /// `SERVICE_CLIENT_SECRET`.
    pub client_secret: crate::config::Secret,
}

#[derive(Deserialize)]
struct ServiceTokenAnswer {
    access_token: String,
    expires_in: u64,
}

/// Why a call to the users service failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersClientError {
    /// Unreachable, too slow, or failing (5xx): the caller should answer 503.
    #[error("users service unavailable: {0}")]
    Unavailable(String),
    /// The user does not exist.
    #[error("user not found")]
    NotFound,
    /// The answer did not have the expected shape.
    #[error("unexpected answer from the users service: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct IdsAnswer {
    ids: Vec<Uuid>,
}

#[derive(Deserialize)]
struct ProfilesAnswer {
    items: Vec<UserSummary>,
}

/// A circuit breaker: closed, it lets calls through and counts consecutive failures; at the
/// threshold it opens and refuses calls for the cool-down; then it lets one probe through
/// (half-open): a success closes it, a failure opens it again.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: std::sync::Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: std::time::Instant,
    },
    /// A probe went out at this time; another may go if it never reports back.
    HalfOpen {
        since: std::time::Instant,
    },
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: std::sync::Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call may go out now.
    pub fn admit(&self) -> bool {
        let now = std::time::Instant::now();
        let mut state = self.state();
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } | BreakerState::HalfOpen { since: until }
                if now < until =>
            {
                false
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                *state = BreakerState::HalfOpen {
                    since: now + self.cooldown,
                };
                true
            }
        }
    }

    /// Records how an admitted call went.
    pub fn record(&self, succeeded: bool) {
        let mut state = self.state();
        *state = match (*state, succeeded) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => {
                tracing::warn!(cooldown = ?self.cooldown, "users service failing: circuit open");
                BreakerState::Open {
                    until: std::time::Instant::now() + self.cooldown,
                }
            }
        };
    }

    /// Whether calls are being refused now.
    pub fn is_open(&self) -> bool {
        !matches!(*self.state(), BreakerState::Closed { .. })
    }
}

/// A client of the users service.
#[derive(Debug, Clone)]
pub struct UsersClient {
    http: reqwest::Client,
    base_url: String,
    credentials: Option<ServiceCredentials>,
    /// The current service token and when to stop using it.
    service_token: std::sync::Arc<tokio::sync::Mutex<Option<(String, std::time::Instant)>>>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    breaker: std::sync::Arc<Breaker>,
    /// One permit per call that may be in flight (`max_in_flight`).
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

impl UsersClient {
    /// Builds the client once; clone it freely (it shares one connection pool).
    pub fn new(settings: &UsersClientSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            base_url: settings.base_url.clone(),
            credentials: None,
            service_token: Default::default(),
            metrics: None,
            breaker: std::sync::Arc::new(Breaker::new(
                settings.breaker_failures,
                settings.breaker_cooldown,
            )),
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight)),
        })
    }

    /// The same client, recording call latency and errors in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The breaker guarding calls (tests look at it).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Makes `call` unless as many calls as allowed are in flight or the circuit is open, and
    /// records how it went.
    async fn guarded<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = Result<T, UsersClientError>>,
    ) -> Result<T, UsersClientError> {
        let started = std::time::Instant::now();
        // Taken before the breaker is asked: a half-open breaker admits one probe, which must
        // then be made and recorded. A refusal here says nothing about users' health, so the
        // breaker does not count it.
        let Ok(_permit) = self.in_flight.try_acquire() else {
            if let Some(metrics) = &self.metrics {
                metrics.observe_upstream("users", operation, started.elapsed(), Some("saturated"));
            }
            return Err(UsersClientError::Unavailable(
                "too many calls to the users service in flight".into(),
            ));
        };
        if !self.breaker.admit() {
            if let Some(metrics) = &self.metrics {
                metrics.observe_upstream(
                    "users",
                    operation,
                    started.elapsed(),
                    Some("circuit_open"),
                );
            }
            return Err(UsersClientError::Unavailable(
                "circuit open: the users service failed repeatedly".into(),
            ));
        }
        let result = call.await;
        let kind = match &result {
            Ok(_) | Err(UsersClientError::NotFound) => None,
            Err(UsersClientError::Unavailable(_)) => Some("unavailable"),
            Err(UsersClientError::Invalid(_)) => Some("invalid"),
        };
        self.breaker.record(kind != Some("unavailable"));
        if let Some(metrics) = &self.metrics {
            metrics.observe_upstream("users", operation, started.elapsed(), kind);
        }
        result
    }

    /// The same client, able to call internal endpoints with these credentials.
    pub fn with_credentials(mut self, credentials: ServiceCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// A valid service token, fetched when missing or within 30 s of expiry.
    async fn service_token(&self) -> Result<String, UsersClientError> {
        let credentials = self
            .credentials
            .as_ref()
            .ok_or_else(|| UsersClientError::Invalid("no service credentials configured".into()))?;
        let mut cached = self.service_token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && std::time::Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let response = self
            .http
            .post(format!("{}/v1/auth/service-token", self.base_url))
            .json(&serde_json::json!({
                "client_id": credentials.client_id,
                "client_secret": credentials.client_secret.expose(),
            }))
            .send()
            .await
            .map_err(|e| UsersClientError::Unavailable(e.to_string()))?;
        if response.status().is_server_error() {
            return Err(UsersClientError::Unavailable(format!(
                "status {}",
                response.status()
            )));
        }
        if !response.status().is_success() {
            return Err(unexpected(response.status()));
        }
        let answer: ServiceTokenAnswer = read_json(response).await?;
        let lifetime = Duration::from_secs(answer.expires_in.saturating_sub(30).max(1));
        *cached = Some((
            answer.access_token.clone(),
            std::time::Instant::now() + lifetime,
        ));
        Ok(answer.access_token)
    }

    /// Whether `user` may message `others` (an internal endpoint; needs credentials).
    #[tracing::instrument(skip_all, fields(%user, count = others.len()), err)]
    pub async fn contactability(
        &self,
        user: Uuid,
        others: &[Uuid],
        ctx: &CallContext,
    ) -> Result<Contactability, UsersClientError> {
        self.guarded(
            "contactability",
            self.contactability_once(user, others, ctx),
        )
        .await
    }

    async fn contactability_once(
        &self,
        user: Uuid,
        others: &[Uuid],
        ctx: &CallContext,
    ) -> Result<Contactability, UsersClientError> {
        let token = self.service_token().await?;
        let mut request = self
            .http
            .post(format!(
                "{}/internal/v1/users/{user}/contactability",
                self.base_url
            ))
            .bearer_auth(token)
            .json(&ContactabilityRequest {
                user_ids: others.to_vec(),
            });
        request = with_context(request, ctx);
        let response = request
            .send()
            .await
            .map_err(|e| UsersClientError::Unavailable(e.to_string()))?;
        match response.status() {
            StatusCode::OK => read_json(response).await,
            StatusCode::NOT_FOUND => Err(UsersClientError::NotFound),
            status if status.is_server_error() => {
                Err(UsersClientError::Unavailable(format!("status {status}")))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Reports a security event to the audit log (an internal endpoint; needs credentials).
    /// Idempotent on `report.source_id`.
    #[tracing::instrument(skip_all, fields(event = %report.event), err)]
    pub async fn report_audit(&self, report: &AuditReport) -> Result<(), UsersClientError> {
        self.guarded("report_audit", self.report_audit_once(report))
            .await
    }

    async fn report_audit_once(&self, report: &AuditReport) -> Result<(), UsersClientError> {
        let token = self.service_token().await?;
        let response = self
            .http
            .post(format!("{}/internal/v1/audit", self.base_url))
            .bearer_auth(token)
            .json(report)
            .send()
            .await
            .map_err(|e| UsersClientError::Unavailable(e.to_string()))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status if status.is_server_error() => {
                Err(UsersClientError::Unavailable(format!("status {status}")))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Every followee id of `user`. With the ETag of a cached copy, answers
    /// [`Followees::Unchanged`] when that copy is current.
    #[tracing::instrument(skip_all, fields(%user), err)]
    pub async fn followee_ids(
        &self,
        user: Uuid,
        cached_etag: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Followees, UsersClientError> {
        self.guarded(
            "followee_ids",
            self.followee_ids_once(user, cached_etag, ctx),
        )
        .await
    }

    async fn followee_ids_once(
        &self,
        user: Uuid,
        cached_etag: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Followees, UsersClientError> {
        let url = format!("{}/v1/users/{user}/following/ids", self.base_url);
        let response = self.get(&url, ctx, cached_etag).await?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(Followees::Unchanged),
            StatusCode::NOT_FOUND => Err(UsersClientError::NotFound),
            StatusCode::OK => {
                let etag = response
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .ok_or_else(|| UsersClientError::Invalid("no ETag".into()))?;
                let answer: IdsAnswer = read_json(response).await?;
                Ok(Followees::Current {
                    etag,
                    ids: answer.ids,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Summaries of the users among `ids` who exist; unknown ids are absent.
    #[tracing::instrument(skip_all, fields(count = ids.len()), err)]
    pub async fn profiles(
        &self,
        ids: &[Uuid],
        ctx: &CallContext,
    ) -> Result<Vec<UserSummary>, UsersClientError> {
        self.guarded("profiles", self.profiles_once(ids, ctx)).await
    }

    async fn profiles_once(
        &self,
        ids: &[Uuid],
        ctx: &CallContext,
    ) -> Result<Vec<UserSummary>, UsersClientError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let list = chunk
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let url = format!("{}/v1/users?ids={list}", self.base_url);
            let response = self.get(&url, ctx, None).await?;
            match response.status() {
                StatusCode::OK => found.extend(read_json::<ProfilesAnswer>(response).await?.items),
                other => return Err(unexpected(other)),
            }
        }
        Ok(found)
    }

    /// A GET, retried once if the connection could not be made (never after a timeout or an
    /// answer: the users service may be overloaded, and retries would add to it).
    async fn get(
        &self,
        url: &str,
        ctx: &CallContext,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, UsersClientError> {
        let attempt = || {
            let mut request = with_context(self.http.get(url), ctx);
            if let Some(etag) = etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            request.send()
        };
        let response = match attempt().await {
            Err(e) if e.is_connect() => attempt().await,
            other => other,
        }
        .map_err(|e| UsersClientError::Unavailable(e.to_string()))?;
        if response.status().is_server_error() {
            return Err(UsersClientError::Unavailable(format!(
                "status {}",
                response.status()
            )));
        }
        Ok(response)
    }
}

/// Forwards the request id and trace context of the request being served.
fn with_context(
    mut request: reqwest::RequestBuilder,
    ctx: &CallContext,
) -> reqwest::RequestBuilder {
    if let Some(id) = &ctx.request_id {
        request = request.header(REQUEST_ID_HEADER.as_str(), id);
    }
    // Continue the current trace; without one (no subscriber), pass the incoming one on.
    let headers = crate::telemetry::trace_headers();
    if headers.is_empty()
        && let Some(traceparent) = &ctx.traceparent
    {
        request = request.header(TRACEPARENT_HEADER.as_str(), traceparent);
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

fn unexpected(status: StatusCode) -> UsersClientError {
    UsersClientError::Invalid(format!("status {status}"))
}

async fn read_json<T: DeserializeOwned>(
    mut response: reqwest::Response,
) -> Result<T, UsersClientError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| UsersClientError::Unavailable(e.to_string()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(UsersClientError::Invalid("answer too large".into()));
        }
    }
    serde_json::from_slice(&body).map_err(|e| UsersClientError::Invalid(e.to_string()))
}

#[cfg(test)]
mod breaker_tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_probes_after_the_cooldown_and_closes_on_success() {
        let breaker = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(breaker.admit());
            breaker.record(false);
        }
        assert!(!breaker.is_open(), "two failures are not enough");
        breaker.record(true);
        for _ in 0..3 {
            assert!(breaker.admit());
            breaker.record(false);
        }
        assert!(breaker.is_open());
        assert!(!breaker.admit(), "open: refused at once");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.admit(), "one probe after the cool-down");
        assert!(!breaker.admit(), "only one");
        breaker.record(false);
        assert!(!breaker.admit(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.admit());
        breaker.record(true);
        assert!(!breaker.is_open());
        assert!(breaker.admit() && breaker.admit(), "closed again");
    }
}
