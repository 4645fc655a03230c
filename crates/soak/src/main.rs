//! The soak run (opt-in, not in CI): the three services on a fresh database, posts and
//! messaging reaching PostgreSQL, Redis and the users service through fault proxies, the mixed
//! workload at a fixed rate for `--minutes`, and every minute one fault for ten seconds:
//! PostgreSQL down, PostgreSQL restarted, Redis hanging, Redis down, users down.
//!
//! Writes carry idempotency keys; a write that was not acknowledged is retried with its key
//! after the fault, as a client would. At the end it reports acknowledged against stored posts
//! and messages (they must be equal) and the 5xx answers outside fault windows (there must be
//! none), and exits non-zero otherwise.
//!
//!     cargo run --release -p soak -- --minutes 10

use faultproxy::{Fault, FaultProxy};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::TestDatabase;

/// How long each fault lasts, and how long after it 5xx answers are still its doing.
const FAULT: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(5);
const PERIOD: Duration = Duration::from_secs(60);
/// Requests per second: 60 % feed, 30 % timeline, 10 % compose; plus messages.
const RATE: u64 = 40;
const USERS: usize = 20;

#[derive(Default)]
struct Ledger {
    acked_posts: BTreeSet<String>,
    acked_messages: BTreeSet<String>,
    /// Writes to retry with their key: (kind, key, user index, conversation).
    pending: Vec<(Write, String, usize)>,
    /// When each 5xx or transport error happened.
    failures: Vec<Instant>,
    requests: u64,
}

#[derive(Clone, Copy, Debug)]
enum Write {
    Post,
    Message,
}

struct World {
    client: reqwest::Client,
    posts: String,
    messaging: String,
    accounts: Vec<(uuid::Uuid, String)>,
    conversations: Vec<String>,
    ledger: Mutex<Ledger>,
}

