//! The per-cell overlay daemon: gets its lease (rediscovered from the VTEP after a restart),
//! keeps the VTEP, renews the lease and converges the other cells' routes, neighbours and FDB
//! entries every poll interval, and tells the CNI plugin its subnet and MTU.
//!
//! [`config`] the keys and checks, [`lease`] the logic, [`vtep`] the VXLAN device through
//! netlink, [`api`] what the plugin is told, [`metrics`], [`error`], [`app`] the running daemon.

pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod vtep;

pub use api::{InfoHandler, NetworkInfo};
pub use app::{start, RunningDaemon};
pub use config::DaemonConfig;
pub use error::Error;
pub use lease::Daemon;
pub use metrics::DaemonMetrics;
