//! The messaging service. Direct and group conversations, messages, read state and real-time delivery.
//!
//! Tokens are verified locally with keys from the users service's JWKS; nothing about users is
//! read from the database. Routes live in `routes/`.

pub mod config;
pub mod routes;
pub mod startup;

pub use config::Settings;
pub use startup::{Application, openapi};
