//! Test support: a fresh database per test, bootstrapped exactly as production is (one schema
//! and one login role per service), unique Redis key prefixes, and RSA keys for tests.
//!
//! The database of a passing test is dropped; a failing test keeps its database for a look.

use common::config::Secret;
use common::db::ServiceRole;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions};
use std::str::FromStr;

pub mod bola;
pub mod openapi;
pub mod tokens;

/// RSA key pairs used only by tests (PKCS#8 private keys, SPKI public keys).
pub mod keys {
    /// The key that signs by default.
    pub const PRIMARY_PRIVATE: &str = include_str!("../keys/private/primary.pem");
    /// Its public half.
    pub const PRIMARY_PUBLIC: &str = include_str!("../keys/public/primary.pem");
    /// A second key, for rotation tests.
    pub const SECONDARY_PRIVATE: &str = include_str!("../keys/private/secondary.pem");
    /// Its public half.
    pub const SECONDARY_PUBLIC: &str = include_str!("../keys/public/secondary.pem");

    /// A directory holding both private keys (`primary.pem`, `secondary.pem`), in the layout
    /// the users service reads from `JWT_KEYS_DIR`.
    pub fn private_dir() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/keys/private").to_owned()
    }
}

/// The services, each with its own schema and role.
pub const SERVICES: [&str; 3] = ["users", "posts", "messaging"];

/// The admin connection used to create test databases: `ADMIN_DATABASE_URL`, by default the
/// local superuser.
pub fn admin_options() -> PgConnectOptions {
    let url = std::env::var("ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    PgConnectOptions::from_str(&url).expect("ADMIN_DATABASE_URL is a PostgreSQL URL")
}

/// The password test roles get when the bootstrap creates them.
pub fn role_password(service: &str) -> Secret {
    Secret::new(format!("{service}_dev_password"))
}

/// A database of its own for one test.
pub struct TestDatabase {
    /// The database name (`test_<uuid>`).
    pub name: String,
    admin: PgConnectOptions,
}

impl TestDatabase {
    /// Creates the database and bootstraps every service's role and schema in it.
    pub async fn new() -> Self {
        Self::with_prefix("test").await
    }

    /// As [`new`](Self::new), named `<prefix>_<uuid>`. `scripts/test` drops leftover `test_`
    /// databases when it starts; a long run beside it (the soak) takes another prefix.
    pub async fn with_prefix(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_options();
        let roles: Vec<ServiceRole> = SERVICES
            .iter()
            .map(|s| ServiceRole::new(s, role_password(s)))
            .collect();
        common::db::bootstrap(&admin, &name, &roles)
            .await
            .expect("bootstrapping the test database");
        Self { name, admin }
    }

    /// The URL a service connects with: its own role, this database.
    pub fn url_for(&self, service: &str) -> String {
        format!(
            "postgres://{service}_svc:{}@{}:{}/{}",
            role_password(service).expose(),
            self.admin.get_host(),
            self.admin.get_port(),
            self.name
        )
    }

    /// As [`url_for`](Self::url_for), reaching PostgreSQL at `addr` instead (a fault proxy).
    pub fn url_for_via(&self, service: &str, addr: std::net::SocketAddr) -> String {
        format!(
            "postgres://{service}_svc:{}@{addr}/{}",
            role_password(service).expose(),
            self.name
        )
    }

    /// Superuser options on this database, for assertions that look behind the API.
    pub fn admin_options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping database {} of the failed test", self.name);
            return;
        }
        let (name, admin) = (self.name.clone(), self.admin.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = admin.connect().await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Assertions on HTTP answers shared by every service's API tests.
pub mod http {
    use reqwest::StatusCode;
    use serde_json::Value;

    /// Asserts the status and returns the JSON body (`Null` when there is none).
    pub async fn expect_json(response: reqwest::Response, status: StatusCode) -> Value {
        let actual = response.status();
        let text = response.text().await.expect("a readable body");
        assert_eq!(actual, status, "unexpected status; body: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Asserts an RFC 9457 problem with this status and code, and returns it.
    pub async fn expect_problem(
        response: reqwest::Response,
        status: StatusCode,
        code: &str,
    ) -> Value {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = expect_json(response, status).await;
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{body}"
        );
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["type"], format!("urn:social:problem:{code}"), "{body}");
        assert_eq!(body["status"], status.as_u16(), "{body}");
        body
    }

    /// Asserts the status, whatever the body.
    pub async fn expect_status(response: reqwest::Response, status: StatusCode) {
        let actual = response.status();
        let text = response.text().await.expect("a readable body");
        assert_eq!(actual, status, "unexpected status; body: {text}");
    }
}

/// Reading a service's `/metrics` (Prometheus text exposition) in tests.
pub mod metrics {
    /// The value of `series` (a metric's name with its labels, exactly as exposed), if exposed.
    pub fn value(exposition: &str, series: &str) -> Option<f64> {
        exposition.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            Some(value.parse().expect("a sample's value is a number"))
        })
    }

    /// `db_statement_pool_connections` (docs/adr/0023) in the states `total` and `idle`.
    pub fn statement_pool_connections(exposition: &str) -> (Option<f64>, Option<f64>) {
        let state = |state: &str| {
            value(
                exposition,
                &format!("db_statement_pool_connections{{state=\"{state}\"}}"),
            )
        };
        (state("total"), state("idle"))
    }
}

