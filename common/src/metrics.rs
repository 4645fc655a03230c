//! Prometheus metrics, served at `/metrics` by every service.
//!
//! Requests are counted and timed by route *pattern* (unmatched paths fold into one label, so a
//! scanner cannot blow up the series count); pools are sampled at scrape time; the rest is
//! recorded where it happens: Redis errors, cache hits and misses, calls to other services,
//! WebSocket connections and slow consumers cut off.

use crate::health::Readiness;
use actix_web::{HttpResponse, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::OnceLock;
use std::time::Duration;
use tracing_subscriber::layer::Context;

/// Every metric of one service instance, in its own registry (tests run several instances in
/// one process).
pub struct Metrics {
    registry: Registry,
    /// `http_requests_total{method, route, status}`.
    pub http_requests: IntCounterVec,
    /// `http_request_duration_seconds{method, route}`.
    pub http_duration: HistogramVec,
    /// `http_requests_in_flight`.
    pub http_in_flight: IntGauge,
    /// `db_pool_connections{state="total|idle|max"}`, sampled at scrape time.
    pub db_pool: IntGaugeVec,
    /// `redis_pool_connections{state="total|available|waiting"}`, sampled at scrape time.
    pub redis_pool: IntGaugeVec,
    /// `redis_errors_total{operation}`.
    pub redis_errors: IntCounterVec,
    /// `cache_requests_total{cache, result="hit|miss"}`.
    pub cache: IntCounterVec,
    /// `upstream_request_duration_seconds{target, operation}`.
    pub upstream_duration: HistogramVec,
    /// `upstream_errors_total{target, operation, kind}`.
    pub upstream_errors: IntCounterVec,
    /// `websocket_connections`.
    pub ws_connections: IntGauge,
    /// `websocket_slow_consumers_dropped_total`.
    pub ws_dropped_slow: IntCounter,
    /// `http_requests_shed_total`: answered 503 at once because the process was at its bound
    /// of requests in flight (`crate::shed`).
    pub requests_shed: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<IntCounterVec> {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<HistogramVec> {
            let metric = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<IntGaugeVec> {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let http_requests = counter(
            "http_requests_total",
            "HTTP requests by route pattern and status",
            &["method", "route", "status"],
        )?;
        let http_duration = histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            &["method", "route"],
        )?;
        let http_in_flight =
            IntGauge::new("http_requests_in_flight", "HTTP requests being served")?;
        registry.register(Box::new(http_in_flight.clone()))?;
        let db_pool = gauges(
            "db_pool_connections",
            "PostgreSQL pool connections",
            &["state"],
        )?;
        let redis_pool = gauges(
            "redis_pool_connections",
            "Redis pool connections",
            &["state"],
        )?;
        let redis_errors = counter(
            "redis_errors_total",
            "Redis commands that failed or timed out",
            &["operation"],
        )?;
        let cache = counter(
            "cache_requests_total",
            "Cache lookups",
            &["cache", "result"],
        )?;
        let upstream_duration = histogram(
            "upstream_request_duration_seconds",
            "Calls to other services",
            &["target", "operation"],
        )?;
        let upstream_errors = counter(
            "upstream_errors_total",
            "Failed calls to other services",
            &["target", "operation", "kind"],
        )?;
        let ws_connections = IntGauge::new("websocket_connections", "Open WebSocket connections")?;
        registry.register(Box::new(ws_connections.clone()))?;
        registry.register(Box::new(pool_acquire_seconds().clone()))?;
        registry.register(Box::new(db_connection_checks().clone()))?;
        let ws_dropped_slow = IntCounter::new(
            "websocket_slow_consumers_dropped_total",
            "Sockets cut off for falling behind",
        )?;
        registry.register(Box::new(ws_dropped_slow.clone()))?;
        let requests_shed = IntCounter::new(
            "http_requests_shed_total",
            "Requests refused at once because the process had as many in flight as it may",
        )?;
        registry.register(Box::new(requests_shed.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            db_pool,
            redis_pool,
            redis_errors,
            cache,
            upstream_duration,
            upstream_errors,
            ws_connections,
            ws_dropped_slow,
            requests_shed,
        })
    }

    /// Registers a metric kept by another part of the service.
    pub fn register(&self, metric: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        Ok(self.registry.register(metric)?)
    }

    /// Records one served request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// Records one call to another service.
    pub fn observe_upstream(
        &self,
        target: &str,
        operation: &str,
        elapsed: Duration,
        error: Option<&str>,
    ) {
        self.upstream_duration
            .with_label_values(&[target, operation])
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            self.upstream_errors
                .with_label_values(&[target, operation, kind])
                .inc();
        }
    }

    /// Records a cache lookup.
    pub fn observe_cache(&self, cache: &str, hit: bool) {
        self.cache
            .with_label_values(&[cache, if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// The text exposition of every metric, pools sampled now.
    pub fn render(&self, readiness: &Readiness) -> String {
        let db = &readiness.db;
        self.db_pool
            .with_label_values(&["total"])
            .set(i64::from(db.size()));
        self.db_pool
            .with_label_values(&["idle"])
            .set(i64::try_from(db.num_idle()).unwrap_or(i64::MAX));
        self.db_pool
            .with_label_values(&["max"])
            .set(i64::from(db.options().get_max_connections()));
        let status = readiness.redis.status();
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.redis_pool
            .with_label_values(&["total"])
            .set(as_i64(status.size));
        self.redis_pool
            .with_label_values(&["available"])
            .set(as_i64(status.available));
        self.redis_pool
            .with_label_values(&["waiting"])
            .set(as_i64(status.waiting));
        self.encode()
    }

    /// The text exposition of every metric as it stands (pools not sampled).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `db_pool_acquire_seconds`: how long requests waited for a PostgreSQL connection. sqlx
/// reports every acquisition as a `sqlx::pool::acquire` event; [`PoolWaitLayer`] turns those
/// into this histogram. It is process-wide (the events do not say which pool), and registered in
/// every instance's registry.
pub fn pool_acquire_seconds() -> &'static prometheus::Histogram {
    static HISTOGRAM: OnceLock<prometheus::Histogram> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "db_pool_acquire_seconds",
                "Time to get a PostgreSQL connection from the pool",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("the histogram's options are valid")
    })
}

/// `db_connection_checks_total`: pooled PostgreSQL connections pinged as they were checked
/// out, because they were in doubt (docs/adr/0021). Process-wide, as the histogram above.
pub fn db_connection_checks() -> &'static IntCounter {
    static COUNTER: OnceLock<IntCounter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        IntCounter::new(
            "db_connection_checks_total",
            "PostgreSQL connections pinged on checkout because they were in doubt",
        )
        .expect("the counter's options are valid")
    })
}

/// A tracing layer that records sqlx's pool acquisition times in [`pool_acquire_seconds`].
pub struct PoolWaitLayer;

impl PoolWaitLayer {
    /// The only events this layer wants, so no other callsite is enabled for it.
    pub fn filter() -> tracing_subscriber::filter::Targets {
        tracing_subscriber::filter::Targets::new()
            .with_target("sqlx::pool::acquire", tracing::Level::TRACE)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PoolWaitLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        struct AcquiredAfter(Option<f64>);
        impl tracing::field::Visit for AcquiredAfter {
            fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
                if field.name() == "acquired_after_secs" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(
                &mut self,
                _field: &tracing::field::Field,
                _value: &dyn std::fmt::Debug,
            ) {
            }
        }
        let mut seconds = AcquiredAfter(None);
        event.record(&mut seconds);
        if let Some(seconds) = seconds.0 {
            pool_acquire_seconds().observe(seconds);
        }
    }
}

/// `GET /metrics`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape));
}

async fn scrape(metrics: web::Data<Metrics>, readiness: web::Data<Readiness>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render(&readiness))
}
