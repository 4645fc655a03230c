//! Spawning the users service and two messaging replicas for a test.

use common::config::Env;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;
use test_support::TestDatabase;
pub use test_support::http::{expect_json, expect_problem, expect_status};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub struct TestApp {
    /// Replica A.
    pub address: String,
    /// Replica B: same database, same Redis channel.
    pub address_b: String,
    pub users_address: String,
    pub client: reqwest::Client,
    /// Kept alive for the test: dropping it drops the database.
    pub _db: TestDatabase,
    /// A superuser pool on the test database, for setup and assertions behind the API.
    pub admin_pool: PgPool,
    replica_a: actix_web::dev::ServerHandle,
    replica_a_env: Vec<(String, String)>,
}

pub struct TestUser {
    pub id: Uuid,
    pub token: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[], &[]).await
}

/// Spawns the services with extra settings for users and for the messaging replicas.
pub async fn spawn_app_with(
    users_overrides: &[(&str, &str)],
    overrides: &[(&str, &str)],
) -> TestApp {
    let db = TestDatabase::new().await;
    // The first replica's port is chosen first: the users service's outbox delivers there.
    let first_port = test_support::free_port();
    // One prefix for all, as deployed: messaging reads the versions users publishes (ADR 0022).
    let prefix = test_support::redis_prefix();
    let mut users_env = vec![
        ("PORT", "0".to_owned()),
        ("HTTP_WORKERS", "1".to_owned()),
        ("DATABASE_URL", db.url_for("users")),
        ("REDIS_KEY_PREFIX", prefix.clone()),
        ("RATE_LIMIT_SIGNUP_IP", "1000/60".to_owned()),
        ("MESSAGING_URL", format!("http://127.0.0.1:{first_port}")),
        ("OUTBOX_POLL_MS", "100".to_owned()),
        ("OUTBOX_RETRY_BASE_MS", "100".to_owned()),
        ("JWT_KEYS_DIR", test_support::keys::private_dir()),
        ("JWT_SIGNING_KID", "primary".to_owned()),
    ];
    users_env.extend(users_overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let users_app =
        users::Application::build(users::Settings::from_env(&Env::from_pairs(users_env)).unwrap())
            .await
            .unwrap();
    let users_address = format!("http://127.0.0.1:{}", users_app.port());
    tokio::spawn(users_app.run_until_stopped());

    let mut addresses = Vec::new();
    let mut replica_a = None;
    for replica in 0..2 {
        let port = if replica == 0 { first_port } else { 0 };
        let mut env = vec![
            ("PORT", port.to_string()),
            ("HTTP_WORKERS", "1".to_owned()),
            ("DATABASE_URL", db.url_for("messaging")),
            ("REDIS_KEY_PREFIX", prefix.clone()),
            ("JWKS_URL", format!("{users_address}/.well-known/jwks.json")),
            ("USERS_BASE_URL", users_address.clone()),
            ("MAX_JSON_BODY_BYTES", "32768".to_owned()),
        ];
        env.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let (address, handle) = start_replica(env.clone()).await;
        addresses.push(address);
        if replica == 0 {
            let env: Vec<(String, String)> =
                env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            replica_a = Some((env, handle));
        }
    }
    let (replica_a_env, replica_a) = replica_a.unwrap();
    // Both replicas subscribe to events in the background; give them a moment.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let admin_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.admin_options())
        .await
        .unwrap();
    let address_b = addresses.pop().unwrap();
    let address = addresses.pop().unwrap();
    TestApp {
        address,
        address_b,
        users_address,
        client: reqwest::Client::new(),
        _db: db,
        admin_pool,
        replica_a,
        replica_a_env,
    }
}

async fn start_replica<K: Into<String>>(
    env: Vec<(K, String)>,
) -> (String, actix_web::dev::ServerHandle) {
    let app = messaging::Application::build(
        messaging::Settings::from_env(&Env::from_pairs(env)).unwrap(),
    )
    .await
    .unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    (address, handle)
}

impl TestApp {
    /// Stops replica A, the one the users service's outbox delivers to (its port refuses
    /// connections until [`Self::restart_a`]).
    pub async fn stop_a(&self) {
        self.replica_a.stop(false).await;
    }

    /// Starts replica A again on the same port and database.
    pub async fn restart_a(&mut self) {
        self.replica_a = start_replica(self.replica_a_env.clone()).await.1;
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    /// `who` leaves conversation `id`.
    pub async fn leave(&self, who: &TestUser, id: &str) -> reqwest::Response {
        let path = format!("/v1/conversations/{id}/participants/{}", who.id);
        self.request(Method::DELETE, &path, Some(&who.token), None)
            .await
    }

    /// A GET to the second replica.
    pub async fn get_b(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address_b))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn users_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.users_address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub async fn register(&self, username: &str) -> TestUser {
        let body = json!({"username": username, "email": format!("{username}@example.com"), "password": "password-123"});
        let body = expect_json(
            self.users_call(Method::POST, "/v1/auth/register", None, Some(body))
                .await,
            StatusCode::CREATED,
        )
        .await;
        TestUser {
            id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            token: body["access_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn block(&self, who: &TestUser, whom: &TestUser) {
        self.set_block(who, whom, Method::PUT).await;
    }

    pub async fn unblock(&self, who: &TestUser, whom: &TestUser) {
        self.set_block(who, whom, Method::DELETE).await;
    }

    async fn set_block(&self, who: &TestUser, whom: &TestUser, method: Method) {
        let response = self
            .users_call(
                method,
                &format!("/v1/users/{}/block", whom.id),
                Some(&who.token),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// Suspends a user (setup, straight in the users schema).
    pub async fn suspend(&self, user: &TestUser) {
        sqlx::query("UPDATE users.accounts SET suspended_at = now() WHERE id = $1")
            .bind(user.id)
            .execute(&self.admin_pool)
            .await
            .unwrap();
    }

    /// Starts a conversation, asserting 201; returns its id once both replicas have delivered
    /// its `participants.changed`. Events reach sockets through each replica's Redis
    /// subscription, which may lag the answer (docs/adr/0011): without this wait, a socket a
    /// test opens next might or might not receive that event before the one the test awaits.
    pub async fn conversation(&self, creator: &TestUser, others: &[&TestUser]) -> String {
        let mut witnesses = [
            connect(&self.address, &creator.token).await,
            connect(&self.address_b, &creator.token).await,
        ];
        let ids: Vec<Uuid> = others.iter().map(|u| u.id).collect();
        let body = expect_json(
            self.post(
                "/v1/conversations",
                &creator.token,
                json!({"participant_ids": ids}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        let id = body["id"].as_str().unwrap().to_owned();
        for witness in &mut witnesses {
            loop {
                let event = next_event(witness).await;
                if event["type"] == "participants.changed" && event["conversation_id"] == id {
                    break;
                }
            }
        }
        id
    }

    /// Sends a message, asserting 201.
    pub async fn send(&self, user: &TestUser, conversation: &str, body: &str) -> Value {
        let path = format!("/v1/conversations/{conversation}/messages");
        expect_json(
            self.post(&path, &user.token, json!({"body": body})).await,
            StatusCode::CREATED,
        )
        .await
    }
}

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/v1/stream` on a replica with the token in the Authorization header.
pub async fn connect(address: &str, token: &str) -> Socket {
    let mut request = format!("{}/v1/stream", address.replace("http", "ws"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

/// The next JSON event, skipping pings; fails after two seconds.
pub async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(2), socket.next())
            .await
            .expect("an event within 2 s");
        match frame.unwrap().unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}