/// A Redis key prefix unique to one test.
pub fn redis_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// Reads and removes keys of the test Redis behind a service's back.
pub mod redis {
    use common::redis::Pool;
    use common::redis::RedisSettings;
    use common::redis::deadpool_redis::redis;
    use std::time::Duration;

    fn pool_at(url: &str, timeout: Duration) -> Pool {
        RedisSettings {
            url: url.to_owned(),
            pool_size: 1,
            timeout,
            key_prefix: String::new(),
        }
        .pool()
        .expect("a Redis pool")
    }

    fn pool() -> Pool {
        pool_at("redis://127.0.0.1:6379", Duration::from_secs(2))
    }

    /// A pool whose every command fails within 50 ms: nothing listens where it points.
    pub fn unreachable_pool() -> Pool {
        pool_at("redis://127.0.0.1:1", Duration::from_millis(50))
    }

    /// The value at `key`.
    pub async fn get(key: &str) -> Option<Vec<u8>> {
        let mut conn = pool().get().await.expect("Redis answers");
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut *conn)
            .await
            .expect("GET succeeds")
    }

    /// Deletes `key`.
    pub async fn del(key: &str) {
        let mut conn = pool().get().await.expect("Redis answers");
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut *conn)
            .await
            .expect("DEL succeeds");
    }
}

/// A port that was free a moment ago, for a service that must be started (and restarted) at an
/// address known in advance. It is drawn below Linux's ephemeral range (32768-60999): a port
/// the OS handed out for `:0` would soon go to some test's outgoing connection, which is what
/// happened when this picked one that way. A draw is held unbound until its service starts,
/// seconds later for services that migrate first, so two tests of one binary that drew the same
/// port at random collided (EADDRINUSE in CI). Draws now walk the range from a random start, so
/// none repeats within a process; test binaries run one after another.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static START: OnceLock<u32> = OnceLock::new();
    static DRAWN: AtomicU32 = AtomicU32::new(0);
    let start = *START.get_or_init(|| rand::random_range(0..COUNT));
    loop {
        let port = FIRST + (start + DRAWN.fetch_add(1, Ordering::Relaxed)) % COUNT;
        let port = u16::try_from(port).expect("the range is below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits up to ten seconds for `base`'s readiness endpoint to answer 200 (a service started as
/// a separate process).
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status() == reqwest::StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{base} never became ready");
}

/// A service binary started by a test, killed (SIGKILL) when dropped, so that a failing test
/// leaves no server behind and a test can crash it on purpose with [`Server::kill`].
pub struct Server(std::process::Child);

impl Server {
    /// Starts `binary` with `env` (added to the test's own), its output discarded.
    pub fn start(binary: &str, env: &[(&str, String)]) -> Self {
        let child = std::process::Command::new(binary)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("service binary started");
        Self(child)
    }

    /// `kill -9`: no drain, no flush, in-flight requests cut. Returns once the process is gone.
    pub fn kill(&mut self) {
        self.0.kill().expect("killed");
        self.0.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Counting rows behind the API, for tests that wait for something asynchronous to land.
pub mod db {
    use sqlx::PgPool;
    use uuid::Uuid;

    /// Runs `sql`, a `SELECT count(*)` with `$1` bound to `id`.
    pub async fn count(pool: &PgPool, sql: &'static str, id: Uuid) -> i64 {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("count query")
    }

    /// Polls [`count`] every 50 ms until it is above zero; fails with `what` after `tries` polls.
    pub async fn wait_for_count(
        pool: &PgPool,
        sql: &'static str,
        id: Uuid,
        tries: u32,
        what: &str,
    ) {
        for _ in 0..tries {
            if count(pool, sql, id).await > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{what}");
    }
}

/// What crash tests share: writers racing a `kill -9`, then retrying with their keys.
pub mod crash {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::time::Duration;

    /// What the writers saw: the id each acknowledged key was given, and the keys that were
    /// never acknowledged (cut by the crash, or refused while the service was down).
    pub struct Outcomes {
        pub acknowledged: BTreeMap<String, String>,
        pub unacknowledged: Vec<String>,
    }

    impl Outcomes {
        /// Sorts `(key, Ok(id) or Err(why))` pairs.
        pub fn of(results: impl IntoIterator<Item = (String, Result<String, String>)>) -> Self {
            let mut outcomes = Self {
                acknowledged: BTreeMap::new(),
                unacknowledged: Vec::new(),
            };
            for (key, result) in results {
                match result {
                    Ok(id) => {
                        outcomes.acknowledged.insert(key, id);
                    }
                    Err(_) => outcomes.unacknowledged.push(key),
                }
            }
            outcomes
        }
    }

    /// Retries the write of `key` as a client would, 100 ms apart, until it is acknowledged:
    /// its id. Fails after 50 attempts.
    pub async fn retry_until_acknowledged<F, Fut>(key: &str, mut attempt: F) -> String
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<String, String>>,
    {
        let mut attempts = 0;
        loop {
            match attempt().await {
                Ok(id) => return id,
                Err(why) => {
                    attempts += 1;
                    assert!(attempts < 50, "{key} still fails after the restart: {why}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
