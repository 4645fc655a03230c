//! Password hashing with argon2id, off the async executor.
//!
//! A hash costs tens of milliseconds of CPU; running it on a Tokio worker would stall every
//! request sharing that worker, so it runs on the blocking pool with the caller's span.

use anyhow::Context;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Hashes a password into a PHC string (argon2id, default parameters, random salt).
pub async fn hash(password: String) -> anyhow::Result<String> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
        })
    })
    .await
    .context("the hashing task failed")?
}

/// Checks a password against a PHC hash. A malformed hash counts as a mismatch.
pub async fn verify(password: String, hash: String) -> anyhow::Result<bool> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
    })
    .await
    .context("the verification task failed")
}