fn settings_env(pairs: Vec<(&'static str, String)>) -> common::config::Env {
    common::config::Env::from_pairs(pairs)
}

const GENEROUS: [(&str, &str); 6] = [
    ("RATE_LIMIT_ACCOUNT", "100000000/60"),
    ("RATE_LIMIT_ANONYMOUS", "100000000/60"),
    ("RATE_LIMIT_POST_CREATE", "100000000/60"),
    ("RATE_LIMIT_MESSAGE_SEND", "100000000/60"),
    ("RATE_LIMIT_SIGNUP_IP", "100000000/60"),
    ("RATE_LIMIT_FOLLOW", "100000000/60"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .init();
    let minutes: u64 = std::env::args()
        .skip_while(|a| a != "--minutes")
        .nth(1)
        .map_or(Ok(10), |m| m.parse())?;
    let duration = Duration::from_secs(minutes * 60);

    let db = TestDatabase::with_prefix("soak").await;
    let prefix = test_support::redis_prefix();
    let postgres = FaultProxy::start(([127, 0, 0, 1], 5432).into()).await?;
    let redis = FaultProxy::start(([127, 0, 0, 1], 6379).into()).await?;

    let mut users_env = vec![
        ("PORT", "0".to_owned()),
        ("DATABASE_URL", db.url_for("users")),
        ("REDIS_KEY_PREFIX", prefix.clone()),
        ("JWT_KEYS_DIR", test_support::keys::private_dir()),
        ("JWT_SIGNING_KID", "primary".to_owned()),
    ];
    users_env.extend(GENEROUS.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let users_app =
        users::Application::build(users::Settings::from_env(&settings_env(users_env))?).await?;
    let users_url = format!("http://127.0.0.1:{}", users_app.port());
    let users_proxy = FaultProxy::start(([127, 0, 0, 1], users_app.port()).into()).await?;
    tokio::spawn(users_app.run_until_stopped());

    let dependent = |service: &str| {
        let mut env = vec![
            ("PORT", "0".to_owned()),
            ("DATABASE_URL", db.url_for_via(service, postgres.addr())),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "1000".to_owned()),
            ("REDIS_URL", format!("redis://{}", redis.addr())),
            ("REDIS_KEY_PREFIX", prefix.clone()),
            ("REDIS_TIMEOUT_MS", "200".to_owned()),
            (
                "JWKS_URL",
                format!("http://{}/.well-known/jwks.json", users_proxy.addr()),
            ),
            ("USERS_BASE_URL", format!("http://{}", users_proxy.addr())),
            ("USERS_TIMEOUT_MS", "500".to_owned()),
        ];
        env.extend(GENEROUS.iter().map(|(k, v)| (*k, (*v).to_owned())));
        settings_env(env)
    };
    let posts_app =
        posts::Application::build(posts::Settings::from_env(&dependent("posts"))?).await?;
    let posts_url = format!("http://127.0.0.1:{}", posts_app.port());
    tokio::spawn(posts_app.run_until_stopped());
    let messaging_app =
        messaging::Application::build(messaging::Settings::from_env(&dependent("messaging"))?)
            .await?;
    let messaging_url = format!("http://127.0.0.1:{}", messaging_app.port());
    tokio::spawn(messaging_app.run_until_stopped());

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let world = Arc::new(setup(client, users_url, posts_url, messaging_url).await?);
    println!(
        "soak: {minutes} min at {RATE} requests/s + 5 messages/s; one {}s fault every {}s",
        FAULT.as_secs(),
        PERIOD.as_secs()
    );

    let started = Instant::now();
    let windows = Arc::new(Mutex::new(Vec::<(Instant, Instant, &'static str)>::new()));
    let faults = [
        ("postgres down", &postgres, Fault::Down),
        ("postgres restart", &postgres, Fault::Reset),
        ("redis hanging", &redis, Fault::Blackhole),
        ("redis down", &redis, Fault::Down),
        ("users down", &users_proxy, Fault::Down),
    ];
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut tick: u64 = 0;
    let mut next_fault = started + PERIOD / 2;
    let mut fault_index = 0;
    let mut active: Option<(Instant, &FaultProxy, &'static str)> = None;
    while started.elapsed() < duration {
        ticker.tick().await;
        tick += 1;
        let now = Instant::now();
        if let Some((began, proxy, name)) = active {
            if name == "postgres restart" && now - began > Duration::from_secs(1) {
                proxy.set(Fault::None);
            }
            if now - began >= FAULT {
                proxy.set(Fault::None);
                windows
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push((began, now + GRACE, name));
                active = None;
                next_fault = now + PERIOD - FAULT;
                retry_pending(&world);
            }
        } else if now >= next_fault {
            let (name, proxy, fault) = faults[fault_index % faults.len()];
            fault_index += 1;
            println!("{:>5}s  fault: {name}", started.elapsed().as_secs());
            proxy.set(fault);
            active = Some((now, proxy, name));
        }
        let world = world.clone();
        tokio::spawn(async move { one_request(&world, tick).await });
    }
    if let Some((began, proxy, name)) = active {
        proxy.set(Fault::None);
        windows
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push((began, Instant::now() + GRACE, name));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Clients retry what was never acknowledged until it is.
    for _ in 0..30 {
        if world
            .ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .pending
            .is_empty()
        {
            break;
        }
        retry_pending(&world);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let admin = sqlx::PgPool::connect_with(db.admin_options()).await?;
    let stored_posts: BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT text FROM posts.posts")
            .fetch_all(&admin)
            .await?
            .into_iter()
            .collect();
    let stored_messages: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT client_id FROM messaging.messages WHERE client_id IS NOT NULL",
    )
    .fetch_all(&admin)
    .await?
    .into_iter()
    .collect();
    let ledger = world
        .ledger
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let windows = windows.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let outside = ledger
        .failures
        .iter()
        .filter(|t| !windows.iter().any(|(from, to, _)| *t >= from && *t <= to))
        .count();
    let inside = ledger.failures.len() - outside;
    println!("requests: {}", ledger.requests);
    println!(
        "posts: acknowledged {}, stored {}, still unacknowledged {}",
        ledger.acked_posts.len(),
        stored_posts.len(),
        ledger
            .pending
            .iter()
            .filter(|p| matches!(p.0, Write::Post))
            .count()
    );
    println!(
        "messages: acknowledged {}, stored {}, still unacknowledged {}",
        ledger.acked_messages.len(),
        stored_messages.len(),
        ledger
            .pending
            .iter()
            .filter(|p| matches!(p.0, Write::Message))
            .count()
    );
    println!("5xx or transport errors: {inside} inside fault windows, {outside} outside");
    let ok = stored_posts == ledger.acked_posts
        && stored_messages == ledger.acked_messages
        && outside == 0;
    println!("{}", if ok { "PASS" } else { "FAIL" });
    std::process::exit(if ok { 0 } else { 1 });
}

async fn call(
    world: &World,
    method: Method,
    url: String,
    token: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Option<(StatusCode, Value)> {
    let mut request = world.client.request(method, url).bearer_auth(token);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let outcome = request.send().await;
    let answered = match outcome {
        Ok(response) if !response.status().is_server_error() => Some(response),
        _ => None,
    };
    if let Ok(mut ledger) = world.ledger.lock() {
        ledger.requests += 1;
        if answered.is_none() {
            ledger.failures.push(Instant::now());
        }
    }
    let response = answered?;
    let status = response.status();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

async fn one_request(world: &World, tick: u64) {
    let user = usize::try_from(tick).unwrap_or(0) % USERS;
    let (id, token) = &world.accounts[user];
    if tick.is_multiple_of(8) {
        let key = format!("m-{tick}");
        send_message(world, user, &key).await;
        return;
    }
    match tick % 10 {
        0 => {
            let key = format!("p-{tick}");
            create_post(world, user, &key).await;
        }
        1..=3 => {
            call(
                world,
                Method::GET,
                format!("{}/v1/users/{id}/posts", world.posts),
                token,
                None,
                None,
            )
            .await;
        }
        _ => {
            call(
                world,
                Method::GET,
                format!("{}/v1/feed", world.posts),
                token,
                None,
                None,
            )
            .await;
        }
    }
}

async fn create_post(world: &World, user: usize, key: &str) {
    let token = &world.accounts[user].1;
    let body = json!({"text": key});
    let outcome = call(
        world,
        Method::POST,
        format!("{}/v1/posts", world.posts),
        token,
        Some(key),
        Some(body),
    )
    .await;
    record(world, Write::Post, key, user, outcome);
}

async fn send_message(world: &World, user: usize, key: &str) {
    let token = &world.accounts[user].1;
    let conversation = &world.conversations[user % world.conversations.len()];
    let url = format!(
        "{}/v1/conversations/{conversation}/messages",
        world.messaging
    );
    let body = json!({"body": key, "client_id": key});
    let outcome = call(world, Method::POST, url, token, None, Some(body)).await;
    record(world, Write::Message, key, user, outcome);
}

fn record(
    world: &World,
    write: Write,
    key: &str,
    user: usize,
    outcome: Option<(StatusCode, Value)>,
) {
    let Ok(mut ledger) = world.ledger.lock() else {
        return;
    };
    match outcome {
        Some((StatusCode::CREATED, _)) => {
            match write {
                Write::Post => ledger.acked_posts.insert(key.to_owned()),
                Write::Message => ledger.acked_messages.insert(key.to_owned()),
            };
            ledger.pending.retain(|(_, k, _)| k != key);
        }
        _ => {
            if !ledger.pending.iter().any(|(_, k, _)| k == key) {
                ledger.pending.push((write, key.to_owned(), user));
            }
        }
    }
}

fn retry_pending(world: &Arc<World>) {
    let pending = match world.ledger.lock() {
        Ok(ledger) => ledger.pending.clone(),
        Err(_) => return,
    };
    for (write, key, user) in pending {
        let world = world.clone();
        tokio::spawn(async move {
            match write {
                Write::Post => create_post(&world, user, &key).await,
                Write::Message => send_message(&world, user, &key).await,
            }
        });
    }
}

/// Accounts that follow each other in a ring of five, and direct conversations between
/// neighbours.
async fn setup(
    client: reqwest::Client,
    users: String,
    posts: String,
    messaging: String,
) -> anyhow::Result<World> {
    let mut accounts = Vec::new();
    for i in 0..USERS {
        let name = format!("soak_{i}");
        let body: Value = client
            .post(format!("{users}/v1/auth/register"))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "password-soak"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id: uuid::Uuid = body["user"]["id"].as_str().unwrap_or_default().parse()?;
        accounts.push((
            id,
            body["access_token"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    for (i, (_, token)) in accounts.iter().enumerate() {
        for step in 1..=5 {
            let (followee, _) = &accounts[(i + step) % USERS];
            client
                .put(format!("{users}/v1/users/{followee}/follow"))
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()?;
        }
    }
    let mut conversations = Vec::new();
    for i in 0..USERS {
        let (other, _) = &accounts[(i + 1) % USERS];
        let body: Value = client
            .post(format!("{messaging}/v1/conversations"))
            .bearer_auth(&accounts[i].1)
            .json(&json!({"participant_ids": [other]}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        conversations.push(body["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(World {
        client,
        posts,
        messaging,
        accounts,
        conversations,
        ledger: Mutex::new(Ledger::default()),
    })
}
