//! Local verification of RS256 access tokens, and the extractors built on it.
//!
//! Keys are found by `kid` in a key set made of keys from configuration (a PEM public key in an
//! environment variable) and keys fetched from the users service's JWKS URL. An unknown `kid`
//! triggers a JWKS refresh, at most once per interval, so a new signing key needs no coordinated
//! redeploy; a background refresher drops removed keys. No request ever waits on the users
//! service except the first one that meets a new key. A token whose key this service could not
//! fetch (the users service is unreachable) is answered 503, not 401: the token may well be
//! valid, and a client told it is not would sign its user out. See docs/adr/0003-rs256-jwks.md.
//!
//! A client sends the same access token with every request for its lifetime, so a token that
//! verified is remembered by its exact text: its next requests skip the RSA check while it has
//! not expired and its key is still trusted (docs/adr/0025-verified-tokens-remembered.md).

use crate::config::{ConfigError, Env};
use crate::problem::Problem;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, get, web};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The JOSE `typ` of an access token (RFC 9068); anything else is refused.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// How soon a failed JWKS fetch may be retried.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(1);

/// The refresher's first wait after a failed fetch while no key set was ever fetched (users
/// starting at the same moment, say); it doubles up to [`FAILED_FETCH_BACKOFF`] × 5.
const FIRST_FETCH_RETRY: Duration = Duration::from_millis(100);

/// Longest a JWKS fetch may take. A fetch holds the lock that requests with an unknown `kid`
/// (and readiness probes) wait on: a users service that accepts and never answers must not
/// hold them for as long as the connection lives.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest JWKS document accepted from the users service.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Tokens remembered per generation of [`VerifiedTokens`]: at most twice this many are held.
const VERIFIED_PER_GENERATION: usize = 5_000;

/// What a token's bearer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary account.
    User,
    /// May moderate content in every service.
    Moderator,
    /// May moderate, and manage accounts and roles.
    Admin,
    /// Another service of ours, calling an internal endpoint.
    Service,
}

impl Role {
    /// Moderators and admins may moderate content.
    pub fn can_moderate(self) -> bool {
        matches!(self, Role::Moderator | Role::Admin)
    }
}

/// The claims of an access token, user or service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account id (UUID) for users, `svc:<name>` for services.
    pub sub: String,
    /// The issuer: the users service's public URL.
    pub iss: String,
    /// The audience: the public API, or the internal one for service tokens.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    /// The bearer's role.
    pub role: Role,
}

/// How tokens are verified: issuer, audiences, keys and their refresh.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Expected `iss` (`JWT_ISSUER`).
    pub issuer: String,
    /// Audience of user access tokens (`JWT_AUDIENCE`).
    pub audience: String,
    /// Audience of service tokens (`JWT_INTERNAL_AUDIENCE`).
    pub internal_audience: String,
    /// Keys from configuration: (`kid`, PEM public key) — `JWT_PUBLIC_KEY_ID`, `JWT_PUBLIC_KEY`.
    pub static_keys: Vec<(String, String)>,
    /// The users service's JWKS URL (`JWKS_URL`), if keys are fetched.
    pub jwks_url: Option<String>,
    /// Least time between two refreshes caused by an unknown `kid` (`JWKS_MIN_REFRESH_SECS`).
    pub min_refresh_interval: Duration,
    /// How often the key set is refreshed in the background (`JWKS_REFRESH_SECS`).
    pub refresh_every: Duration,
    /// Clock skew tolerated on `exp` and `nbf` (`JWT_LEEWAY_SECS`).
    pub leeway: Duration,
}

impl AuthSettings {
    /// Reads the verification settings. `default_jwks_url` is `None` for the users service,
    /// which verifies with its own keys.
    pub fn from_env(env: &Env, default_jwks_url: Option<&str>) -> Result<Self, ConfigError> {
        let mut static_keys = Vec::new();
        if let Some(pem) = env.optional("JWT_PUBLIC_KEY") {
            let kid = env.optional("JWT_PUBLIC_KEY_ID").ok_or_else(|| {
                env.invalid("JWT_PUBLIC_KEY_ID", "required when JWT_PUBLIC_KEY is set")
            })?;
            DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                env.invalid(
                    "JWT_PUBLIC_KEY",
                    format!("not an RSA public key in PEM: {e}"),
                )
            })?;
            static_keys.push((kid, pem));
        }
        Ok(Self {
            issuer: env.string("JWT_ISSUER", "http://127.0.0.1:8081"),
            audience: env.string("JWT_AUDIENCE", "social-api"),
            internal_audience: env.string("JWT_INTERNAL_AUDIENCE", "social-internal"),
            static_keys,
            jwks_url: env
                .optional("JWKS_URL")
                .or(default_jwks_url.map(str::to_owned)),
            min_refresh_interval: env.seconds("JWKS_MIN_REFRESH_SECS", 30)?,
            refresh_every: env.seconds("JWKS_REFRESH_SECS", 300)?,
            leeway: env.seconds("JWT_LEEWAY_SECS", 30)?,
        })
    }
}

