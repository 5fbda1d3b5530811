//! The flow table `ip netman_flows`: the cell's denied-c2c log and audit mode, beside the
//! agent's own table and rendered here in one place. It runs after the agent's table (priority
//! -5 > -10), so it sees the policy marks, and before iptables' filter FORWARD (0), where the
//! networker's chain decides.
//!
//! ```text
//! table ip netman_flows {
//!   set local_dsts { type ipv4_addr; }      # this cell's containers
//!   set audit_dsts { type ipv4_addr; }      # the ones in audit mode
//!   counter denied_log_dropped {}           # denied connections the rate limit left unlogged
//!   counter audit_log_dropped {}
//!   chain audit_c2c { meta mark set meta mark | 0x01000000
//!                     limit rate N/second burst N packets log prefix "AUDIT_C2C " group G return
//!                     counter name "audit_log_dropped" }
//!   chain log_denied_c2c { limit rate N/second burst N packets log prefix "DENY_C2C " group G return
//!                          counter name "denied_log_dropped" }
//!   chain forward { type filter hook forward priority -5; policy accept;
//!     ct state new meta mark & 0xffff0000 == 0 ip daddr @audit_dsts jump audit_c2c
//!     ct state new meta mark & 0xffff0000 == 0 ip daddr @local_dsts jump log_denied_c2c  # when on
//!   }
//! }
//! ```
//! "Would be denied" is exactly what the networker's chain rejects: a new connection to a local
//! container without the policy bit and without the ingress mark of NetIn (the high half of the
//! mark is 0). The table is replaced whole only at start; set and chain changes afterwards keep
//! the named counters.

use crate::cell::marks::{ALLOWED_BIT, HIGH_MASK};
use crate::flowlog::kind::{C2C_AUDIT, C2C_DENIED};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const TABLE: &str = "netman_flows";
pub const PRIORITY: i32 = -5;
pub const DENIED_DROPPED: &str = "denied_log_dropped";
pub const AUDIT_DROPPED: &str = "audit_log_dropped";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRules {
    /// Log denied c2c connections.
    pub denied: bool,
    pub group: u16,
    /// Rate limit of denied (and audit) log lines: the original's `iptables_denied_logs_per_sec`.
    pub per_sec: u32,
}

fn forward_rules(out: &mut String, rules: &FlowRules) {
    let candidate = format!("ct state new meta mark & 0x{HIGH_MASK:08x} == 0");
    let _ = writeln!(
        out,
        "add rule ip {TABLE} forward {candidate} ip daddr @audit_dsts jump audit_c2c"
    );
    if rules.denied {
        let _ = writeln!(
            out,
            "add rule ip {TABLE} forward {candidate} ip daddr @local_dsts jump log_denied_c2c"
        );
    }
}

fn elements(out: &mut String, set: &str, ips: &BTreeSet<Ipv4Addr>) {
    let _ = writeln!(out, "flush set ip {TABLE} {set}");
    if !ips.is_empty() {
        let list: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(
            out,
            "add element ip {TABLE} {set} {{ {} }}",
            list.join(", ")
        );
    }
}

