//! Spawning the users service and the posts service for a test, and the requests tests make.

use common::config::Env;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use test_support::TestDatabase;
pub use test_support::http::{expect_json, expect_problem, expect_status};
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    pub users_address: String,
    pub client: reqwest::Client,
    /// Kept alive for the test: dropping it drops the database.
    pub _db: TestDatabase,
    /// A superuser pool on the test database, for setup and assertions behind the API.
    pub admin_pool: PgPool,
    pub users_server: actix_web::dev::ServerHandle,
    /// The posts service's handle, and the settings it was started with (to restart it).
    pub posts_server: actix_web::dev::ServerHandle,
    posts_env: Vec<(&'static str, String)>,
    /// Present when spawned with [`spawn_behind_proxies`].
    pub proxies: Option<Proxies>,
    /// The Redis key prefix both services use.
    pub redis_prefix: String,
}

/// Fault proxies between the posts service and each of its dependencies.
pub struct Proxies {
    pub postgres: faultproxy::FaultProxy,
    pub redis: faultproxy::FaultProxy,
    pub users: faultproxy::FaultProxy,
}

pub struct TestUser {
    pub id: Uuid,
    pub token: String,
}

/// Every span finished in this test process, for the tests that look at traces. The subscriber
/// is global, so it is installed once, before any service starts.
pub fn finished_spans() -> &'static opentelemetry_sdk::trace::InMemorySpanExporter {
    static SPANS: std::sync::OnceLock<opentelemetry_sdk::trace::InMemorySpanExporter> =
        std::sync::OnceLock::new();
    SPANS.get_or_init(|| {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let settings = common::telemetry::TelemetrySettings {
            format: common::telemetry::LogFormat::Pretty,
            filter: "warn,posts=info,users=info,common=info".to_owned(),
            otlp_endpoint: None,
            service_name: None,
        };
        std::mem::forget(common::telemetry::init_with_exporter(
            &settings,
            exporter.clone(),
        ));
        exporter
    })
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns the services with extra posts-service settings.
pub async fn spawn_app_with(overrides: &[(&'static str, &str)]) -> TestApp {
    spawn(overrides, false).await
}

/// Spawns the services with posts reaching PostgreSQL, Redis and the users service through
/// fault proxies (the users service itself connects directly).
pub async fn spawn_behind_proxies(overrides: &[(&'static str, &str)]) -> TestApp {
    spawn(overrides, true).await
}

async fn spawn(overrides: &[(&'static str, &str)], proxied: bool) -> TestApp {
    finished_spans();
    let db = TestDatabase::new().await;
    // One prefix for both services, as in a deployment: posts reads the followee-set versions
    // users publishes (docs/adr/0017-published-graph-versions.md).
    let redis_prefix = test_support::redis_prefix();
    // The posts port is chosen first, so that the users service's outbox can be pointed at it
    // and posts can be stopped and started again at the same address.
    let posts_port = test_support::free_port();
    let users_settings = users::Settings::from_env(&Env::from_pairs([
        ("PORT", "0".to_owned()),
        ("HTTP_WORKERS", "1".to_owned()),
        ("DATABASE_URL", db.url_for("users")),
        ("REDIS_KEY_PREFIX", redis_prefix.clone()),
        ("RATE_LIMIT_SIGNUP_IP", "1000/60".to_owned()),
        ("JWT_KEYS_DIR", test_support::keys::private_dir()),
        ("JWT_SIGNING_KID", "primary".to_owned()),
        ("POSTS_URL", format!("http://127.0.0.1:{posts_port}")),
        ("OUTBOX_POLL_MS", "100".to_owned()),
        ("OUTBOX_RETRY_BASE_MS", "100".to_owned()),
    ]))
    .unwrap();
    let users_app = users::Application::build(users_settings).await.unwrap();
    let users_port = users_app.port();
    let users_address = format!("http://127.0.0.1:{users_port}");
    let users_server = users_app.handle();
    tokio::spawn(users_app.run_until_stopped());
    let proxies = if proxied {
        let start = |port: u16| faultproxy::FaultProxy::start(([127, 0, 0, 1], port).into());
        Some(Proxies {
            postgres: start(5432).await.unwrap(),
            redis: start(6379).await.unwrap(),
            users: start(users_port).await.unwrap(),
        })
    } else {
        None
    };
    // What posts is given: the dependencies themselves, or the proxies in front of them.
    let (posts_db, redis_url, users_for_posts) = match &proxies {
        None => (
            db.url_for("posts"),
            "redis://127.0.0.1:6379".to_owned(),
            users_address.clone(),
        ),
        Some(p) => (
            db.url_for_via("posts", p.postgres.addr()),
            format!("redis://{}", p.redis.addr()),
            format!("http://{}", p.users.addr()),
        ),
    };

    let mut env = vec![
        ("PORT", posts_port.to_string()),
        ("HTTP_WORKERS", "1".to_owned()),
        ("DATABASE_URL", posts_db),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", redis_prefix.clone()),
        (
            "JWKS_URL",
            format!("{users_for_posts}/.well-known/jwks.json"),
        ),
        ("USERS_BASE_URL", users_for_posts),
        ("USERS_TIMEOUT_MS", "1000".to_owned()),
        ("MAX_JSON_BODY_BYTES", "16384".to_owned()),
    ];
    env.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let posts_server = start_posts(&env).await;
    let address = format!("http://127.0.0.1:{posts_port}");
    let admin_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.admin_options())
        .await
        .unwrap();
    TestApp {
        address,
        users_address,
        client: reqwest::Client::new(),
        _db: db,
        admin_pool,
        users_server,
        posts_server,
        posts_env: env,
        proxies,
        redis_prefix,
    }
}

async fn start_posts(env: &[(&'static str, String)]) -> actix_web::dev::ServerHandle {
    let settings = posts::Settings::from_env(&Env::from_pairs(env.to_vec())).unwrap();
    let app = posts::Application::build(settings).await.unwrap();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    handle
}

impl TestApp {
    /// Removes the followee-set version users published for `user`, as its expiry would: the
    /// next feed read has to ask users (docs/adr/0017-published-graph-versions.md).
    pub async fn forget_published_graph_version(&self, user: &TestUser) {
        test_support::redis::del(&common::graph_versions::key(&self.redis_prefix, user.id)).await;
    }

    /// Stops the posts service (its port refuses connections until [`Self::restart_posts`]).
    pub async fn stop_posts(&self) {
        self.posts_server.stop(false).await;
    }

    /// Starts the posts service again on the same port and database.
    pub async fn restart_posts(&mut self) {
        self.posts_server = start_posts(&self.posts_env).await;
    }

    /// Starts another posts process on the same database, Redis and users service, as a
    /// second replica behind a load balancer; returns its address.
    pub async fn spawn_replica(&self) -> String {
        let mut env = self.posts_env.clone();
        env.retain(|(key, _)| *key != "PORT");
        env.push(("PORT", "0".to_owned()));
        let settings = posts::Settings::from_env(&Env::from_pairs(env)).unwrap();
        let app = posts::Application::build(settings).await.unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        address
    }

    /// Rewrites a post's text straight in the posts schema, as no request of the service would:
    /// a read that still shows the old text did not ask PostgreSQL.
    pub async fn set_text_behind_the_service(&self, id: &Value, text: &str) {
        let id: Uuid = id.as_str().unwrap().parse().unwrap();
        sqlx::query("UPDATE posts.posts SET text = $2 WHERE id = $1")
            .bind(id)
            .bind(text)
            .execute(&self.admin_pool)
            .await
            .unwrap();
    }

    /// Writes a post straight in the posts schema, `minutes_ago`, and moves its author's head
    /// as the service would; no process hears of it.
    pub async fn post_behind_the_service(&self, author: &TestUser, text: &str, minutes_ago: i64) {
        sqlx::query(
            "WITH post AS (
                 INSERT INTO posts.posts (id, author_id, text, created_at)
                 VALUES ($1, $2, $3, now() - make_interval(mins => $4::int))
                 RETURNING author_id, created_at
             )
             INSERT INTO posts.author_heads AS h (author_id, last_post_at, last_root_post_at)
             SELECT author_id, created_at, created_at FROM post
             ON CONFLICT (author_id) DO UPDATE SET
                 last_post_at = GREATEST(h.last_post_at, EXCLUDED.last_post_at),
                 last_root_post_at = GREATEST(h.last_root_post_at, EXCLUDED.last_root_post_at)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(author.id)
        .bind(text)
        .bind(minutes_ago as i32)
        .execute(&self.admin_pool)
        .await
        .unwrap();
    }

    /// Deletes `user`'s account through the users service, asserting 204; posts hears of it
    /// through the users service's outbox.
    pub async fn delete_account(&self, user: &TestUser) {
        let deleted = self
            .users_call(
                Method::DELETE,
                "/v1/users/me",
                Some(&user.token),
                Some(json!({"password": "password-123"})),
            )
            .await;
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
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

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        self.request(Method::GET, path, token, None).await
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

    /// Registers a user with the users service.
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

    /// Gives `user` a role (setup, straight in the users schema) and a token that carries it.
    pub async fn with_role(&self, username: &str, role: &str) -> TestUser {
        let user = self.register(username).await;
        sqlx::query("UPDATE users.accounts SET role = $2 WHERE id = $1")
            .bind(user.id)
            .bind(role)
            .execute(&self.admin_pool)
            .await
            .unwrap();
        let body = json!({"login": username, "password": "password-123"});
        let body = expect_json(
            self.users_call(Method::POST, "/v1/auth/login", None, Some(body))
                .await,
            StatusCode::OK,
        )
        .await;
        TestUser {
            id: user.id,
            token: body["access_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn follow(&self, who: &TestUser, whom: &TestUser) {
        let response = self
            .users_call(
                Method::PUT,
                &format!("/v1/users/{}/follow", whom.id),
                Some(&who.token),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    pub async fn unfollow(&self, who: &TestUser, whom: &TestUser) {
        let response = self
            .users_call(
                Method::DELETE,
                &format!("/v1/users/{}/follow", whom.id),
                Some(&who.token),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// Posts `text` as `user`, asserting 201.
    pub async fn post(&self, user: &TestUser, text: &str) -> Value {
        expect_json(
            self.request(
                Method::POST,
                "/v1/posts",
                Some(&user.token),
                Some(json!({"text": text})),
            )
            .await,
            StatusCode::CREATED,
        )
        .await
    }

    pub async fn reply(&self, user: &TestUser, to: &Value, text: &str) -> Value {
        let body = json!({"text": text, "reply_to": to["id"]});
        expect_json(
            self.request(Method::POST, "/v1/posts", Some(&user.token), Some(body))
                .await,
            StatusCode::CREATED,
        )
        .await
    }

    /// Every page of a list, following `next_cursor`; returns the texts in order.
    pub async fn walk(&self, path: &str, token: Option<&str>, limit: u32) -> Vec<String> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut texts = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{separator}limit={limit}&cursor={c}"),
                None => format!("{path}{separator}limit={limit}"),
            };
            let page = expect_json(self.get(&url, token).await, StatusCode::OK).await;
            texts.extend(texts_of(&page));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return texts,
            }
        }
    }
}

pub fn texts_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_owned())
        .collect()
}
