//! The users-service client against a stand-in server that records what it receives.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::telemetry::CallContext;
use common::users_client::{Followees, UsersClient, UsersClientError, UsersClientSettings};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>, Option<String>)>>>;

/// A user whose followees the stand-in takes `SLOW` to answer.
const SLOW_USER: Uuid = Uuid::from_u128(1);
const SLOW: Duration = Duration::from_millis(700);

/// Answers followee-id requests: 304 for ETag "v1", 200 with ETag "v1" otherwise; 503 for the
/// nil user; an oversize body for the max user; after `SLOW` for `SLOW_USER`.
async fn start() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let recorded = seen.clone();
    let server = HttpServer::new(move || {
        let recorded = recorded.clone();
        App::new().route(
            "/v1/users/{id}/following/ids",
            web::get().to(move |req: HttpRequest, id: web::Path<Uuid>| {
                let recorded = recorded.clone();
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                    };
                    recorded.lock().unwrap().push((
                        header("x-request-id"),
                        header("traceparent"),
                        header("if-none-match"),
                    ));
                    if *id == Uuid::nil() {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    if *id == SLOW_USER {
                        tokio::time::sleep(SLOW).await;
                    }
                    if *id == Uuid::max() {
                        return HttpResponse::Ok()
                            .insert_header(("etag", "\"v1\""))
                            .body(vec![b' '; 3 * 1024 * 1024]);
                    }
                    if header("if-none-match").as_deref() == Some("\"v1\"") {
                        return HttpResponse::NotModified().finish();
                    }
                    HttpResponse::Ok()
                        .insert_header(("etag", "\"v1\""))
                        .json(serde_json::json!({"ids": [Uuid::nil()]}))
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    (format!("http://127.0.0.1:{port}"), seen)
}

fn client(base_url: &str) -> UsersClient {
    client_with_in_flight(base_url, 64)
}

fn client_with_in_flight(base_url: &str, max_in_flight: usize) -> UsersClient {
    UsersClient::new(&UsersClientSettings {
        base_url: base_url.to_owned(),
        connect_timeout: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        breaker_failures: 5,
        breaker_cooldown: Duration::from_secs(5),
        max_in_flight,
    })
    .unwrap()
}

#[tokio::test]
async fn the_request_id_and_trace_context_are_forwarded_and_etags_revalidate() {
    let (url, seen) = start().await;
    let ctx = CallContext {
        request_id: Some("req-42".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    };
    let users = client(&url);
    let user = Uuid::now_v7();
    let first = users.followee_ids(user, None, &ctx).await.unwrap();
    assert_eq!(
        first,
        Followees::Current {
            etag: "\"v1\"".into(),
            ids: vec![Uuid::nil()]
        }
    );
    assert_eq!(
        users
            .followee_ids(user, Some("\"v1\""), &ctx)
            .await
            .unwrap(),
        Followees::Unchanged
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[0],
        (ctx.request_id.clone(), ctx.traceparent.clone(), None)
    );
    assert_eq!(seen[1].2.as_deref(), Some("\"v1\""));
}

#[tokio::test]
async fn failures_are_typed_and_oversize_answers_refused() {
    let (url, _) = start().await;
    let users = client(&url);
    let ctx = CallContext::default();
    assert!(matches!(
        users.followee_ids(Uuid::nil(), None, &ctx).await,
        Err(UsersClientError::Unavailable(_))
    ));
    assert!(matches!(
        users.followee_ids(Uuid::max(), None, &ctx).await,
        Err(UsersClientError::Invalid(_))
    ));
    let down = client("http://127.0.0.1:1");
    assert!(matches!(
        down.followee_ids(Uuid::now_v7(), None, &ctx).await,
        Err(UsersClientError::Unavailable(_))
    ));
}

#[tokio::test]
async fn calls_beyond_the_in_flight_bound_are_refused_at_once_without_opening_the_circuit() {
    let (url, seen) = start().await;
    let users = client_with_in_flight(&url, 2);
    let ctx = CallContext::default();
    let slow = |users: UsersClient| {
        tokio::spawn(async move {
            users
                .followee_ids(SLOW_USER, None, &CallContext::default())
                .await
        })
    };
    let waiting = [slow(users.clone()), slow(users.clone())];
    // Both slow calls have reached the stand-in: the bound is taken.
    let started = std::time::Instant::now();
    while seen.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < SLOW, "the slow calls never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // More calls than the breaker's threshold: each is refused without a request, and the
    // circuit stays closed, since users did nothing wrong.
    for _ in 0..6 {
        let refused = users.followee_ids(Uuid::now_v7(), None, &ctx).await;
        assert!(
            matches!(&refused, Err(UsersClientError::Unavailable(why)) if why.contains("in flight")),
            "{refused:?}"
        );
    }
    assert!(started.elapsed() < SLOW, "the refusals waited for a permit");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "a refused call reached users"
    );
    assert!(!users.breaker().is_open());
    for call in waiting {
        assert!(matches!(call.await.unwrap(), Ok(Followees::Current { .. })));
    }
    // The permits came back with the answers.
    assert!(users.followee_ids(Uuid::now_v7(), None, &ctx).await.is_ok());
    assert_eq!(seen.lock().unwrap().len(), 3);
}
