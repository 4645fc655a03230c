//! Spawning the users service for a test, and the requests every test makes.

use common::config::Env;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use test_support::TestDatabase;
pub use test_support::http::{expect_json, expect_problem, expect_status};
use users::{Application, Settings};
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    /// A superuser pool on the test database, for setup and assertions behind the API.
    pub admin_pool: PgPool,
    /// Starts this instance's two-step shutdown.
    pub drain: common::service::Drain,
    pub server: actix_web::dev::ServerHandle,
    /// This instance's Redis key prefix.
    pub redis_prefix: String,
}

pub struct TestUser {
    pub id: Uuid,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// Settings for a test instance on `db`, with the test keys; `customise` may change them.
pub fn test_settings(db: &TestDatabase) -> Settings {
    let env = Env::from_pairs([
        ("PORT", "0".to_owned()),
        ("HTTP_WORKERS", "1".to_owned()),
        ("DATABASE_URL", db.url_for("users")),
        ("REDIS_KEY_PREFIX", test_support::redis_prefix()),
        // Tests sign up many accounts from one address; the quotas have their own tests.
        ("RATE_LIMIT_SIGNUP_IP", "1000/60".to_owned()),
        ("JWT_KEYS_DIR", test_support::keys::private_dir()),
        ("JWT_SIGNING_KID", "primary".to_owned()),
        ("MAX_JSON_BODY_BYTES", "16384".to_owned()),
        ("SHUTDOWN_DELAY_SECS", "1".to_owned()),
    ]);
    Settings::from_env(&env).expect("test settings are valid")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDatabase::new().await;
    let mut settings = test_settings(&db);
    customise(&mut settings);
    let redis_prefix = settings.base.redis.key_prefix.clone();
    let app = Application::build(settings)
        .await
        .expect("the users service builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (drain, server) = (app.drain(), app.handle());
    tokio::spawn(app.run_until_stopped());
    let admin_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.admin_options())
        .await
        .unwrap();
    TestApp {
        address,
        client: reqwest::Client::new(),
        db,
        admin_pool,
        drain,
        server,
        redis_prefix,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.request(Method::PUT, path, token, None).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.request(Method::DELETE, path, token, None).await
    }

    /// The followee-set version published in Redis for `id`, if any (ADR 0017).
    pub async fn published_graph_version(&self, id: Uuid) -> Option<i64> {
        test_support::redis::get(&common::graph_versions::key(&self.redis_prefix, id))
            .await
            .and_then(|v| common::graph_versions::parse(&v))
    }

    /// The contact version published in Redis for `id`, if any (ADR 0022).
    pub async fn published_contact_version(&self, id: Uuid) -> Option<i64> {
        test_support::redis::get(&common::graph_versions::contact_key(&self.redis_prefix, id))
            .await
            .and_then(|v| common::graph_versions::parse(&v))
    }

    /// A service token for `client` (`posts` or `messaging`, with its development secret): the
    /// answer of `POST /v1/auth/service-token`, asserting 200.
    pub async fn service_token(&self, client: &str) -> Value {
        let credentials =
            json!({"client_id": client, "client_secret": format!("{client}-dev-secret")});
        let response = self.post("/v1/auth/service-token", None, credentials).await;
        expect_json(response, StatusCode::OK).await
    }

    /// Registers `username` (password `password-<username>`), asserting 201.
    pub async fn register(&self, username: &str) -> TestUser {
        let password = format!("password-{username}");
        let response = self
            .post(
                "/v1/auth/register",
                None,
                json!({"username": username, "email": format!("{username}@example.com"), "password": password}),
            )
            .await;
        let body = expect_json(response, StatusCode::CREATED).await;
        TestUser {
            id: body["user"]["id"].as_str().unwrap().parse().unwrap(),

            password,
            access_token: body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers a user and makes them admin directly in the database (setup, not under test),
    /// then signs in again so the token carries the role.
    pub async fn register_admin(&self, username: &str) -> TestUser {
        let mut user = self.register(username).await;
        sqlx::query("UPDATE users.accounts SET role = 'admin' WHERE id = $1")
            .bind(user.id)
            .execute(&self.admin_pool)
            .await
            .unwrap();
        let body = expect_json(
            self.post(
                "/v1/auth/login",
                None,
                json!({"login": username, "password": user.password}),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        user.access_token = body["access_token"].as_str().unwrap().to_owned();
        user.refresh_token = body["refresh_token"].as_str().unwrap().to_owned();
        user
    }
}
