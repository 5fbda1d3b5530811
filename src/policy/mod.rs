//! The policy server: store, authentication, and the external and internal APIs.

pub mod admin;
pub mod adopt;
pub mod app;
pub mod asg;
pub mod auth;
pub mod authz;
pub mod cc;
pub mod cleanup;
pub mod config;
pub mod external;
pub mod internal;
pub mod metered_store;
pub mod sd;
pub mod security_groups;
pub mod store;
pub mod transfer;
pub mod validate;
pub mod watch;
