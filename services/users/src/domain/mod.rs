//! The rules of accounts, parsed at the edge: once a value has one of these types it is valid.

mod account;

pub use account::{Bio, DisplayName, Email, Login, Password, Username};
