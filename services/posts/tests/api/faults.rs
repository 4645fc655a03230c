//! Fault tests: a TCP fault proxy between the posts service and PostgreSQL, Redis and the users
//! service. Each dependency fails in the ways it fails in production; the service answers
//! within bounds, says why, and recovers by itself.

use crate::helpers::{TestApp, TestUser, expect_json, expect_problem, spawn_behind_proxies};
use faultproxy::Fault;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

fn proxies(app: &TestApp) -> &crate::helpers::Proxies {
    app.proxies.as_ref().unwrap()
}

/// A reader following an author who posted `text`, whose feed this process has read (so it
/// holds their followee list); the author; and a newcomer for whom it holds nothing.
async fn reader_whose_followees_are_held(
    app: &TestApp,
    text: &str,
) -> (TestUser, TestUser, TestUser) {
    let (reader, author) = (app.register("reader").await, app.register("author").await);
    let newcomer = app.register("newcomer").await;
    app.follow(&reader, &author).await;
    app.post(&author, text).await;
    expect_json(
        app.get("/v1/feed", Some(&reader.token)).await,
        StatusCode::OK,
    )
    .await;
    (reader, author, newcomer)
}

/// A feed built from a followee list the process held, without users confirming it, that
/// starts with `text`.
async fn expect_served_from_held(response: reqwest::Response, text: &str) {
    assert_eq!(response.headers()["x-served-from-cache"], "followees");
    let feed = expect_json(response, StatusCode::OK).await;
    assert_eq!(feed["items"][0]["text"], text);
}

