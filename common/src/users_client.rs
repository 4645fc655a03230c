//! The typed client other services use to ask the users service what they need to know about
//! users: followee ids (with a conditional request, so a cached list costs a 304) and author
//! profiles in batches.
//!
//! One `reqwest::Client` built once, with connect and request timeouts; the request id
//! and trace context are forwarded; reads are retried once on a connection failure and never otherwise, so a slow
//! users service is not hammered. Answers are untrusted: strict types and a size cap.

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

/// A client of the users service.
#[derive(Debug, Clone)]
pub struct UsersClient {
    http: reqwest::Client,
    base_url: String,
    credentials: Option<ServiceCredentials>,
    /// The current service token and when to stop using it.
    service_token: std::sync::Arc<tokio::sync::Mutex<Option<(String, std::time::Instant)>>>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
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
        })
    }

    /// The same client, recording call latency and errors in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn record<T>(
        &self,
        operation: &str,
        started: std::time::Instant,
        result: &Result<T, UsersClientError>,
    ) {
        if let Some(metrics) = &self.metrics {
            let kind = match result {
                Ok(_) | Err(UsersClientError::NotFound) => None,
                Err(UsersClientError::Unavailable(_)) => Some("unavailable"),
                Err(UsersClientError::Invalid(_)) => Some("invalid"),
            };
            metrics.observe_upstream("users", operation, started.elapsed(), kind);
        }
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
        let started = std::time::Instant::now();
        let result = self.contactability_once(user, others, ctx).await;
        self.record("contactability", started, &result);
        result
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

    /// Every followee id of `user`. With the ETag of a cached copy, answers
    /// [`Followees::Unchanged`] when that copy is current.
    #[tracing::instrument(skip_all, fields(%user), err)]
    pub async fn followee_ids(
        &self,
        user: Uuid,
        cached_etag: Option<&str>,
        ctx: &CallContext,
    ) -> Result<Followees, UsersClientError> {
        let started = std::time::Instant::now();
        let result = self.followee_ids_once(user, cached_etag, ctx).await;
        self.record("followee_ids", started, &result);
        result
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
        let started = std::time::Instant::now();
        let result = self.profiles_once(ids, ctx).await;
        self.record("profiles", started, &result);
        result
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
