//! The users service: accounts, credentials and tokens, profiles, the follow graph and blocks.
//!
//! It is the only service that signs tokens; it publishes the public keys as a JWKS so that the
//! other services verify locally. Routes live in `routes/`, rules in `domain/`, SQL in `store/`.

pub mod audit;
pub mod config;
pub mod domain;
pub mod error;
pub mod outbox;
pub mod passwords;
pub mod routes;
pub mod startup;
pub mod store;
pub mod tokens;

pub use config::Settings;
pub use startup::{Application, openapi};
