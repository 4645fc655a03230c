//! SQL of the messaging schema. Functions take an executor or a connection; the handler owns
//! the transaction.

pub mod accounts;
pub mod conversations;
pub mod messages;
