//! The messaging service. Direct and group conversations, messages, read state and real-time delivery.
//!
//! Tokens are verified locally with keys from the users service's JWKS. Whether a user exists,
//! is suspended or blocks someone is asked of the users service; a send's answer is kept while
//! the versions users publishes for its accounts hold (`contacts`). Events reach sockets on every
//! replica through Redis (`realtime`). Routes live in `routes/`, SQL in `store/`.

pub mod config;
pub mod contacts;
pub mod domain;
pub mod error;
pub mod realtime;
pub mod routes;
pub mod startup;
pub mod store;
pub mod views;

pub use config::Settings;
pub use startup::{Application, openapi};
