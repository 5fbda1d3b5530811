//! Application security groups in the policy server (issue 14): the store ([`store`]) on every
//! backend, the cached selection the cells read ([`cache`]), the internal routes ([`internal`]),
//! the admin API shaped like Cloud Controller v3 ([`admin`]), and the optional Cloud Controller
//! syncer ([`syncer`]).

pub mod admin;
pub mod cache;
pub mod internal;
pub mod notify;
pub mod schema;
pub mod store;

pub use cache::AsgCache;
pub use store::{AsgError, AsgStore, Snapshot, SqlAsgStore, StoredGroup};
