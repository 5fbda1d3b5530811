//! Adopting a database of the original policy server (cf-networking-release at HEAD, or the
//! older netman-release) in place, and the way back: `policy-server migrate` and
//! `policy-server migrate --to-original`. See docs/store.md, "Coming from cf-networking".

pub(crate) mod bridge;
pub mod command;
pub mod convert;
pub mod detect;
pub mod original_schema;

pub use command::{migrate, MigrateOptions};
pub use detect::{detect, Era, Found, Inspect, Original};
