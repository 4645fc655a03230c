//! Typed configuration read from environment variables.
//!
//! Every variable has a default that works for local development, except secrets in
//! production. A value that does not parse fails start-up with an error that names the variable.
//! Secrets are wrapped in [`Secret`] so that `Debug` output never shows them.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A configuration error: which variable, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration variable {name}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub name: String,
    /// What is wrong with its value.
    pub message: String,
}

/// A string that must never reach a log line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call this only where the value is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

/// A source of configuration values: the process environment, or a map in tests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Reads the process environment once.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// Builds an environment from pairs, for tests and tools.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The raw value of `name`, if set and not empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }

    /// The value of `name`, or `default` when it is unset.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    /// A secret: `name`, or `default` when unset.
    pub fn secret(&self, name: &str, default: &str) -> Secret {
        Secret::new(self.string(name, default))
    }

    /// `name` parsed as `T`, or `default` when unset; a value that does not parse is an error
    /// naming the variable.
    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_owned(),
                message: format!("cannot parse {raw:?}: {e}"),
            }),
        }
    }

    /// `name` as a number of milliseconds.
    pub fn millis(&self, name: &str, default_ms: u64) -> Result<Duration, ConfigError> {
        self.parse(name, default_ms).map(Duration::from_millis)
    }

    /// `name` as a number of seconds.
    pub fn seconds(&self, name: &str, default_s: u64) -> Result<Duration, ConfigError> {
        self.parse(name, default_s).map(Duration::from_secs)
    }

    /// `name` as a bound on how many of something there may be: at least one.
    pub fn bound(&self, name: &str, default: usize) -> Result<usize, ConfigError> {
        match self.parse(name, default)? {
            0 => Err(self.invalid(name, "must be at least 1")),
            n => Ok(n),
        }
    }

    /// `name` as a comma-separated list (empty items dropped).
    pub fn list(&self, name: &str, default: &str) -> Vec<String> {
        self.string(name, default)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Fails with a [`ConfigError`] for `name`.
    pub fn invalid(&self, name: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}

/// How the HTTP server listens and shuts down.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Interface to bind (`HOST`, default `127.0.0.1`; containers set `0.0.0.0`).
    pub host: String,
    /// Port to bind (`PORT`; 0 picks a free one, as tests do).
    pub port: u16,
    /// Worker threads (`HTTP_WORKERS`, default: one per core).
    pub workers: usize,
    /// How long in-flight requests may run once the server stops (`SHUTDOWN_TIMEOUT_SECS`,
    /// default 30).
    pub shutdown_timeout: Duration,
    /// How long readiness is 503 before the server stops accepting, so load balancers notice
    /// (`SHUTDOWN_DELAY_SECS`, default 5).
    pub shutdown_delay: Duration,
    /// Largest JSON body accepted (`MAX_JSON_BODY_BYTES`, default 64 KiB).
    pub max_json_body: usize,
    /// Origins allowed by CORS (`CORS_ALLOWED_ORIGINS`, comma-separated).
    pub cors_allowed_origins: Vec<String>,
    /// Requests the process works on at once; more are answered 503 at once
    /// (`MAX_IN_FLIGHT_REQUESTS`, default 512; `crate::shed`).
    pub max_in_flight_requests: usize,
}

impl HttpSettings {
    /// Reads the HTTP settings; `default_port` is the service's own.
    pub fn from_env(env: &Env, default_port: u16) -> Result<Self, ConfigError> {
        let workers = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2);
        Ok(Self {
            host: env.string("HOST", "127.0.0.1"),
            port: env.parse("PORT", default_port)?,
            workers: env.parse("HTTP_WORKERS", workers)?,
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT_SECS", 30)?,
            shutdown_delay: env.seconds("SHUTDOWN_DELAY_SECS", 5)?,
            max_json_body: env.parse("MAX_JSON_BODY_BYTES", 64 * 1024)?,
            cors_allowed_origins: env.list(
                "CORS_ALLOWED_ORIGINS",
                "http://localhost:3000,http://localhost:5173",
            ),
            max_in_flight_requests: env.bound("MAX_IN_FLIGHT_REQUESTS", 512)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_does_not_parse_names_its_variable() {
        let env = Env::from_pairs([("PORT", "eighty")]);
        let err = env.parse::<u16>("PORT", 8081).unwrap_err();
        assert_eq!(err.name, "PORT");
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn unset_and_empty_values_fall_back_to_the_default() {
        let env = Env::from_pairs([("PORT", " ")]);
        assert_eq!(env.parse::<u16>("PORT", 8081).unwrap(), 8081);
        assert_eq!(env.parse::<u16>("OTHER", 7).unwrap(), 7);
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn lists_are_split_on_commas_and_trimmed() {
        let env = Env::from_pairs([("X", " a, b ,,c ")]);
        assert_eq!(env.list("X", ""), vec!["a", "b", "c"]);
    }
}