/// Why a token was refused. Only the distinction "expired" reaches the client.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Anything else: bad signature, unknown key, wrong claims, wrong `typ`.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token names a key this service does not hold, and the key set could not be fetched
    /// to learn whether that key exists: whether the token is valid is unknown for now.
    #[error("the key set could not be fetched to verify a token signed with kid {0}")]
    KeysUnavailable(String),
}

impl From<TokenError> for Problem {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Missing => Problem::unauthenticated("a bearer access token is required"),
            TokenError::Expired => Problem::new(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "token_expired",
                "Unauthenticated",
            )
            .with_detail("the access token has expired; refresh it"),
            TokenError::Invalid(_) => Problem::unauthenticated("the access token is invalid"),
            TokenError::KeysUnavailable(_) => Problem::unavailable(
                "the keys that verify access tokens cannot be fetched from the users service \
                 right now; retry with the same token",
            ),
        }
    }
}

/// Verifies access tokens locally against a cached key set.
pub struct TokenVerifier {
    settings: AuthSettings,
    static_keys: HashMap<String, DecodingKey>,
    fetched_keys: RwLock<HashMap<String, DecodingKey>>,
    /// When keys were last fetched, and whether that fetch succeeded.
    last_fetch: tokio::sync::Mutex<Option<(Instant, bool)>>,
    /// Set by the first successful fetch, and never cleared: from then on the verifier holds a
    /// key set, however stale a failed refresh leaves it.
    fetched_once: AtomicBool,
    http: reqwest::Client,
    validation: Validation,
    verified: VerifiedTokens,
}

/// Tokens that passed verification, by their exact text, with their claims and the `kid` of the
/// key that verified them. Any change to a token (a forged signature, other claims) is another
/// text, which is verified in full. Two generations bound the memory: when the newer one is
/// full it becomes the older one, and a token found in the older one moves back, so the tokens
/// in use stay and the rest are forgotten.
#[derive(Default)]
struct VerifiedTokens {
    generations: Mutex<[HashMap<Box<str>, Verified>; 2]>,
}

