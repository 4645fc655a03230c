//! SQL of the posts schema, one module per aggregate. Functions take an executor or a
//! connection; the handler owns the transaction.

pub mod accounts;
pub mod feed;
pub mod idempotency;
pub mod likes;
pub mod moderation;
pub mod posts;
