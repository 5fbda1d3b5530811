//! Service discovery in the policy server: internal routes and domains (external API), the
//! registry of app instances the cells report and the resolver table built from both (internal
//! API). Design and wire formats: docs/service-discovery.md.

pub mod external;
pub mod internal;
pub mod registry;
pub mod store;
pub mod validate;

pub use registry::Registry;
pub use store::{SdError, SdStore};
