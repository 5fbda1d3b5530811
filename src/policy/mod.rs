//! The policy server: store, authentication, and the external and internal APIs.

pub mod store;
