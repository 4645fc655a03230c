//! The posts service. Posts, likes, replies, timelines and the home feed.
//!
//! Tokens are verified locally with keys from the users service's JWKS. What it needs about
//! users it asks the users service (`directory`), never its tables. Routes live in `routes/`,
//! rules in `domain/`, SQL in `store/`.

pub mod audit_report;
pub mod config;
pub mod directory;
pub mod domain;
pub mod error;
pub mod hot_posts;
pub mod recent_heads;
pub mod routes;
pub mod startup;
pub mod store;
pub mod subscription;
pub mod views;

pub use config::Settings;
pub use startup::{Application, openapi};
