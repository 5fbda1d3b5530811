//! The ASG table's counters: what moves in the kernel on a new connection.
//!
//! - Allowed connections: every allow ends in the `ok` chain, whose first rules add the
//!   connection's first packet to [`ALLOWED_COUNTS`], a dynamic set with a counter per element,
//!   keyed by (source container, destination, protocol, port; ICMP: type << 8 | code). An
//!   element exists once a connection used it, so applying the table costs nothing per rule and
//!   a new connection one set update, whatever the number of rules. Which rule allowed an
//!   element's connections is read back from the rules in force ([`super::deciding`]).
//! - Refused connections: a named counter per reason ([`DENY_NETWORKS_RUNNING`], ...), and per
//!   deny log the connections its rate limit left unlogged (`*_log_dropped`).

use super::objects::SetObj;
use crate::asg::Lifecycle;

/// The dynamic set counting allowed new connections.
pub const ALLOWED_COUNTS: &str = "allowed_counts";

/// Its size: distinct (container, destination, protocol, port) keys kept. Past it, new keys are
/// not counted (the connections still pass: the update is a rule of its own).
pub const ALLOWED_COUNTS_SIZE: u32 = 65536;

pub const DENY_NETWORKS_RUNNING: &str = "deny_networks_running";
pub const DENY_NETWORKS_STAGING: &str = "deny_networks_staging";
pub const DEFAULT_DENY: &str = "default_deny";
pub const UNKNOWN_SOURCE: &str = "unknown_source";
pub const DENY_NETWORKS_DROPPED: &str = "deny_networks_log_dropped";
pub const DEFAULT_DENY_DROPPED: &str = "default_deny_log_dropped";
pub const UNKNOWN_SOURCE_DROPPED: &str = "unknown_source_log_dropped";

/// Every named counter of the table.
pub const COUNTERS: [&str; 7] = [
    DENY_NETWORKS_RUNNING,
    DENY_NETWORKS_STAGING,
    DEFAULT_DENY,
    UNKNOWN_SOURCE,
    DENY_NETWORKS_DROPPED,
    DEFAULT_DENY_DROPPED,
    UNKNOWN_SOURCE_DROPPED,
];

/// The counter of the deny networks of `lc`.
pub fn deny_networks(lc: Lifecycle) -> &'static str {
    match lc {
        Lifecycle::Running => DENY_NETWORKS_RUNNING,
        Lifecycle::Staging => DENY_NETWORKS_STAGING,
    }
}

pub fn allowed_counts_set() -> SetObj {
    SetObj::new(&format!(
        "type ipv4_addr . ipv4_addr . inet_proto . inet_service; size {ALLOWED_COUNTS_SIZE}; flags dynamic; counter;"
    ))
}

/// The `ok` chain's first rules: the connection counted under its key. ICMP's key is its type
/// and code (`th sport` reads both); other protocols' the destination port (`th dport`; a
/// protocol without ports gives whatever its header holds there, and the rule reads the
/// protocol only).
pub fn count_allowed() -> Vec<String> {
    let key = "ip saddr . ip daddr . meta l4proto";
    vec![
        format!("meta l4proto icmp update @{ALLOWED_COUNTS} {{ {key} . th sport }}"),
        format!("meta l4proto != icmp update @{ALLOWED_COUNTS} {{ {key} . th dport }}"),
    ]
}