#[derive(Clone)]
struct Verified {
    claims: Claims,
    kid: String,
}

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<Verified> {
        let mut generations = self
            .generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let [newer, older] = &mut *generations;
        if let Some(verified) = newer.get(token) {
            return Some(verified.clone());
        }
        let (token, verified) = older.remove_entry(token)?;
        let found = verified.clone();
        Self::add(&mut generations, token, verified);
        Some(found)
    }

    fn remember(&self, token: &str, verified: Verified) {
        let mut generations = self
            .generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::add(&mut generations, token.into(), verified);
    }

    fn add(generations: &mut [HashMap<Box<str>, Verified>; 2], token: Box<str>, v: Verified) {
        if generations[0].len() >= VERIFIED_PER_GENERATION {
            generations[1] = std::mem::take(&mut generations[0]);
        }
        generations[0].insert(token, v);
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for `settings`, trusting also `extra_keys` (the users service passes its own).
    pub fn new(
        settings: AuthSettings,
        extra_keys: Vec<(String, DecodingKey)>,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let mut static_keys = HashMap::new();
        for (kid, pem) in &settings.static_keys {
            static_keys.insert(kid.clone(), DecodingKey::from_rsa_pem(pem.as_bytes())?);
        }
        static_keys.extend(extra_keys);
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience, &settings.internal_audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = settings.leeway.as_secs();
        Ok(Self {
            settings,
            static_keys,
            fetched_keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            fetched_once: AtomicBool::new(false),
            http,
            validation,
            verified: VerifiedTokens::default(),
        })
    }

    /// The settings this verifier was built with.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Verifies `token` and returns its claims, whichever audience it is for.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if let Some(verified) = self.verified.get(token) {
            // What `decode` checks that can change since: expiry (as it checks it, with the
            // leeway) and whether the key is still trusted. `nbf` passed already.
            let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
            let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
            if verified.claims.exp >= now.saturating_sub(leeway) && self.has_key(&verified.kid) {
                return Ok(verified.claims);
            }
        }
        let header = decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(TokenError::Invalid("typ is not at+jwt".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                let set_is_current = self.refresh_for_unknown_kid().await;
                match self.key(&kid) {
                    Some(key) => key,
                    None if set_is_current => {
                        return Err(TokenError::Invalid(format!("unknown kid {kid}")));
                    }
                    None => return Err(TokenError::KeysUnavailable(kid)),
                }
            }
        };
        let data = decode::<Claims>(token, &key, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid(e.to_string()),
        })?;
        self.verified.remember(
            token,
            Verified {
                claims: data.claims.clone(),
                kid,
            },
        );
        Ok(data.claims)
    }

    fn has_key(&self, kid: &str) -> bool {
        self.static_keys.contains_key(kid)
            || self
                .fetched_keys
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains_key(kid)
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        if let Some(key) = self.static_keys.get(kid) {
            return Some(key.clone());
        }
        let fetched = self
            .fetched_keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        fetched.get(kid).cloned()
    }

    /// Whether this verifier has a key set to check tokens against: its keys come from
    /// configuration, or it has fetched the users service's set at least once. Until then every
    /// token is answered 503, so the replica is not ready (`/health/ready`).
    pub fn holds_keys(&self) -> bool {
        self.settings.jwks_url.is_none() || self.fetched_once.load(Ordering::Acquire)
    }

    /// [`holds_keys`](Self::holds_keys), after a fetch if it holds none, bounded as the fetches
    /// for unknown `kid`s are: a flood of readiness probes costs users at most one fetch a second.
    pub async fn ensure_keys(&self) -> bool {
        self.holds_keys() || (self.refresh_for_unknown_kid().await && self.holds_keys())
    }

    /// Fetches the key set for a `kid` not in it, unless one was fetched too recently. Whether
    /// the keys held now are the users service's current set: false when the last fetch failed,
    /// so that an unknown `kid` proves nothing about the token.
    async fn refresh_for_unknown_kid(&self) -> bool {
        if self.settings.jwks_url.is_none() {
            return true;
        }
        let mut last = self.last_fetch.lock().await;
        // After a success, wait the full interval; after a failure (the users service was
        // down, say at start-up), try again sooner.
        let wait = |ok: bool| {
            if ok {
                self.settings.min_refresh_interval
            } else {
                FAILED_FETCH_BACKOFF
            }
        };
        if let Some((at, ok)) = *last
            && at.elapsed() < wait(ok).min(self.settings.min_refresh_interval)
        {
            return ok;
        }
        let result = self.fetch().await;
        *last = Some((Instant::now(), result.is_ok()));
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh after an unknown kid failed");
                false
            }
        }
    }

    /// Fetches the JWKS now and replaces the fetched keys with it: keys that disappeared from
    /// the set stop verifying. Static keys are kept.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let mut last = self.last_fetch.lock().await;
        let result = self.fetch().await;
        *last = Some((Instant::now(), result.is_ok()));
        result
    }

    async fn fetch(&self) -> anyhow::Result<()> {
        let Some(url) = &self.settings.jwks_url else {
            return Ok(());
        };
        // A refresh caused by a request continues that request's trace.
        let mut request = self.http.get(url).timeout(FETCH_TIMEOUT);
        for (name, value) in crate::telemetry::trace_headers() {
            request = request.header(name, value);
        }
        let mut response = request.send().await?.error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            anyhow::ensure!(
                body.len() <= MAX_JWKS_BYTES,
                "JWKS larger than {MAX_JWKS_BYTES} bytes"
            );
        }
        let set: JwkSet = serde_json::from_slice(&body)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(e) => tracing::warn!(%kid, error = %e, "ignoring a JWK that is not usable"),
            }
        }
        tracing::debug!(keys = keys.len(), "JWKS refreshed");
        *self
            .fetched_keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        self.fetched_once.store(true, Ordering::Release);
        Ok(())
    }

    /// Refreshes the key set now (ignoring failures: the users service may start later) and
    /// then every `refresh_every`, so that removed keys stop verifying. Until a first fetch
    /// succeeds it retries after 100 ms, doubling to 5 s: a replica started beside users holds
    /// keys (and turns ready) a moment after users answers, not seconds later.
    pub fn spawn_refresher(self: &Arc<Self>) {
        if self.settings.jwks_url.is_none() {
            return;
        }
        let verifier = Arc::clone(self);
        tokio::spawn(async move {
            let most = verifier
                .settings
                .refresh_every
                .min(FAILED_FETCH_BACKOFF * 5);
            let mut retry = FIRST_FETCH_RETRY.min(most);
            loop {
                let pause = match verifier.refresh().await {
                    Ok(()) => verifier.settings.refresh_every,
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys");
                        if verifier.holds_keys() {
                            most
                        } else {
                            let pause = retry;
                            retry = (retry * 2).min(most);
                            pause
                        }
                    }
                };
                tokio::time::sleep(pause).await;
            }
        });
    }
}

