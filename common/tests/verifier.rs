//! The token verifier against a JWKS endpoint whose key set changes under it: key rotation with
//! no coordinated redeploy, removal of retired keys, bounded refreshes, and what a remembered
//! token is still checked for.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use actix_web::{App, HttpResponse, HttpServer, web};
use common::auth::{AuthSettings, Role, TokenError, TokenVerifier};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const PRIMARY: &str = include_str!("../../crates/test-support/keys/private/primary.pem");
const SECONDARY: &str = include_str!("../../crates/test-support/keys/private/secondary.pem");
const PRIMARY_PUBLIC: &str = include_str!("../../crates/test-support/keys/public/primary.pem");

fn jwk(kid: &str, private_pem: &str) -> Jwk {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

fn token(kid: &str, private_pem: &str) -> String {
    token_expiring_in(60, kid, private_pem)
}

/// A token whose `exp` is `seconds` from now (in the past when negative).
fn token_expiring_in(seconds: i64, kid: &str, private_pem: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": uuid::Uuid::now_v7().to_string(), "iss": "issuer", "aud": "api",
        "exp": now + seconds, "iat": now - 60, "nbf": now - 60, "jti": "j", "role": "user",
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A JWKS endpoint whose set the test replaces, counting fetches.
struct JwksServer {
    url: String,
    keys: Arc<RwLock<JwkSet>>,
    fetches: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl JwksServer {
    async fn start(keys: Vec<Jwk>) -> Self {
        let keys = Arc::new(RwLock::new(JwkSet { keys }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let (k, f, down) = (keys.clone(), fetches.clone(), failing.clone());
        let server = HttpServer::new(move || {
            let (k, f, down) = (k.clone(), f.clone(), down.clone());
            App::new().route(
                "/jwks",
                web::get().to(move || {
                    let (k, f, down) = (k.clone(), f.clone(), down.clone());
                    async move {
                        f.fetch_add(1, Ordering::SeqCst);
                        if down.load(Ordering::SeqCst) {
                            return HttpResponse::ServiceUnavailable().finish();
                        }
                        let set = k.read().unwrap().clone();
                        HttpResponse::Ok().json(set)
                    }
                }),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            url: format!("http://127.0.0.1:{port}/jwks"),
            keys,
            fetches,
            failing,
        }
    }

    fn serve(&self, keys: Vec<Jwk>) {
        *self.keys.write().unwrap() = JwkSet { keys };
    }
}

fn settings(jwks_url: Option<String>, min_refresh: Duration) -> AuthSettings {
    AuthSettings {
        issuer: "issuer".into(),
        audience: "api".into(),
        internal_audience: "internal".into(),
        static_keys: Vec::new(),
        jwks_url,
        min_refresh_interval: min_refresh,
        refresh_every: Duration::from_secs(300),
        leeway: Duration::from_secs(5),
    }
}

/// A verifier fetching its keys from `jwks`, no sooner than `min_refresh` after a success.
fn verifier_of(jwks: &JwksServer, min_refresh: Duration) -> TokenVerifier {
    TokenVerifier::new(
        settings(Some(jwks.url.clone()), min_refresh),
        vec![],
        reqwest::Client::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_signed_by_a_newly_added_key_is_accepted_by_a_verifier_that_fetched_the_old_set() {
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    let verifier = TokenVerifier::new(
        settings(Some(jwks.url.clone()), Duration::ZERO),
        vec![],
        reqwest::Client::new(),
    )
    .unwrap();
    verifier.refresh().await.unwrap();
    let claims = verifier.verify(&token("k1", PRIMARY)).await.unwrap();
    assert_eq!(claims.role, Role::User);

    // The users service starts signing with k2 and publishes both.
    jwks.serve(vec![jwk("k1", PRIMARY), jwk("k2", SECONDARY)]);
    assert!(
        verifier.verify(&token("k2", SECONDARY)).await.is_ok(),
        "new key picked up on first sight"
    );
    assert!(
        verifier.verify(&token("k1", PRIMARY)).await.is_ok(),
        "old tokens stay valid"
    );
}

#[tokio::test]
async fn a_token_signed_by_a_removed_key_is_refused_after_the_refresh() {
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY), jwk("k2", SECONDARY)]).await;
    let verifier = verifier_of(&jwks, Duration::from_secs(60));
    verifier.refresh().await.unwrap();
    let old = token("k1", PRIMARY);
    assert!(verifier.verify(&old).await.is_ok());

    jwks.serve(vec![jwk("k2", SECONDARY)]);
    verifier.refresh().await.unwrap();
    assert!(matches!(
        verifier.verify(&old).await,
        Err(TokenError::Invalid(_))
    ));
    assert!(verifier.verify(&token("k2", SECONDARY)).await.is_ok());
}

#[tokio::test]
async fn unknown_kids_trigger_at_most_one_refresh_per_interval() {
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    let verifier = verifier_of(&jwks, Duration::from_secs(60));
    for kid in ["nope-1", "nope-2", "nope-3"] {
        assert!(verifier.verify(&token(kid, PRIMARY)).await.is_err());
    }
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        1,
        "a flood of unknown kids costs one fetch"
    );
}

#[tokio::test]
async fn a_public_key_from_configuration_verifies_without_any_jwks() {
    let mut s = settings(None, Duration::ZERO);
    s.static_keys = vec![("seed".into(), PRIMARY_PUBLIC.into())];
    let verifier = TokenVerifier::new(s, vec![], reqwest::Client::new()).unwrap();
    assert!(verifier.verify(&token("seed", PRIMARY)).await.is_ok());
    assert!(
        verifier.verify(&token("seed", SECONDARY)).await.is_err(),
        "a signature by another key under the same kid"
    );
}

#[tokio::test]
async fn an_unreachable_jwks_leaves_known_keys_working() {
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    let verifier = TokenVerifier::new(
        settings(Some(jwks.url.clone()), Duration::ZERO),
        vec![],
        reqwest::Client::new(),
    )
    .unwrap();
    verifier.refresh().await.unwrap();
    // Point a second verifier at a dead port: refresh fails, nothing panics, unknown stays unknown.
    let dead = TokenVerifier::new(
        settings(Some("http://127.0.0.1:1/jwks".into()), Duration::ZERO),
        vec![],
        reqwest::Client::new(),
    )
    .unwrap();
    assert!(dead.refresh().await.is_err());
    assert!(dead.verify(&token("k1", PRIMARY)).await.is_err());
    assert!(verifier.verify(&token("k1", PRIMARY)).await.is_ok());
}

#[tokio::test]
async fn a_failed_fetch_does_not_hold_back_the_next_refresh_for_the_whole_interval() {
    // The verifier started before the users service could answer: its first fetch failed.
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    jwks.failing.store(true, Ordering::SeqCst);
    let verifier = verifier_of(&jwks, Duration::from_secs(60));
    assert!(verifier.refresh().await.is_err());
    jwks.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        verifier.verify(&token("k1", PRIMARY)).await.is_ok(),
        "retried well within the 60 s interval"
    );

    // The control: after a successful fetch the interval holds.
    jwks.serve(vec![]);
    verifier.refresh().await.unwrap();
    jwks.serve(vec![jwk("k2", SECONDARY)]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(verifier.verify(&token("k2", SECONDARY)).await.is_err());
}

#[tokio::test]
async fn a_token_whose_key_could_not_be_fetched_is_answered_unavailable_not_unauthenticated() {
    // The users service cannot answer yet: this verifier has never held a key.
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    jwks.failing.store(true, Ordering::SeqCst);
    let verifier = verifier_of(&jwks, Duration::from_secs(60));
    let valid = token("k1", PRIMARY);
    let refused = verifier.verify(&valid).await.unwrap_err();
    assert!(
        matches!(&refused, TokenError::KeysUnavailable(kid) if kid == "k1"),
        "{refused:?}"
    );
    let problem = common::problem::Problem::from(refused);
    assert_eq!(
        (problem.status, problem.code.as_str(), problem.retry_after),
        (503, "service_unavailable", Some(1)),
        "a client told 401 would sign its user out"
    );
    // Within the back-off after the failure, no new fetch is made, and the answer stays 503.
    let fetches = jwks.fetches.load(Ordering::SeqCst);
    assert!(matches!(
        verifier.verify(&valid).await,
        Err(TokenError::KeysUnavailable(_))
    ));
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), fetches);

    // Once the key set can be fetched, the same token verifies, and a kid the set does not
    // name is invalid: the set is known to be current.
    jwks.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(verifier.verify(&valid).await.is_ok());
    assert!(matches!(
        verifier.verify(&token("forged", SECONDARY)).await,
        Err(TokenError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_token_that_verified_is_refused_once_it_expires() {
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    let verifier = verifier_of(&jwks, Duration::from_secs(60));
    verifier.refresh().await.unwrap();
    // Expired four seconds ago: still within the five seconds of leeway, for two more seconds.
    let token = token_expiring_in(-4, "k1", PRIMARY);
    assert!(verifier.verify(&token).await.is_ok());
    assert!(
        verifier.verify(&token).await.is_ok(),
        "and again, remembered"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(matches!(
        verifier.verify(&token).await,
        Err(TokenError::Expired)
    ));
}

#[tokio::test]
async fn a_token_that_verified_does_not_vouch_for_another_signature_or_other_claims() {
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    let verifier = verifier_of(&jwks, Duration::from_secs(60));
    verifier.refresh().await.unwrap();
    let genuine = token("k1", PRIMARY);
    let claims = verifier.verify(&genuine).await.unwrap();
    let (signed, signature) = genuine.rsplit_once('.').unwrap();
    // The signature of another token by the same key, on these claims.
    let other_signature = token("k1", PRIMARY).rsplit_once('.').unwrap().1.to_owned();
    let forged = format!("{signed}.{other_signature}");
    assert!(matches!(
        verifier.verify(&forged).await,
        Err(TokenError::Invalid(_))
    ));
    // These claims with another subject, under the genuine signature.
    let (header, payload) = signed.split_once('.').unwrap();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut body: serde_json::Value =
        serde_json::from_slice(&engine.decode(payload).unwrap()).unwrap();
    body["sub"] = json!(uuid::Uuid::now_v7().to_string());
    let altered = format!(
        "{header}.{}.{signature}",
        engine.encode(serde_json::to_vec(&body).unwrap())
    );
    assert!(matches!(
        verifier.verify(&altered).await,
        Err(TokenError::Invalid(_))
    ));
    assert_eq!(verifier.verify(&genuine).await.unwrap(), claims);
}

#[tokio::test]
async fn a_verifier_holds_keys_once_a_fetch_succeeded_and_asks_for_them_at_most_once_a_second() {
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    jwks.failing.store(true, Ordering::SeqCst);
    let verifier = verifier_of(&jwks, Duration::from_secs(60));
    assert!(!verifier.holds_keys());
    assert!(!verifier.ensure_keys().await, "users cannot answer yet");
    let fetches = jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(fetches, 1);
    assert!(!verifier.ensure_keys().await);
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        fetches,
        "a second probe within the back-off costs users nothing"
    );

    jwks.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(verifier.ensure_keys().await);
    // Held from then on, even when a later refresh fails: the keys fetched still verify.
    jwks.failing.store(true, Ordering::SeqCst);
    assert!(verifier.refresh().await.is_err());
    assert!(verifier.holds_keys());
    assert!(verifier.verify(&token("k1", PRIMARY)).await.is_ok());

    // Keys from configuration are held from the start.
    let mut s = settings(None, Duration::ZERO);
    s.static_keys = vec![("seed".into(), PRIMARY_PUBLIC.into())];
    let configured = TokenVerifier::new(s, vec![], reqwest::Client::new()).unwrap();
    assert!(configured.holds_keys());
}

#[tokio::test]
async fn the_refresher_retries_a_failed_first_fetch_within_a_moment_not_after_seconds() {
    // A replica started at the same moment as users: its first fetch fails.
    let jwks = JwksServer::start(vec![jwk("k1", PRIMARY)]).await;
    jwks.failing.store(true, Ordering::SeqCst);
    let verifier = Arc::new(verifier_of(&jwks, Duration::from_secs(60)));
    verifier.spawn_refresher();
    while jwks.fetches.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    jwks.failing.store(false, Ordering::SeqCst);
    let answered = std::time::Instant::now();
    while !verifier.holds_keys() {
        assert!(
            answered.elapsed() < Duration::from_secs(2),
            "no key set 2 s after users answered (the steady retry is 5 s)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(verifier.verify(&token("k1", PRIMARY)).await.is_ok());
}

#[tokio::test]
async fn a_jwks_fetch_that_is_never_answered_gives_up_and_does_not_hold_up_tokens() {
    // A users service that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let verifier = Arc::new(
        TokenVerifier::new(
            settings(Some(url), Duration::from_secs(60)),
            vec![],
            reqwest::Client::new(),
        )
        .unwrap(),
    );
    // The background refresh is waiting for its answer...
    let refreshing = tokio::spawn({
        let verifier = Arc::clone(&verifier);
        async move { verifier.refresh().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...while a token arrives, whose unknown kid waits for the same lock: it is answered
    // 503 once the fetch gives up, not held for as long as the connection lives.
    let verified = tokio::time::timeout(
        Duration::from_secs(5),
        verifier.verify(&token("k1", PRIMARY)),
    )
    .await;
    assert!(
        matches!(verified, Ok(Err(TokenError::KeysUnavailable(_)))),
        "{verified:?}"
    );
    let refreshed = tokio::time::timeout(Duration::from_secs(1), refreshing).await;
    assert!(matches!(refreshed, Ok(Ok(Err(_)))), "the fetch gave up");
}
