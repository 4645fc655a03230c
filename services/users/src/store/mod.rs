//! SQL of the users schema, one module per aggregate. Functions take an executor or a
//! connection; the handler owns the transaction.

pub mod accounts;
pub mod audit;
pub mod graph;
pub mod outbox;
pub mod refresh_tokens;
