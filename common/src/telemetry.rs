//! Logging, traces and request spans.
//!
//! [`init`] installs a `tracing` subscriber filtered by `RUST_LOG`, printing JSON lines when
//! `LOG_FORMAT=json` and human-readable lines otherwise, and an OpenTelemetry layer: every
//! `tracing` span is an OpenTelemetry span, exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set and dropped otherwise (trace context still propagates).
//! [`trace_request`] gives every request a span that continues the caller's W3C trace and
//! carries method, route pattern, status, request id (the incoming `X-Request-Id` when sane,
//! else a new UUID, echoed in the response), trace and span ids, and the user id once known.

use crate::config::{ConfigError, Env};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use std::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The header that carries a request id in and out.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for log collectors.
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

/// Telemetry settings.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `LOG_FORMAT`: `json` or `pretty` (default).
    pub format: LogFormat,
    /// `RUST_LOG` (default `info`).
    pub filter: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: where traces go over OTLP/HTTP; unset, none are exported.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME` (default: the service's own name).
    pub service_name: Option<String>,
}

impl TelemetrySettings {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let format = match env.string("LOG_FORMAT", "pretty").as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(env.invalid(
                    "LOG_FORMAT",
                    format!("{other:?} is neither json nor pretty"),
                ));
            }
        };
        Ok(Self {
            format,
            filter: env.string("RUST_LOG", "info"),
            otlp_endpoint: env.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
            service_name: env.optional("OTEL_SERVICE_NAME"),
        })
    }
}

/// Keeps telemetry running; dropping it flushes the traces still buffered.
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber for `service`, exporting traces over OTLP/HTTP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A second call (as in tests) is a no-op.
pub fn init(service: &'static str, settings: &TelemetrySettings) -> TelemetryGuard {
    let exporter = match &settings.otlp_endpoint {
        None => None,
        // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and the other standard variables).
        Some(_) => match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => Some(exporter),
            Err(e) => {
                eprintln!("OTLP exporter not started: {e}");
                None
            }
        },
    };
    let name = settings
        .service_name
        .clone()
        .unwrap_or_else(|| service.to_owned());
    let builder = SdkTracerProvider::builder().with_resource(
        opentelemetry_sdk::Resource::builder()
            .with_service_name(name)
            .build(),
    );
    let provider = match exporter {
        Some(exporter) => builder.with_batch_exporter(exporter).build(),
        None => builder.build(),
    };
    install(service, settings, provider, false)
}

/// Installs the subscriber with spans going to `exporter` as soon as they end, and log lines
/// going through the test harness's capture (shown only for failing tests): for tests that
/// look at the spans a request produced.
pub fn init_with_exporter(
    settings: &TelemetrySettings,
    exporter: impl SpanExporter + 'static,
) -> TelemetryGuard {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    install("test", settings, provider, true)
}

fn install(
    service: &'static str,
    settings: &TelemetrySettings,
    provider: SdkTracerProvider,
    for_tests: bool,
) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let tracer = provider.tracer(service);
    // RUST_LOG filters logs and spans; the pool-wait layer sees sqlx's acquisition events,
    // which are below any log level we print.
    let filter = || EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter());
    let registry = tracing_subscriber::registry()
        .with(crate::metrics::PoolWaitLayer.with_filter(crate::metrics::PoolWaitLayer::filter()))
        .with(otel);
    let result = match (settings.format, for_tests) {
        (_, true) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_test_writer()
                    .with_filter(filter()),
            )
            .try_init(),
        (LogFormat::Json, false) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter()),
            )
            .try_init(),
        (LogFormat::Pretty, false) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_filter(filter()),
            )
            .try_init(),
    };
    if result.is_ok() {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(
            service,
            otlp = settings.otlp_endpoint.is_some(),
            "telemetry initialised"
        );
        TelemetryGuard {
            provider: Some(provider),
        }
    } else {
        TelemetryGuard { provider: None }
    }
}

/// Reads W3C trace context from actix's request headers.
struct RequestHeaders<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for RequestHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Collects the headers that carry the current trace context.
#[derive(Default)]
struct Carrier(Vec<(String, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// The headers that continue the current span's trace in another service (W3C
/// `traceparent`), or none when there is no sampled trace.
pub fn trace_headers() -> Vec<(String, String)> {
    let context = tracing::Span::current().context();
    let mut carrier = Carrier::default();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.0
}

/// The header that carries W3C trace context between services.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// What a call to another service carries from the request that caused it: the request id and
/// the W3C `traceparent`, so logs and traces join up across services. [`trace_request`] stores
/// it in each request's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// The request id (`X-Request-Id`).
    pub request_id: Option<String>,
    /// The incoming W3C trace context, passed on unchanged.
    pub traceparent: Option<String>,
}

/// A `traceparent` of the W3C form `00-<32 hex>-<16 hex>-<2 hex>`; anything else is dropped.
fn acceptable_traceparent(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2);
    ok.then(|| s.to_owned())
}

fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

/// Middleware: a span per request, the request id echoed back, one log line per response.
pub async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "http.request",
        http.method = %req.method(),
        http.route = Empty,
        http.status_code = Empty,
        request_id = %request_id,
        user_id = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    // Continue the caller's trace, if it sent one.
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&RequestHeaders(req.headers()))
    });
    let _ = span.set_parent(parent);
    let otel_context = span.context();
    let span_context = otel_context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
        span.record("span_id", tracing::field::display(span_context.span_id()));
    }
    let traceparent = req
        .headers()
        .get(&TRACEPARENT_HEADER)
        .and_then(acceptable_traceparent);
    req.extensions_mut().insert(CallContext {
        request_id: Some(request_id.clone()),
        traceparent,
    });
    let metrics = req
        .app_data::<actix_web::web::Data<crate::metrics::Metrics>>()
        .cloned();
    let method = req.method().to_string();
    if let Some(m) = &metrics {
        m.http_in_flight.inc();
    }
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    if let Some(m) = &metrics {
        m.http_in_flight.dec();
    }
    match result {
        Ok(mut response) => {
            let route = response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            let status = response.status().as_u16();
            if let Some(m) = &metrics {
                m.observe_request(&method, &route, status, elapsed);
            }
            span.record("http.route", route.as_str());
            span.record("http.status_code", status);
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            span.in_scope(|| {
                if status >= 500 {
                    tracing::error!(status, elapsed_ms, "request failed");
                } else {
                    tracing::info!(status, elapsed_ms, "request finished");
                }
            });
            Ok(response)
        }
        Err(e) => {
            span.in_scope(|| tracing::error!(error = %e, elapsed_ms, "request errored"));
            Err(e)
        }
    }
}

/// What calls made for this request should carry (see [`CallContext`]).
pub fn call_context_of(req: &actix_web::HttpRequest) -> CallContext {
    req.extensions()
        .get::<CallContext>()
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_passed_on() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            acceptable_traceparent(&HeaderValue::from_static(good)).as_deref(),
            Some(good)
        );
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(
                acceptable_traceparent(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(acceptable_request_id(&HeaderValue::from_static("abc-123")).is_some());
        assert!(acceptable_request_id(&HeaderValue::from_static("a b")).is_none());
        assert!(acceptable_request_id(&HeaderValue::from_str(&"x".repeat(129)).unwrap()).is_none());
    }
}
