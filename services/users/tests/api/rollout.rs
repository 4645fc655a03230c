//! A rolling update loses no request: the old process turns unready on SIGTERM, keeps serving
//! while the load balancer notices, then drains; the replacement takes the traffic. And the
//! previous release starts against the schema its successor migrated (restarts mid-rollout,
//! rollbacks).

use crate::helpers::*;
use reqwest::StatusCode;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Runs the real `users` binary on a free port against the test database.
fn start_binary(app: &TestApp) -> (Child, String) {
    let port = test_support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_users"))
        .env("PORT", port.to_string())
        .env("HTTP_WORKERS", "1")
        .env("DATABASE_URL", app.db.url_for("users"))
        .env("JWT_KEYS_DIR", test_support::keys::private_dir())
        .env("JWT_SIGNING_KID", "primary")
        .env("SHUTDOWN_DELAY_SECS", "2")
        .env("RUST_LOG", "warn")
        // ~200 anonymous requests a second from one address: above the default quota.
        .env("RATE_LIMIT_ANONYMOUS", "100000/60")
        .env("REDIS_KEY_PREFIX", test_support::redis_prefix())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn sigterm_under_steady_traffic_with_a_replacement_started_loses_no_request() {
    let app = spawn_app().await;
    let user = app.register("steady").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut old, old_url) = start_binary(&app);
    test_support::wait_ready(&client, &old_url).await;

    // A minimal load balancer: requests go round-robin to the instances whose readiness
    // answered 200 at the last probe (every 100 ms), as Kubernetes endpoints would.
    let backends: Arc<std::sync::Mutex<Vec<(String, bool)>>> =
        Arc::new(std::sync::Mutex::new(vec![(old_url.clone(), true)]));
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn({
        let (backends, stop, client) = (backends.clone(), stop.clone(), client.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let urls: Vec<String> = backends
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(u, _)| u.clone())
                    .collect();
                for url in urls {
                    let ready = matches!(client.get(format!("{url}/health/ready")).send().await, Ok(r) if r.status() == StatusCode::OK);
                    if let Some(entry) =
                        backends.lock().unwrap().iter_mut().find(|(u, _)| *u == url)
                    {
                        entry.1 = ready;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = tokio::spawn({
        let (backends, stop, client, sent, failed) = (
            backends.clone(),
            stop.clone(),
            client.clone(),
            sent.clone(),
            failed.clone(),
        );
        let path = format!("/v1/users/{}", user.id);
        async move {
            let mut turn = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let ready: Vec<String> = backends
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, r)| *r)
                    .map(|(u, _)| u.clone())
                    .collect();
                if ready.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                turn += 1;
                let url = format!("{}{path}", ready[turn % ready.len()]);
                sent.fetch_add(1, Ordering::SeqCst);
                match client.get(&url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => {}
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut new, new_url) = start_binary(&app);
    test_support::wait_ready(&client, &new_url).await;
    backends.lock().unwrap().push((new_url.clone(), true));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let status = Command::new("kill")
        .args(["-TERM", &old.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || old.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exited.success(),
        "the old process exits cleanly: {exited:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    prober.await.unwrap();
    let _ = new.kill();
    let _ = new.wait();

    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(sent > 100, "steady traffic was sent ({sent})");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the rollout"
    );
}

#[tokio::test]
async fn the_previous_release_starts_against_a_schema_its_successor_migrated() {
    let app = spawn_app().await;
    // The previous release knew every migration but the newest one.
    let mut previous = users::startup::migrator();
    let known = previous.migrations.len() - 1;
    previous.migrations = previous.migrations[..known].to_vec().into();
    let pool = sqlx::PgPool::connect(&app.db.url_for("users"))
        .await
        .unwrap();
    // What it does at start (or in its init container) succeeds and changes nothing.
    common::db::migrate(&pool, &previous).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM users._sqlx_migrations")
        .fetch_one(&app.admin_pool)
        .await
        .unwrap();
    assert_eq!(applied, i64::try_from(known + 1).unwrap());

    // A migration both know must still be the same migration.
    let mut altered = users::startup::migrator();
    let mut first = altered.migrations[0].clone();
    first.checksum = vec![0; 48].into();
    altered.migrations = vec![first].into();
    assert!(common::db::migrate(&pool, &altered).await.is_err());
}
