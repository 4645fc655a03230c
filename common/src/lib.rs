//! What every service shares: configuration, telemetry, RFC 9457 errors, token verification,
//! cursor pagination, database and Redis pools, health endpoints, CORS and the HTTP server shell.
//!
//! Nothing in here knows about users, posts or messages: a service owns its domain, `common`
//! owns the plumbing that must behave the same in all three.

pub mod auth;
pub mod config;
pub mod db;
pub mod expiry;
pub mod graph_versions;
pub mod health;
pub mod http;
pub mod json;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod ratelimit;
pub mod redis;
pub mod request_meta;
pub mod retry;
pub mod service;
pub mod shed;
pub mod telemetry;
pub mod users_client;

/// The Tokio runtime the caller runs on, `None` outside one. A socket belongs to the runtime
/// that opened it, and each actix worker is a runtime of its own: the pools lend each runtime
/// the connections it opened (docs/adr/0032-connections-stay-with-their-runtime.md).
pub(crate) fn current_runtime() -> Option<tokio::runtime::Id> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|runtime| runtime.id())
}
