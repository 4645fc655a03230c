//! The posts service. Posts, likes, replies, timelines and the home feed.
//!
//! Tokens are verified locally with keys from the users service's JWKS; nothing about users is
//! read from the database. Routes live in `routes/`.

pub mod config;
pub mod routes;
pub mod startup;

pub use config::Settings;
pub use startup::{Application, openapi};
