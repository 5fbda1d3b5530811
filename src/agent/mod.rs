//! vxlan-policy-agent: turns the policies that touch this cell's apps into the cell's dataplane.
//!
//! Every poll interval the agent asks the policy server (mutual TLS) for `policies_last_updated`;
//! when it changed, when the container metadata store changed, or every full-sync interval it
//! fetches the policies of the local apps, plans the desired state ([`plan`]) and applies only the
//! difference to its own nftables table `ip netman_vpa` ([`nft`]) in one atomic transaction.
//!
//! The table marks packets of local policy-source containers with their app's tag (carried to the
//! other cell by VXLAN GBP) and marks allowed packets to local containers with
//! [`crate::cell::marks::ALLOWED_BIT`]. It never accepts or drops: the decision is the
//! networker's per-container iptables chain, which accepts packets carrying that bit before its
//! default REJECT.

pub mod app;
pub mod asg;
pub mod client;
pub mod config;
pub mod containers;
pub mod cycle;
pub mod error;
pub mod flow_table;
mod flow_wiring;
pub mod flows;
pub mod libnft;
pub mod metrics;
pub mod netout_counters;
pub mod netout_limits;
pub mod nft;
pub mod nft_rule_count;
pub mod plan;
pub mod server;
pub mod watch_loop;

pub use config::AgentConfig;
pub use cycle::Agent;
pub use error::Error;
