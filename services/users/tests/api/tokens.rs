//! Access tokens: what is signed, what is published, and every forgery refused with 401.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::tokens::{self, valid};

fn claims_for(user: &TestUser, overrides: Value) -> Value {
    tokens::claims(user.id, overrides)
}

#[tokio::test]
async fn a_token_signed_in_the_test_like_the_service_does_is_accepted() {
    // The control for the attack table below: only the attacked property differs.
    let app = spawn_app().await;
    let user = app.register("control").await;
    let token = valid(&claims_for(&user, json!({})));
    expect_json(app.get("/v1/users/me", Some(&token)).await, StatusCode::OK).await;
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused_with_401() {
    let app = spawn_app().await;
    let user = app.register("victim").await;
    let cases = tokens::forgeries(user.id, Some(&user.refresh_token));
    for (why, token) in cases {
        let response = app.get("/v1/users/me", Some(&token)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{why}");
        assert!(response.headers().contains_key("www-authenticate"), "{why}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["code"] == "unauthenticated" || body["code"] == "token_expired",
            "{why}: {body}"
        );
    }
}

#[tokio::test]
async fn an_expired_token_says_so_so_that_clients_refresh() {
    let app = spawn_app().await;
    let user = app.register("late").await;
    let now = chrono::Utc::now().timestamp();
    let token = valid(&claims_for(
        &user,
        json!({"exp": now - 120, "iat": now - 1000, "nbf": now - 1000}),
    ));
    expect_problem(
        app.get("/v1/users/me", Some(&token)).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_header_is_a_401() {
    let app = spawn_app().await;
    expect_problem(
        app.get("/v1/users/me", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    let basic = app
        .client
        .get(app.url("/v1/users/me"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    expect_problem(basic, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn a_bad_token_on_an_endpoint_that_allows_anonymous_callers_is_still_a_401() {
    let app = spawn_app().await;
    let user = app.register("anon").await;
    let path = format!("/v1/users/{}", user.id);
    expect_json(app.get(&path, None).await, StatusCode::OK).await;
    expect_problem(
        app.get(&path, Some("not.a.token")).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn the_jwks_publishes_every_loaded_key_and_the_access_token_names_the_signing_one() {
    let app = spawn_app().await;
    let jwks = expect_json(
        app.get("/.well-known/jwks.json", None).await,
        StatusCode::OK,
    )
    .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec!["primary", "secondary"]);
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kty"] == "RSA" && k["alg"] == "RS256" && k.get("d").is_none())
    );

    let user = app.register("kid").await;
    let header = jsonwebtoken::decode_header(&user.access_token).unwrap();
    assert_eq!(
        (header.alg, header.kid.as_deref(), header.typ.as_deref()),
        (Algorithm::RS256, Some("primary"), Some("at+jwt"))
    );
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(user.access_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    for claim in ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "role"] {
        assert!(payload.get(claim).is_some(), "claim {claim} is present");
    }
    assert!(payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap() <= 900);
}

#[tokio::test]
async fn services_get_tokens_for_internal_endpoints_and_users_are_refused_there() {
    let app = spawn_app().await;
    let user = app.register("target").await;
    let path = format!("/internal/v1/users/{}", user.id);

    let service = app.service_token("posts").await;
    let standing = expect_json(
        app.get(&path, service["access_token"].as_str()).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(standing["suspended"], false);

    expect_problem(
        app.get(&path, Some(&user.access_token)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        app.get(&path, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    // A service token is no user token either.
    expect_problem(
        app.get("/v1/users/me", service["access_token"].as_str())
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;

    let wrong = app
        .post(
            "/v1/auth/service-token",
            None,
            json!({"client_id": "posts", "client_secret": "guess"}),
        )
        .await;
    expect_problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let unknown = app
        .post(
            "/v1/auth/service-token",
            None,
            json!({"client_id": "mallory", "client_secret": "x"}),
        )
        .await;
    expect_problem(unknown, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[tokio::test]
async fn contactability_tells_unknown_from_unavailable_but_not_block_from_suspension() {
    let app = spawn_app().await;
    let admin = app.register_admin("root").await;
    let (sender, friend, blocker, blocked, suspended) = (
        app.register("sender").await,
        app.register("friend").await,
        app.register("blocker").await,
        app.register("blocked").await,
        app.register("suspended").await,
    );
    expect_status(
        app.put(
            &format!("/v1/users/{}/block", sender.id),
            Some(&blocker.access_token),
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect_status(
        app.put(
            &format!("/v1/users/{}/block", blocked.id),
            Some(&sender.access_token),
        )
        .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let suspend = app
        .post(
            &format!("/v1/admin/users/{}/suspend", suspended.id),
            Some(&admin.access_token),
            json!({}),
        )
        .await;
    expect_status(suspend, StatusCode::NO_CONTENT).await;
    let service = app.service_token("messaging").await;
    let unknown = uuid::Uuid::now_v7();
    let body = json!({"user_ids": [friend.id, blocker.id, blocked.id, suspended.id, unknown]});
    let path = format!("/internal/v1/users/{}/contactability", sender.id);
    let answer = expect_json(
        app.post(&path, service["access_token"].as_str(), body.clone())
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["suspended"], false);
    assert_eq!(answer["unknown"], json!([unknown]));
    let mut unavailable: Vec<String> = answer["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    unavailable.sort();
    let mut expected = vec![
        blocker.id.to_string(),
        blocked.id.to_string(),
        suspended.id.to_string(),
    ];
    expected.sort();
    assert_eq!(unavailable, expected);
    // The contact versions read with the answer (ADR 0022): a block raised both of its ends,
    // the suspension its account; each is published too, the friend's by this very answer.
    let expected_versions = [
        (sender.id, 2),
        (friend.id, 0),
        (blocker.id, 1),
        (blocked.id, 1),
        (suspended.id, 1),
    ];
    assert_eq!(
        answer["versions"],
        json!(
            expected_versions
                .iter()
                .map(|(id, v)| (id.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        ),
        "no version for the unknown id"
    );
    for (id, version) in expected_versions {
        // Written after the answer, not before it.
        let mut published = None;
        for _ in 0..100 {
            published = app.published_contact_version(id).await;
            if published == Some(version) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(published, Some(version));
    }
    // Lifting the block raises both ends before the 204; blocking again changes nothing.
    let blocker_says = async |method| {
        let path = format!("/v1/users/{}/block", sender.id);
        let response = app
            .request(method, &path, Some(&blocker.access_token), None)
            .await;
        expect_status(response, StatusCode::NO_CONTENT).await;
    };
    blocker_says(reqwest::Method::PUT).await;
    blocker_says(reqwest::Method::DELETE).await;
    assert_eq!(app.published_contact_version(sender.id).await, Some(3));
    assert_eq!(app.published_contact_version(blocker.id).await, Some(2));
    expect_problem(
        app.post(&path, Some(&sender.access_token), body).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // The sender's own standing comes from the same statement as the others': an unknown
    // sender is 404, and a suspended one is told so, also when it names itself.
    let token = service["access_token"].as_str();
    let nobody = format!("/internal/v1/users/{unknown}/contactability");
    expect_problem(
        app.post(&nobody, token, json!({"user_ids": [friend.id]}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let as_suspended = format!("/internal/v1/users/{}/contactability", suspended.id);
    let answer = expect_json(
        app.post(
            &as_suspended,
            token,
            json!({"user_ids": [friend.id, suspended.id]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["suspended"], true);
    assert_eq!(answer["unknown"], json!([]));
    assert_eq!(answer["unavailable"], json!([suspended.id]));
}

/// What other services ask on their hot paths (a send's contactability, a feed's followee ids
/// and authors) runs on the statement pool (docs/adr/0023), which takes a connection back
/// without a round trip: the calls one after another reuse one connection, idle between them.
#[tokio::test]
async fn the_reads_other_services_ask_for_run_on_the_statement_pool() {
    let app = spawn_app().await;
    let (sender, friend) = (app.register("sender").await, app.register("friend").await);
    let service = app.service_token("messaging").await;
    let contactability = app
        .post(
            &format!("/internal/v1/users/{}/contactability", sender.id),
            service["access_token"].as_str(),
            json!({"user_ids": [friend.id]}),
        )
        .await;
    assert_eq!(
        expect_json(contactability, StatusCode::OK).await["unknown"],
        json!([])
    );
    let ids = app
        .get(&format!("/v1/users/{}/following/ids", sender.id), None)
        .await;
    assert_eq!(expect_json(ids, StatusCode::OK).await["ids"], json!([]));
    let profiles = app.get(&format!("/v1/users?ids={}", friend.id), None).await;
    assert_eq!(
        expect_json(profiles, StatusCode::OK).await["items"][0]["id"],
        json!(friend.id)
    );
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert_eq!(
        test_support::metrics::statement_pool_connections(&metrics),
        (Some(1.0), Some(1.0)),
        "{metrics}"
    );
}
