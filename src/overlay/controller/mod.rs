//! The lease controller: hands every cell a subnet of the overlay network over mutual TLS
//! (acquire, renew, release, list), reclaims expired leases, and reports pool metrics.
//!
//! [`config`] the keys and checks, [`leases`] the logic (no HTTP), [`api`] the routes,
//! [`metrics`] the gauges, [`error`] what can fail and its HTTP status, [`app`] the running
//! daemon.

pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod leases;
pub mod metrics;

pub use api::ApiHandler;
pub use app::{start, RunningController};
pub use config::{ControllerConfig, DatabaseConfig};
pub use error::{Error, ErrorKind};
pub use leases::{Controller, PoolStats};
pub use metrics::ControllerMetrics;
