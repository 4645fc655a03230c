//! JSON log lines carry the request's trace id, span id, request id and user id.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, test, web};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_web::test]
async fn a_log_line_inside_a_request_names_its_trace_span_request_and_user() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(move || writer.clone()),
        );
    let _default = tracing::subscriber::set_default(subscriber);
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    let app = test::init_service(
        App::new()
            .wrap(from_fn(common::telemetry::trace_request))
            .route(
                "/x",
                web::get().to(|| async {
                    tracing::Span::current().record("user_id", "user-1");
                    tracing::info!("inside the handler");
                    HttpResponse::Ok().finish()
                }),
            ),
    )
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let request = test::TestRequest::get()
        .uri("/x")
        .insert_header(("x-request-id", "req-7"))
        .insert_header(("traceparent", format!("00-{trace}-00f067aa0ba902b7-01")))
        .to_request();
    let response = test::call_service(&app, request).await;
    assert!(response.status().is_success());

    let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line: serde_json::Value = output
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["fields"]["message"] == "inside the handler")
        .unwrap_or_else(|| panic!("no handler line in {output}"));
    let span = &line["span"];
    assert_eq!(span["request_id"], "req-7");
    assert_eq!(span["trace_id"], trace);
    assert_eq!(span["user_id"], "user-1");
    let span_id = span["span_id"].as_str().unwrap();
    assert!(
        span_id.len() == 16 && span_id != "00f067aa0ba902b7",
        "the request's own span: {span_id}"
    );
}
