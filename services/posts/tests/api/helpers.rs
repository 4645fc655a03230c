//! Spawning the users service and the posts service for a test.

use common::config::Env;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::TestDatabase;

pub struct TestApp {
    pub address: String,
    pub users_address: String,
    pub client: reqwest::Client,
    /// Kept alive for the test: dropping it drops the database.
    pub _db: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    let db = TestDatabase::new().await;
    let users_settings = users::Settings::from_env(&Env::from_pairs([
        ("PORT", "0".to_owned()),
        ("HTTP_WORKERS", "1".to_owned()),
        ("DATABASE_URL", db.url_for("users")),
        ("JWT_KEYS_DIR", test_support::keys::private_dir()),
        ("JWT_SIGNING_KID", "primary".to_owned()),
    ]))
    .unwrap();
    let users_app = users::Application::build(users_settings).await.unwrap();
    let users_address = format!("http://127.0.0.1:{}", users_app.port());
    tokio::spawn(users_app.run_until_stopped());

    let settings = posts::Settings::from_env(&Env::from_pairs([
        ("PORT", "0".to_owned()),
        ("HTTP_WORKERS", "1".to_owned()),
        ("DATABASE_URL", db.url_for("posts")),
        ("REDIS_KEY_PREFIX", test_support::redis_prefix()),
        ("JWKS_URL", format!("{users_address}/.well-known/jwks.json")),
    ]))
    .unwrap();
    let app = posts::Application::build(settings).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        users_address,
        client: reqwest::Client::new(),
        _db: db,
    }
}

impl TestApp {
    /// Registers a user with the users service; returns its id and access token.
    pub async fn register(&self, username: &str) -> (String, String) {
        let response = self
            .client
            .post(format!("{}/v1/auth/register", self.users_address))
            .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": "password-123"}))
            .send()
            .await
            .unwrap();
        let body = expect_json(response, StatusCode::CREATED).await;
        (
            body["user"]["id"].as_str().unwrap().to_owned(),
            body["access_token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

pub async fn expect_json(response: reqwest::Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}
