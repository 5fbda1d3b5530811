//! The contract between the processes of one cell: what the networker writes and the policy
//! agent, netmon and the lab read, so that neither side imports the other.
//!
//! - [`marks`]: the packet mark layout (the source app's tag, the "allowed" bit, the ingress
//!   mark) shared by the overlay's VXLAN GBP, the agent's nftables table and the networker's
//!   iptables chains.
//! - [`store`]: the container metadata store (`store.json`, its lock and version files) with the
//!   one [`Container`] type and the one versioned [`Reader`].
//! - [`files`]: exclusive `flock`s and atomic replacement of small state files.

pub mod files;
pub mod marks;
pub mod store;

pub use store::{Container, Containers, Reader, Store, StoreError};

/// The overlay's VXLAN device on every cell (silk's name).
pub const DEFAULT_VTEP: &str = "silk-vtep";

/// The metadata key naming a container's app (its policy group).
pub const APP_KEY: &str = "policy_group_id";

/// The metadata key naming a container's workload (`app`, `task` or `staging`).
pub const WORKLOAD_KEY: &str = "container_workload";
