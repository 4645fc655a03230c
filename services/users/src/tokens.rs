//! Signing: RS256 access tokens, service tokens, the published JWKS, and opaque refresh tokens.
//!
//! Several keys may be loaded: the active one signs, all of them are published, so tokens signed
//! by a retiring key keep verifying until they expire. See docs/adr/0003-rs256-jwks.md.

use crate::config::TokenSettings;
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::auth::{ACCESS_TOKEN_TYP, AuthSettings, Claims, Role};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

/// A freshly signed access token.
#[derive(Debug, Clone)]
pub struct SignedToken {
    /// The compact JWS.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Signs tokens with the active key and publishes every loaded key.
pub struct Signer {
    active_kid: String,
    keys: HashMap<String, EncodingKey>,
    jwks: JwkSet,
    issuer: String,
    audience: String,
    internal_audience: String,
    settings: TokenSettings,
}

impl Signer {
    /// Loads the keys of `tokens`; the audiences and issuer come from `auth`.
    pub fn new(tokens: &TokenSettings, auth: &AuthSettings) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        let mut jwks = JwkSet { keys: Vec::new() };
        for (kid, pem) in &tokens.keys {
            let key = EncodingKey::from_rsa_pem(pem.expose().as_bytes())
                .with_context(|| format!("key {kid} is not an RSA private key in PEM"))?;
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256)
                .with_context(|| format!("deriving the public key of {kid}"))?;
            jwk.common.key_id = Some(kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
            jwks.keys.push(jwk);
            keys.insert(kid.clone(), key);
        }
        anyhow::ensure!(
            keys.contains_key(&tokens.active_kid),
            "no key with kid {}",
            tokens.active_kid
        );
        Ok(Self {
            active_kid: tokens.active_kid.clone(),
            keys,
            jwks,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            internal_audience: auth.internal_audience.clone(),
            settings: tokens.clone(),
        })
    }

    /// The public keys, as published at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// The public keys, for this service's own verifier.
    pub fn decoding_keys(&self) -> anyhow::Result<Vec<(String, DecodingKey)>> {
        self.jwks
            .keys
            .iter()
            .map(|jwk| {
                Ok((
                    jwk.common.key_id.clone().unwrap_or_default(),
                    DecodingKey::from_jwk(jwk)?,
                ))
            })
            .collect()
    }

    /// The lifetime settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    fn sign(
        &self,
        sub: String,
        aud: &str,
        role: Role,
        ttl: std::time::Duration,
    ) -> anyhow::Result<SignedToken> {
        let now = chrono::Utc::now().timestamp();
        let ttl_secs = ttl.as_secs();
        let claims = Claims {
            sub,
            iss: self.issuer.clone(),
            aud: aud.to_owned(),
            exp: now + i64::try_from(ttl_secs)?,
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            role,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.active_kid.clone());
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        let key = self
            .keys
            .get(&self.active_kid)
            .context("the active key is loaded")?;
        let token = jsonwebtoken::encode(&header, &claims, key).context("signing a token")?;
        Ok(SignedToken {
            token,
            expires_in: ttl_secs,
        })
    }

    /// An access token for an account.
    pub fn access_token(&self, account: Uuid, role: Role) -> anyhow::Result<SignedToken> {
        self.sign(
            account.to_string(),
            &self.audience,
            role,
            self.settings.access_ttl,
        )
    }

    /// A service token, for the internal audience.
    pub fn service_token(&self, service: &str) -> anyhow::Result<SignedToken> {
        self.sign(
            format!("svc:{service}"),
            &self.internal_audience,
            Role::Service,
            self.settings.service_ttl,
        )
    }
}

/// A new opaque refresh token (256 random bits, base64url) and the hash that is stored.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// The stored form of a refresh token. SHA-256 suffices: the token has 256 bits of entropy.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
