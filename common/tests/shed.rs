//! Load shedding: past the bound on requests in flight, a request is answered 503 at once.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use common::metrics::Metrics;
use common::shed::{Admission, shed_excess};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// A server whose `/slow` answers once `release` is notified, behind a bound of `limit`.
struct Server {
    url: String,
    admission: web::Data<Admission>,
    metrics: web::Data<Metrics>,
    arrived: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

async fn start(limit: usize) -> Server {
    let admission = web::Data::new(Admission::new(limit));
    let metrics = web::Data::new(Metrics::new().unwrap());
    let arrived = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (a, m, n, r) = (
        admission.clone(),
        metrics.clone(),
        arrived.clone(),
        release.clone(),
    );
    let server = HttpServer::new(move || {
        let (n, r) = (n.clone(), r.clone());
        App::new()
            .app_data(a.clone())
            .app_data(m.clone())
            .wrap(from_fn(shed_excess))
            .route(
                "/slow",
                web::get().to(move || {
                    let (n, r) = (n.clone(), r.clone());
                    async move {
                        let released = r.notified();
                        n.fetch_add(1, Ordering::SeqCst);
                        released.await;
                        HttpResponse::Ok().body("done")
                    }
                }),
            )
            .route(
                "/fast",
                web::get().to(|| async { HttpResponse::Ok().finish() }),
            )
            .route(
                "/health/live",
                web::get().to(|| async { HttpResponse::Ok().finish() }),
            )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    Server {
        url: format!("http://127.0.0.1:{port}"),
        admission,
        metrics,
        arrived,
        release,
    }
}

#[tokio::test]
async fn past_the_bound_requests_are_refused_at_once_and_admitted_again_once_it_frees() {
    let server = start(2).await;
    let http = reqwest::Client::new();
    let slow = |http: reqwest::Client, url: String| {
        tokio::spawn(async move { http.get(format!("{url}/slow")).send().await })
    };
    let waiting = [
        slow(http.clone(), server.url.clone()),
        slow(http.clone(), server.url.clone()),
    ];
    let started = std::time::Instant::now();
    while server.arrived.load(Ordering::SeqCst) < 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.admission.in_flight(), 2);

    let refused = http
        .get(format!("{}/fast", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:social:problem:overloaded");
    assert_eq!(problem["status"], 503);
    assert_eq!(server.metrics.requests_shed.get(), 1);
    // Health checks are answered whatever the load.
    let live = http
        .get(format!("{}/health/live", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);

    server.release.notify_waiters();
    for call in waiting {
        let answer = call.await.unwrap().unwrap();
        assert_eq!(answer.status(), 200);
    }
    // The permits came back with the answers.
    assert_eq!(server.admission.in_flight(), 0);
    let admitted = http
        .get(format!("{}/fast", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(admitted.status(), 200);
    assert_eq!(server.metrics.requests_shed.get(), 1);
}
