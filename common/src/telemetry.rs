//! Logging and request spans.
//!
//! [`init`] installs a `tracing` subscriber filtered by `RUST_LOG`, printing JSON lines when
//! `LOG_FORMAT=json` and human-readable lines otherwise. [`trace_request`] gives every request a
//! span carrying its method, route pattern, status and request id (the incoming `X-Request-Id`
//! when it is sane, else a new UUID), which it echoes in the response.

use crate::config::{ConfigError, Env};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use std::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_subscriber::EnvFilter;
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
        })
    }
}

/// Keeps telemetry running; dropping it flushes what is buffered.
#[derive(Debug)]
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    _private: (),
}

/// Installs the global subscriber for `service`. A second call (as in tests) is a no-op.
pub fn init(service: &'static str, settings: &TelemetrySettings) -> TelemetryGuard {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().compact())
            .try_init(),
    };
    if result.is_ok() {
        tracing::info!(service, "telemetry initialised");
    }
    TelemetryGuard { _private: () }
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
    );
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
