//! What every service shares: configuration, telemetry, RFC 9457 errors, token verification,
//! cursor pagination, database and Redis pools, health endpoints, CORS and the HTTP server shell.
//!
//! Nothing in here knows about users, posts or messages: a service owns its domain, `common`
//! owns the plumbing that must behave the same in all three.

pub mod auth;
pub mod config;
pub mod db;
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