/// The whole table, replacing whatever a previous run left, in one transaction.
pub fn render_full(
    rules: &FlowRules,
    local: &BTreeSet<Ipv4Addr>,
    audit: &BTreeSet<Ipv4Addr>,
) -> String {
    let (group, n) = (rules.group, rules.per_sec);
    let limit = format!("limit rate {n}/second burst {n} packets");
    let mut out = format!("add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip {TABLE}\n");
    for set in ["local_dsts", "audit_dsts"] {
        let _ = writeln!(out, "add set ip {TABLE} {set} {{ type ipv4_addr; }}");
    }
    for counter in [DENIED_DROPPED, AUDIT_DROPPED] {
        let _ = writeln!(out, "add counter ip {TABLE} {counter}");
    }
    let _ = writeln!(out, "add chain ip {TABLE} audit_c2c");
    let _ = writeln!(
        out,
        "add rule ip {TABLE} audit_c2c meta mark set meta mark | 0x{ALLOWED_BIT:08x}"
    );
    let _ = writeln!(
        out,
        "add rule ip {TABLE} audit_c2c {limit} log prefix \"{C2C_AUDIT}\" group {group} return"
    );
    let _ = writeln!(
        out,
        "add rule ip {TABLE} audit_c2c counter name \"{AUDIT_DROPPED}\""
    );
    let _ = writeln!(out, "add chain ip {TABLE} log_denied_c2c");
    let _ = writeln!(
        out,
        "add rule ip {TABLE} log_denied_c2c {limit} log prefix \"{C2C_DENIED}\" group {group} return"
    );
    let _ = writeln!(
        out,
        "add rule ip {TABLE} log_denied_c2c counter name \"{DENIED_DROPPED}\""
    );
    let _ = writeln!(
        out,
        "add chain ip {TABLE} forward {{ type filter hook forward priority {PRIORITY}; policy accept; }}"
    );
    forward_rules(&mut out, rules);
    elements(&mut out, "local_dsts", local);
    elements(&mut out, "audit_dsts", audit);
    out
}

/// New contents of both sets, in one transaction.
pub fn render_sets(local: &BTreeSet<Ipv4Addr>, audit: &BTreeSet<Ipv4Addr>) -> String {
    let mut out = String::new();
    elements(&mut out, "local_dsts", local);
    elements(&mut out, "audit_dsts", audit);
    out
}

/// The forward chain's rules again (denied logging switched).
pub fn render_chain(rules: &FlowRules) -> String {
    let mut out = format!("flush chain ip {TABLE} forward\n");
    forward_rules(&mut out, rules);
    out
}

/// The named counters' packet counts from `nft -j list counters table ip netman_flows`.
pub fn parse_counters(json: &str) -> Vec<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| {
            let c = i.get("counter")?;
            Some((
                c.get("name")?.as_str()?.to_string(),
                c.get("packets")?.as_u64()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_logging_adds_one_rule_and_audit_always_runs_first() {
        let on = FlowRules {
            denied: true,
            group: 2,
            per_sec: 1,
        };
        let chain = render_chain(&on);
        assert_eq!(
            chain,
            "flush chain ip netman_flows forward\n\
             add rule ip netman_flows forward ct state new meta mark & 0xffff0000 == 0 ip daddr @audit_dsts jump audit_c2c\n\
             add rule ip netman_flows forward ct state new meta mark & 0xffff0000 == 0 ip daddr @local_dsts jump log_denied_c2c\n"
        );
        let off = render_chain(&FlowRules {
            denied: false,
            ..on
        });
        assert_eq!(off.lines().count(), 2);
        let full = render_full(
            &on,
            &BTreeSet::from(["10.255.1.2".parse().unwrap()]),
            &BTreeSet::new(),
        );
        assert!(full.contains(
            "add rule ip netman_flows log_denied_c2c limit rate 1/second burst 1 packets log prefix \"DENY_C2C \" group 2 return\n"
        ));
        assert!(full.contains("add element ip netman_flows local_dsts { 10.255.1.2 }\n"));
        assert!(!full.contains("add element ip netman_flows audit_dsts"));
    }

    #[test]
    fn counters_are_read_from_nft_json() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
            {"counter":{"family":"ip","name":"denied_log_dropped","table":"netman_flows","handle":3,"packets":42,"bytes":2520}},
            {"counter":{"family":"ip","name":"audit_log_dropped","table":"netman_flows","handle":4,"packets":0,"bytes":0}}]}"#;
        assert_eq!(
            parse_counters(json),
            vec![
                ("denied_log_dropped".into(), 42),
                ("audit_log_dropped".into(), 0)
            ]
        );
        assert!(parse_counters("garbage").is_empty());
    }
}
