//! Access tokens for the synthetic readers, minted before a run (not measured), signed with
//! the same key the users service signs with, so the services verify them as their own.

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

/// Signs a 15-minute access token for each of `users` with the first key in `keys_dir`.
pub fn mint(keys_dir: &str, issuer: &str, users: &[Uuid]) -> anyhow::Result<Vec<String>> {
    let mut entries: Vec<_> = std::fs::read_dir(keys_dir)
        .with_context(|| format!("reading {keys_dir}"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    entries.sort();
    let path = entries.first().context("no .pem key")?;
    let kid = path
        .file_stem()
        .and_then(|s| s.to_str())
        .context("key name")?
        .to_owned();
    let key = EncodingKey::from_rsa_pem(&std::fs::read(path)?)?;
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    header.typ = Some("at+jwt".to_owned());
    users
        .iter()
        .map(|user| {
            let claims = serde_json::json!({
                "sub": user.to_string(), "iss": issuer, "aud": "social-api", "exp": now + 900,
                "iat": now, "nbf": now, "jti": Uuid::new_v4().to_string(), "role": "user",
            });
            Ok(jsonwebtoken::encode(&header, &claims, &key)?)
        })
        .collect()
}