/// The bearer token of a request, if it sent one.
pub fn bearer_token(req: &HttpRequest) -> Result<Option<&str>, TokenError> {
    let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| TokenError::Invalid("header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(TokenError::Invalid("not a bearer token".into())),
    }
}

fn verifier(req: &HttpRequest) -> Result<Arc<TokenVerifier>, Problem> {
    req.app_data::<web::Data<TokenVerifier>>()
        .map(|data| data.clone().into_inner())
        .ok_or_else(|| {
            tracing::error!("TokenVerifier is not registered as app data");
            Problem::internal()
        })
}

/// A signed-in user: the request carried a valid user access token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The account id.
    pub id: Uuid,
    /// The account's role when the token was issued.
    pub role: Role,
    /// When the token expires (seconds since the epoch): long-lived connections end then.
    pub expires_at: i64,
}

/// Verifies a user access token given some other way than the `Authorization` header (a
/// WebSocket sub-protocol or query parameter).
pub async fn authenticate_user(verifier: &TokenVerifier, token: &str) -> Result<AuthUser, Problem> {
    let claims = verifier.verify(token).await?;
    if claims.aud != verifier.settings.audience || claims.role == Role::Service {
        return Err(TokenError::Invalid("not a user access token".into()).into());
    }
    let id = Uuid::parse_str(&claims.sub)
        .map_err(|_| TokenError::Invalid("sub is not a UUID".into()))?;
    tracing::Span::current().record("user_id", tracing::field::display(id));
    Ok(AuthUser {
        id,
        role: claims.role,
        expires_at: claims.exp,
    })
}

impl FromRequest for AuthUser {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        let verified = req.extensions().get::<AuthUser>().cloned();
        Box::pin(async move {
            if let Some(user) = verified {
                return Ok(user);
            }
            let verifier = verifier(&req)?;
            let token = bearer_token(&req)?.ok_or(TokenError::Missing)?;
            authenticate_user(&verifier, token).await
        })
    }
}

/// A caller who may be signed in. No token means anonymous; a bad token is still a 401.
#[derive(Debug, Clone)]
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl FromRequest for MaybeAuthUser {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        let verified = req.extensions().get::<AuthUser>().cloned();
        Box::pin(async move {
            if verified.is_some() {
                return Ok(MaybeAuthUser(verified));
            }
            let verifier = verifier(&req)?;
            match bearer_token(&req)? {
                None => Ok(MaybeAuthUser(None)),
                Some(token) => authenticate_user(&verifier, token)
                    .await
                    .map(|u| MaybeAuthUser(Some(u))),
            }
        })
    }
}

/// Another of our services, calling an `/internal/` endpoint with a service token.
/// A valid user token is refused with 403: users never reach internal endpoints.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    /// The calling service's name (`posts`, `messaging`).
    pub name: String,
}

impl ServiceCaller {
    /// Only `service` may call this endpoint: any other service is refused with 403.
    pub fn require(&self, service: &str) -> Result<(), Problem> {
        if self.name == service {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "only the {service} service may call this endpoint"
            )))
        }
    }
}

impl FromRequest for ServiceCaller {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let verifier = verifier(&req)?;
            let token = bearer_token(&req)?.ok_or(TokenError::Missing)?;
            let claims = verifier.verify(token).await?;
            let service = claims.sub.strip_prefix("svc:");
            match service {
                Some(name)
                    if claims.aud == verifier.settings.internal_audience
                        && claims.role == Role::Service =>
                {
                    Ok(ServiceCaller {
                        name: name.to_owned(),
                    })
                }
                _ => Err(Problem::forbidden(
                    "internal endpoints accept only service credentials",
                )),
            }
        })
    }
}

/// Who the bearer of a user token is, as this service sees it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    /// The account id from the token.
    pub user_id: Uuid,
    /// The role from the token.
    pub role: Role,
}

/// `GET /v1/session`: verifies the caller's token locally and says whom it names. Every
/// service serves it, so a frontend can check a token against the service it is about to call.
#[utoipa::path(
    tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Session),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/session")]
pub async fn session(user: AuthUser) -> HttpResponse {
    HttpResponse::Ok().json(Session {
        user_id: user.id,
        role: user.role,
    })
}
