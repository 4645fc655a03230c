//! The messaging service's API tests: two replicas of the service and the users service, all
//! in-process on ephemeral ports, over a fresh PostgreSQL database and real Redis.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

mod bola;
mod conversations;
mod crash;
mod deletion;
mod helpers;
mod messages;
mod openapi;
mod session;
mod stream;
