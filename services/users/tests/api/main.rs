//! The users service's API tests: the real service on an ephemeral port, over HTTP, against a
//! fresh PostgreSQL database per test and real Redis.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

mod admin;
mod audit;
mod auth;
mod bola;
mod connections;
mod deletion;
mod graph;
mod helpers;
mod http_errors;
mod isolation;
mod limits;
mod openapi;
mod profiles;
mod rollout;
mod tokens;
