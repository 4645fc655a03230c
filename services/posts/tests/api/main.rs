//! The posts service's API tests: the real service and the users service it asks, both
//! in-process on ephemeral ports, over a fresh PostgreSQL database and real Redis.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

mod bola;
mod crash;
mod deletion;
mod faults;
mod feed;
mod held_heads;
mod helpers;
mod hot_posts;
mod idempotency;
mod likes;
mod lists;
mod openapi;
mod posts;
mod session;
mod tracing;
