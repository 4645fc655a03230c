//! Tokens for tests: well-formed ones signed with the test keys, and the forgeries every
//! service must refuse with 401.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::keys;

/// User access-token claims as the users service issues them, with `overrides` applied (a
/// `null` override removes the claim).
pub fn claims(user: Uuid, overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "sub": user.to_string(), "iss": "http://127.0.0.1:8081", "aud": "social-api",
        "exp": now + 300, "iat": now, "nbf": now, "jti": Uuid::new_v4().to_string(), "role": "user",
    });
    if let (Some(target), Some(changes)) = (claims.as_object_mut(), overrides.as_object()) {
        for (k, v) in changes {
            if v.is_null() {
                target.remove(k);
            } else {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    claims
}

/// Signs `claims` with RS256 and the given header fields.
pub fn sign(claims: &Value, kid: &str, typ: &str, private_pem: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some(typ.to_owned());
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("a test key");
    jsonwebtoken::encode(&header, claims, &key).expect("signing")
}

/// Signs `claims` exactly as the users service would with the `primary` test key.
pub fn valid(claims: &Value) -> String {
    sign(claims, "primary", "at+jwt", keys::PRIMARY_PRIVATE)
}

/// Tokens for `user` that must each be refused with 401, with what is wrong with each.
/// `refresh_token`, when given, is tried as an access token.
pub fn forgeries(user: Uuid, refresh_token: Option<&str>) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    let good = valid(&claims(user, json!({})));
    let mut parts = good.split('.');
    let (header_b64, payload_b64, signature) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let alg_none = format!(
        "{}.{payload_b64}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt","kid":"primary"}"#)
    );
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("primary".into());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(
            &header,
            &claims(user, json!({})),
            &EncodingKey::from_secret(keys::PRIMARY_PUBLIC.as_bytes()),
        )
        .expect("signing")
    };
    let tampered = format!(
        "{header_b64}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims(user, json!({"role": "admin"})).to_string())
    );
    let mut cases = vec![
        ("alg none", alg_none),
        ("HS256 keyed with the public key", hs256),
        (
            "expired",
            valid(&claims(
                user,
                json!({"exp": now - 120, "iat": now - 1000, "nbf": now - 1000}),
            )),
        ),
        (
            "not yet valid",
            valid(&claims(user, json!({"nbf": now + 600}))),
        ),
        (
            "wrong issuer",
            valid(&claims(user, json!({"iss": "https://evil.example"}))),
        ),
        (
            "wrong audience",
            valid(&claims(user, json!({"aud": "another-api"}))),
        ),
        ("no exp", valid(&claims(user, json!({"exp": null})))),
        (
            "unknown kid",
            sign(
                &claims(user, json!({})),
                "no-such-key",
                "at+jwt",
                keys::PRIMARY_PRIVATE,
            ),
        ),
        (
            "signed by an untrusted key under a trusted kid",
            sign(
                &claims(user, json!({})),
                "primary",
                "at+jwt",
                keys::SECONDARY_PRIVATE,
            ),
        ),
        (
            "wrong typ",
            sign(
                &claims(user, json!({})),
                "primary",
                "JWT",
                keys::PRIMARY_PRIVATE,
            ),
        ),
        ("tampered payload", tampered),
        ("garbage", "a.b.c".to_owned()),
    ];
    if let Some(refresh) = refresh_token {
        cases.push(("refresh token as access token", refresh.to_owned()));
    }
    cases
}
