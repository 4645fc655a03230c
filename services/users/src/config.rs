//! The users service's settings: the shared ones plus signing keys, token lifetimes and the
//! credentials of the services allowed to obtain service tokens, flow quotas and the outbox.

use crate::outbox::OutboxSettings;
use common::config::{ConfigError, Env, Secret};
use common::ratelimit::Quota;
use common::service::ServiceSettings;
use std::collections::BTreeMap;
use std::time::Duration;

/// Default port of the users service.
pub const DEFAULT_PORT: u16 = 8081;

/// Everything the users service reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What every service reads: HTTP, database, Redis, token verification, logs.
    pub base: ServiceSettings,
    /// Signing keys and token lifetimes.
    pub tokens: TokenSettings,
    /// `SERVICE_CLIENTS`: `name:secret` pairs of services allowed to get service tokens.
    pub service_clients: BTreeMap<String, Secret>,
    /// Quotas of the sign-up, sign-in and follow flows.
    pub limits: FlowLimits,
    /// Where the outbox delivers.
    pub outbox: OutboxSettings,
    /// `GRAPH_VERSION_TTL_SECS` (default 60): the longest a published followee-set version lives
    /// without being written again, which bounds how long readers may miss a change whose
    /// announcement Redis lost (docs/adr/0017-published-graph-versions.md).
    pub graph_version_ttl: Duration,
}

/// Quotas of the flows abuse aims at, on top of the per-account and per-IP request quotas.
/// Each is `LIMIT/SECONDS`.
#[derive(Debug, Clone)]
pub struct FlowLimits {
    /// `RATE_LIMIT_SIGNUP_IP` (default `5/1800`, Mastodon's): sign-ups per IP.
    pub signup_ip: Quota,
    /// `RATE_LIMIT_LOGIN_IP` (default `25/300`, Mastodon's): sign-in attempts per IP.
    pub login_ip: Quota,
    /// `RATE_LIMIT_LOGIN_ACCOUNT` (default `10/900`): sign-in attempts per login name, from
    /// anywhere, so a botnet cannot guess one account's password.
    pub login_account: Quota,
    /// `RATE_LIMIT_FOLLOW` (default `400/86400`, Mastodon's): follows per account.
    pub follow: Quota,
}

impl FlowLimits {
    /// Reads the quotas.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            signup_ip: env.parse("RATE_LIMIT_SIGNUP_IP", Quota::per_seconds(5, 1800))?,
            login_ip: env.parse("RATE_LIMIT_LOGIN_IP", Quota::per_seconds(25, 300))?,
            login_account: env.parse("RATE_LIMIT_LOGIN_ACCOUNT", Quota::per_seconds(10, 900))?,
            follow: env.parse("RATE_LIMIT_FOLLOW", Quota::per_seconds(400, 86400))?,
        })
    }
}

/// Keys that sign access tokens, and how long tokens live.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// (`kid`, PEM private key) pairs; every one is published in the JWKS.
    pub keys: Vec<(String, Secret)>,
    /// The `kid` that signs new tokens (`JWT_SIGNING_KID`).
    pub active_kid: String,
    /// `ACCESS_TOKEN_TTL_SECS` (default 900, at most 900).
    pub access_ttl: Duration,
    /// `REFRESH_TOKEN_TTL_SECS` (default 30 days).
    pub refresh_ttl: Duration,
    /// `SERVICE_TOKEN_TTL_SECS` (default 300).
    pub service_ttl: Duration,
}

impl TokenSettings {
    /// Reads the keys from `JWT_KEYS_DIR` (one `<kid>.pem` PKCS#8 RSA private key per file,
    /// default `.dev/keys`), and the signer from `JWT_SIGNING_KID` (default: the only key).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let dir = env.string("JWT_KEYS_DIR", ".dev/keys");
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            env.invalid(
                "JWT_KEYS_DIR",
                format!("cannot read directory {dir:?}: {e}"),
            )
        })?;
        let mut keys = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let (Some(kid), Some("pem")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let pem = std::fs::read_to_string(&path)
                .map_err(|e| env.invalid("JWT_KEYS_DIR", format!("cannot read {path:?}: {e}")))?;
            keys.push((kid.to_owned(), Secret::new(pem)));
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let active_kid = match env.optional("JWT_SIGNING_KID") {
            Some(kid) => kid,
            None if keys.len() == 1 => keys[0].0.clone(),
            None => {
                return Err(env.invalid(
                    "JWT_SIGNING_KID",
                    format!("required: {dir:?} holds {} keys", keys.len()),
                ));
            }
        };
        if !keys.iter().any(|(kid, _)| *kid == active_kid) {
            return Err(env.invalid(
                "JWT_SIGNING_KID",
                format!("no key {active_kid}.pem in {dir:?}"),
            ));
        }
        let access_ttl = env.seconds("ACCESS_TOKEN_TTL_SECS", 900)?;
        if access_ttl > Duration::from_secs(900) || access_ttl.is_zero() {
            return Err(env.invalid("ACCESS_TOKEN_TTL_SECS", "must be between 1 and 900 seconds"));
        }
        Ok(Self {
            keys,
            active_kid,
            access_ttl,
            refresh_ttl: env.seconds("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
            service_ttl: env.seconds("SERVICE_TOKEN_TTL_SECS", 300)?,
        })
    }
}

impl Settings {
    /// Reads every setting; the first bad value stops start-up with its variable's name.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut service_clients = BTreeMap::new();
        for pair in env.list(
            "SERVICE_CLIENTS",
            "posts:posts-dev-secret,messaging:messaging-dev-secret",
        ) {
            let (name, secret) = pair.split_once(':').ok_or_else(|| {
                env.invalid(
                    "SERVICE_CLIENTS",
                    "expected name:secret pairs separated by commas",
                )
            })?;
            service_clients.insert(name.to_owned(), Secret::new(secret));
        }
        Ok(Self {
            base: ServiceSettings::from_env(env, "users", DEFAULT_PORT, None)?,
            tokens: TokenSettings::from_env(env)?,
            service_clients,
            limits: FlowLimits::from_env(env)?,
            outbox: OutboxSettings {
                targets: BTreeMap::from([
                    (
                        "posts".to_owned(),
                        env.string("POSTS_URL", "http://127.0.0.1:8082"),
                    ),
                    (
                        "messaging".to_owned(),
                        env.string("MESSAGING_URL", "http://127.0.0.1:8083"),
                    ),
                ]),
                poll: env.millis("OUTBOX_POLL_MS", 1000)?,
                retry_base: env.millis("OUTBOX_RETRY_BASE_MS", 1000)?,
            },
            graph_version_ttl: env.seconds("GRAPH_VERSION_TTL_SECS", 60)?,
        })
    }
}
