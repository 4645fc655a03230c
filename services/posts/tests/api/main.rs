//! The posts service's API tests: the real service and the users service it trusts, both
//! in-process on ephemeral ports, over a fresh PostgreSQL database and real Redis.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

mod helpers;
mod openapi;
mod session;