/// Polls `path` until it answers `status`, for at most `within`.
async fn eventually(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    status: StatusCode,
    within: Duration,
) {
    let started = Instant::now();
    loop {
        let response = app.get(path, token).await;
        if response.status() == status {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{path} still answers {} after {within:?}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_postgres_down_requests_fail_fast_with_503_and_the_pool_recovers() {
    let app = spawn_behind_proxies(&[("DATABASE_ACQUIRE_TIMEOUT_MS", "1000")]).await;
    let author = app.register("author").await;
    let post = app.post(&author, "survives the outage").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());

    proxies(&app).postgres.set(Fault::Down);
    let started = Instant::now();
    let response = app.get(&path, None).await;
    let elapsed = started.elapsed();
    assert!(response.headers().contains_key("retry-after"));
    expect_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert!(elapsed < Duration::from_secs(3), "answered in {elapsed:?}");
    let write = app
        .request(
            Method::POST,
            "/v1/posts",
            Some(&author.token),
            Some(json!({"text": "during"})),
        )
        .await;
    expect_problem(
        write,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    eventually(
        &app,
        "/health/ready",
        None,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(3),
    )
    .await;

    proxies(&app).postgres.set(Fault::None);
    eventually(&app, &path, None, StatusCode::OK, Duration::from_secs(5)).await;
    eventually(
        &app,
        "/health/ready",
        None,
        StatusCode::OK,
        Duration::from_secs(5),
    )
    .await;
    app.post(&author, "after the outage").await;
}

#[tokio::test]
async fn after_a_postgres_restart_every_request_succeeds_again() {
    let app = spawn_behind_proxies(&[]).await;
    let author = app.register("author").await;
    let post = app.post(&author, "before the restart").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    // Signed in, so that every read asks PostgreSQL (anonymous ones may be kept, ADR 0027).
    let token = Some(author.token.as_str());
    // Warm the pool with several connections, then kill them all, as a restart does.
    for _ in 0..5 {
        expect_json(app.get(&path, token).await, StatusCode::OK).await;
    }
    proxies(&app).postgres.set(Fault::Reset);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxies(&app).postgres.set(Fault::None);
    // Dead pooled connections are found on checkout and replaced: no request fails.
    for _ in 0..20 {
        expect_json(app.get(&path, token).await, StatusCode::OK).await;
    }
    app.post(&author, "after the restart").await;
}

#[tokio::test]
async fn with_redis_hanging_or_down_reads_and_writes_still_work_within_its_timeout() {
    let app = spawn_behind_proxies(&[("REDIS_TIMEOUT_MS", "200")]).await;
    let (reader, author) = (app.register("reader").await, app.register("author").await);
    app.follow(&reader, &author).await;
    app.post(&author, "first").await;
    expect_json(
        app.get("/v1/feed", Some(&reader.token)).await,
        StatusCode::OK,
    )
    .await;

    for fault in [Fault::Blackhole, Fault::Down] {
        proxies(&app).redis.set(fault);
        let text = format!("written while redis is {fault:?}");
        let started = Instant::now();
        app.post(&author, &text).await;
        let feed = expect_json(
            app.get("/v1/feed", Some(&reader.token)).await,
            StatusCode::OK,
        )
        .await;
        let elapsed = started.elapsed();
        assert_eq!(
            feed["items"][0]["text"], text,
            "read-your-writes holds without Redis"
        );
        // Each Redis step waits at most REDIS_TIMEOUT_MS (rate limit, caches): slower, bounded.
        assert!(elapsed < Duration::from_secs(4), "{fault:?}: {elapsed:?}");
    }
    // A follow is in the next read too: with no version to be read, the list this process
    // holds is confirmed with users, who answer with the new one (ADR 0019).
    let followed = app.register("followed").await;
    app.post(&followed, "by the newly followed").await;
    app.follow(&reader, &followed).await;
    let feed = expect_json(
        app.get("/v1/feed", Some(&reader.token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(feed["items"][0]["text"], "by the newly followed");
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("rate_limit_fallback_total{quota=\"account\"}"),
        "rate limits fell back to the process"
    );
    proxies(&app).redis.set(Fault::None);
    app.post(&author, "redis is back").await;
}

#[tokio::test]
async fn with_users_down_the_feed_serves_from_cache_or_fails_fast_and_tokens_still_verify() {
    let app = spawn_behind_proxies(&[
        ("USERS_TIMEOUT_MS", "500"),
        ("USERS_BREAKER_COOLDOWN_MS", "500"),
    ])
    .await;
    let (reader, author, newcomer) = reader_whose_followees_are_held(&app, "cached").await;

    proxies(&app).users.set(Fault::Down);
    // A reader whose followees are cached, but not confirmed by a published version, gets the
    // feed marked as served from cache.
    app.forget_published_graph_version(&reader).await;
    expect_served_from_held(app.get("/v1/feed", Some(&reader.token)).await, "cached").await;
    // One with nothing cached gets a 503 at once; their token still verifies (keys are cached).
    let started = Instant::now();
    let response = app.get("/v1/feed", Some(&newcomer.token)).await;
    expect_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let own = app
        .get(
            &format!("/v1/users/{}/posts", author.id),
            Some(&newcomer.token),
        )
        .await;
    assert_ne!(own.status(), StatusCode::UNAUTHORIZED);

    proxies(&app).users.set(Fault::None);
    let started = Instant::now();
    loop {
        let response = app.get("/v1/feed", Some(&newcomer.token)).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hanging_users_service_trips_the_breaker_which_stops_calling_it_then_recovers() {
    let app = spawn_behind_proxies(&[
        ("USERS_TIMEOUT_MS", "300"),
        ("USERS_BREAKER_FAILURES", "3"),
        ("USERS_BREAKER_COOLDOWN_MS", "1000"),
    ])
    .await;
    let readers = [
        app.register("reader_a").await,
        app.register("reader_b").await,
    ];
    let users = &proxies(&app).users;
    users.set(Fault::Blackhole);
    // Three calls time out (300 ms each); the circuit opens.
    for _ in 0..3 {
        let response = app.get("/v1/feed", Some(&readers[0].token)).await;
        expect_problem(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        )
        .await;
    }
    // Open: answers at once and opens no connection to users.
    let connections = users.accepted();
    let started = Instant::now();
    for _ in 0..20 {
        let response = app.get("/v1/feed", Some(&readers[1].token)).await;
        expect_problem(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        )
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        users.accepted(),
        connections,
        "no retry storm against a failing users"
    );
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("kind=\"circuit_open\""), "counted");

    // After the cool-down one probe goes; users answers again, so the circuit closes.
    users.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for reader in &readers {
        expect_json(
            app.get("/v1/feed", Some(&reader.token)).await,
            StatusCode::OK,
        )
        .await;
    }
}

#[tokio::test]
async fn past_its_bound_on_calls_to_users_the_feed_answers_from_what_it_holds_at_once() {
    let app = spawn_behind_proxies(&[
        ("USERS_MAX_IN_FLIGHT", "1"),
        ("USERS_TIMEOUT_MS", "1500"),
        ("USERS_BREAKER_FAILURES", "100"),
    ])
    .await;
    let (reader, _, newcomer) = reader_whose_followees_are_held(&app, "held").await;
    // Without a published version, each feed read of the reader asks users to confirm the list
    // this process holds, as when Redis fails (ADR 0019). users now hangs: the first such read
    // takes the only permit and waits.
    app.forget_published_graph_version(&reader).await;
    let users = &proxies(&app).users;
    users.set(Fault::Blackhole);
    let waiting = app.get("/v1/feed", Some(&reader.token));
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        // The same reader again: served at once from the list held, and marked so.
        expect_served_from_held(app.get("/v1/feed", Some(&reader.token)).await, "held").await;
        // A reader with nothing held: 503 at once, not after users' timeout.
        expect_problem(
            app.get("/v1/feed", Some(&newcomer.token)).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        )
        .await;
        started.elapsed()
    };
    let (waited, refused_within) = tokio::join!(waiting, meanwhile);
    assert!(
        refused_within < Duration::from_millis(700),
        "{refused_within:?}"
    );
    // The call that held the permit timed out and was served from the list held too.
    expect_served_from_held(waited, "held").await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("kind=\"saturated\""), "counted");

    users.set(Fault::None);
    eventually(
        &app,
        "/v1/feed",
        Some(&newcomer.token),
        StatusCode::OK,
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn past_its_bound_on_requests_in_flight_a_process_refuses_at_once_and_recovers() {
    let app = spawn_behind_proxies(&[
        ("MAX_IN_FLIGHT_REQUESTS", "1"),
        ("USERS_TIMEOUT_MS", "1500"),
        ("USERS_BREAKER_FAILURES", "100"),
    ])
    .await;
    let reader = app.register("reader").await;
    let post = app.post(&reader, "mine").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    app.forget_published_graph_version(&reader).await;
    // A feed read that waits on a hanging users service holds the only place.
    proxies(&app).users.set(Fault::Blackhole);
    let waiting = app.get("/v1/feed", Some(&reader.token));
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let refused = app.get(&path, None).await;
        assert_eq!(refused.headers()["retry-after"], "1");
        expect_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
        // Health checks and metrics are answered whatever the load.
        assert_eq!(app.get("/health/live", None).await.status(), StatusCode::OK);
        let metrics = app.get("/metrics", None).await.text().await.unwrap();
        assert!(metrics.contains("http_requests_shed_total 1"), "counted");
        started.elapsed()
    };
    let (waited, refused_within) = tokio::join!(waiting, meanwhile);
    assert!(
        refused_within < Duration::from_millis(700),
        "{refused_within:?}"
    );
    assert_eq!(waited.status(), StatusCode::SERVICE_UNAVAILABLE);
    proxies(&app).users.set(Fault::None);
    let read = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    assert_eq!(read["text"], "mine");
}

#[tokio::test]
async fn without_its_change_subscription_a_process_keeps_no_post() {
    let app = spawn_behind_proxies(&[("REDIS_TIMEOUT_MS", "200")]).await;
    let author = app.register("author").await;
    let post = app.post(&author, "as written").await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    expect_json(app.get(&path, None).await, StatusCode::OK).await;
    app.set_text_behind_the_service(&post["id"], "changed while kept")
        .await;
    let kept = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    assert_eq!(kept["text"], "as written", "kept while subscribed");

    // The subscription's connection is reset with Redis: changes could now go unheard, so the
    // process drops its rows and reads PostgreSQL until it has subscribed again.
    proxies(&app).redis.set(Fault::Down);
    let started = Instant::now();
    loop {
        let read = expect_json(app.get(&path, None).await, StatusCode::OK).await;
        if read["text"] == "changed while kept" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still kept without Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.set_text_behind_the_service(&post["id"], "changed without redis")
        .await;
    let read = expect_json(app.get(&path, None).await, StatusCode::OK).await;
    assert_eq!(
        read["text"], "changed without redis",
        "nothing is kept meanwhile"
    );
    proxies(&app).redis.set(Fault::None);
}

#[tokio::test]
async fn a_replica_started_while_users_cannot_answer_is_not_ready_until_it_holds_the_keys() {
    let app = spawn_behind_proxies(&[]).await;
    let author = app.register("author").await;
    proxies(&app).users.set(Fault::Down);
    let replica = app.spawn_replica().await;
    let client = reqwest::Client::new();
    let ready = || client.get(format!("{replica}/health/ready")).send();
    let problem = expect_problem(
        ready().await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("signing keys"),
        "{problem}"
    );
    let session = || {
        client
            .get(format!("{replica}/v1/session"))
            .bearer_auth(&author.token)
            .send()
    };
    // What a load balancer that sent it traffic anyway would see: 503, not 401.
    expect_problem(
        session().await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    )
    .await;

    proxies(&app).users.set(Fault::None);
    let answered = Instant::now();
    while ready().await.unwrap().status() != StatusCode::OK {
        assert!(
            answered.elapsed() < Duration::from_secs(3),
            "still not ready 3 s after users answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_json(session().await.unwrap(), StatusCode::OK).await;
}
