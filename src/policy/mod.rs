//! The policy server: store, authentication, and the external and internal APIs.

pub mod auth;
pub mod cc;
pub mod store;
