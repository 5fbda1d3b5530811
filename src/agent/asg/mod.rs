//! Dynamic application security groups on the cell (issue 14): the agent enforces, per
//! container, the union of the globally enabled groups and the groups bound to the container's
//! space for its lifecycle, with the deny networks beating every allow, in its own nftables table
//! `ip netman_asg` ([`compile`]). Every change (a group edited, bound or unbound, a container
//! created or removed) is one transaction of element changes ([`objects`]); the loop fetches the
//! groups only after the policy server's version moved ([`sync`], [`client`]). The force
//! endpoints answer as the original's ([`endpoints`]); the flow log names the rules the table's
//! log prefixes point at ([`flow_rules`]).

pub mod bulk;
pub mod client;
pub mod compile;
pub mod counters;
pub mod counting;
pub mod deciding;
pub mod drift;
pub mod endpoints;
#[cfg(test)]
mod eval;
pub mod objects;
pub mod prefix;
pub mod segments;
pub mod sync;

pub mod flow_rules;

pub use compile::{compile, Compiled, DenyNetworks, LoggedRule, Settings};
pub use prefix::LogPrefix;
pub use sync::{AsgAgent, AsgMetrics};
