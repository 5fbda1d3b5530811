//! The flow table `ip netman_flows`: the cell's denied-c2c log and audit mode, beside the
//! agent's own table and rendered here in one place. It runs after the agent's table (priority
//! -5 > -10), so it sees the policy marks, and before iptables' filter FORWARD (0), where the
//! networker's chain decides.
//!
//! ```text
//! table ip netman_flows {
//!   set local_dsts { type ipv4_addr; }      # this cell's containers
//!   set audit_dsts { type ipv4_addr; }      # the ones in audit mode
//!   set allowed_counted { type ipv4_addr . inet_proto . inet_service . mark; counter; }
//!   set ranges_counted  { type ipv4_addr . inet_proto . mark; counter; }  # the agent's elements, with the bit
//!   counter c2c_allowed {}  counter c2c_denied {}  counter c2c_audit {}    # new connections, by verdict
//!   counter denied_log_dropped {}           # denied connections the rate limit left unlogged
//!   counter audit_log_dropped {}
//!   chain count_allowed { ip daddr . meta l4proto . th dport . meta mark @allowed_counted return
//!                         ip daddr . meta l4proto . meta mark @ranges_counted return }
//!   chain audit_c2c { counter name "c2c_audit" meta mark set meta mark | 0x01000000
//!                     limit rate N/second burst N packets log prefix "AUDIT_C2C " group G return
//!                     counter name "audit_log_dropped" }
//!   chain log_denied_c2c { limit rate N/second burst N packets log prefix "DENY_C2C " group G return
//!                          counter name "denied_log_dropped" }
//!   chain forward { type filter hook forward priority -5; policy accept;
//!     ct state new meta mark & 0xffff0000 == 0x01000000 counter name "c2c_allowed" jump count_allowed
//!     ct state new meta mark & 0xffff0000 == 0 ip daddr @audit_dsts jump audit_c2c
//!     ct state new meta mark & 0xffff0000 == 0 ip daddr @local_dsts counter name "c2c_denied" [jump log_denied_c2c]
//!     ct state new meta mark 0 ip saddr @local_dsts meta oifkind "vxlan" counter name "c2c_denied_at_source" [jump log_denied_at_source]
//!   }
//!   }
//! }
//! ```
//! The last rule: a container whose app is no policy's source sends untagged packets, which the
//! networker refuses on this (the source) cell before they reach the overlay device; logged here
//! since no destination cell sees them.
//! "Would be denied" is exactly what the networker's chain rejects: a new connection to a local
//! container without the policy bit and without the ingress mark of NetIn (the high half of the
//! mark is 0). The table is replaced whole only at start; set and chain changes afterwards keep
//! the counters (the agent's own table is rebuilt at every full sync, which would reset them).
//! The counters count new connections (their first packet: lookups run only for those).

use super::plan::{Allow, Plan, RangeKey};
use crate::cell::marks::{ALLOWED_BIT, HIGH_MASK};
use crate::flowlog::kind::{
    C2C_AUDIT as AUDIT_PREFIX, C2C_DENIED as DENIED_PREFIX,
    C2C_DENIED_AT_SOURCE as AT_SOURCE_PREFIX,
};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const TABLE: &str = "netman_flows";
pub const PRIORITY: i32 = -5;
pub const DENIED_DROPPED: &str = "denied_log_dropped";
pub const AUDIT_DROPPED: &str = "audit_log_dropped";
pub const C2C_ALLOWED: &str = "c2c_allowed";
pub const C2C_DENIED: &str = "c2c_denied";
pub const C2C_AUDIT: &str = "c2c_audit";
pub const C2C_DENIED_AT_SOURCE: &str = "c2c_denied_at_source";
pub const AT_SOURCE_DROPPED: &str = "denied_at_source_log_dropped";
pub const ALLOWED_COUNTED: &str = "allowed_counted";
pub const RANGES_COUNTED: &str = "ranges_counted";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRules {
    /// Log denied c2c connections.
    pub denied: bool,
    pub group: u16,
    /// Rate limit of denied (and audit) log lines: the original's `iptables_denied_logs_per_sec`.
    pub per_sec: u32,
}

fn forward_rules(out: &mut String, rules: &FlowRules) {
    let _ = writeln!(
        out,
        "add rule ip {TABLE} forward ct state new meta mark & 0x{HIGH_MASK:08x} == 0x{ALLOWED_BIT:08x} counter name \"{C2C_ALLOWED}\" jump count_allowed"
    );
    let candidate = format!("ct state new meta mark & 0x{HIGH_MASK:08x} == 0");
    let _ = writeln!(
        out,
        "add rule ip {TABLE} forward {candidate} ip daddr @audit_dsts jump audit_c2c"
    );
    let log = if rules.denied {
        " jump log_denied_c2c"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "add rule ip {TABLE} forward {candidate} ip daddr @local_dsts counter name \"{C2C_DENIED}\"{log}"
    );
    let log = if rules.denied {
        " jump log_denied_at_source"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "add rule ip {TABLE} forward ct state new meta mark 0 ip saddr @local_dsts meta oifkind \"vxlan\" counter name \"{C2C_DENIED_AT_SOURCE}\"{log}"
    );
}

/// An element of `allowed_counted`: the agent's element with the bit the agent sets.
fn allow_element(a: &Allow) -> String {
    format!(
        "{} . {} . {} . 0x{:08x}",
        a.daddr,
        a.proto,
        a.port,
        a.mark | ALLOWED_BIT
    )
}

fn range_element(k: &RangeKey) -> String {
    format!("{} . {} . 0x{:08x}", k.daddr, k.proto, k.mark | ALLOWED_BIT)
}

fn element_lines(out: &mut String, verb: &str, set: &str, items: Vec<String>) {
    for chunk in items.chunks(2000) {
        let _ = writeln!(
            out,
            "{verb} element ip {TABLE} {set} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The counted sets' difference between two plans (unchanged elements keep their counters);
/// empty when nothing changed.
pub fn render_counted(old: &Plan, new: &Plan) -> String {
    let mut out = String::new();
    let gone = old
        .allowed
        .difference(&new.allowed)
        .map(allow_element)
        .collect();
    element_lines(&mut out, "delete", ALLOWED_COUNTED, gone);
    let gone = old
        .ranges
        .keys()
        .filter(|k| !new.ranges.contains_key(k))
        .map(range_element)
        .collect();
    element_lines(&mut out, "delete", RANGES_COUNTED, gone);
    let added = new
        .allowed
        .difference(&old.allowed)
        .map(allow_element)
        .collect();
    element_lines(&mut out, "add", ALLOWED_COUNTED, added);
    let added = new
        .ranges
        .keys()
        .filter(|k| !old.ranges.contains_key(k))
        .map(range_element)
        .collect();
    element_lines(&mut out, "add", RANGES_COUNTED, added);
    out
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
    let _ = writeln!(
        out,
        "add set ip {TABLE} {ALLOWED_COUNTED} {{ type ipv4_addr . inet_proto . inet_service . mark; counter; }}"
    );
    let _ = writeln!(
        out,
        "add set ip {TABLE} {RANGES_COUNTED} {{ type ipv4_addr . inet_proto . mark; counter; }}"
    );
    for counter in [
        C2C_ALLOWED,
        C2C_DENIED,
        C2C_AUDIT,
        C2C_DENIED_AT_SOURCE,
        DENIED_DROPPED,
        AUDIT_DROPPED,
        AT_SOURCE_DROPPED,
    ] {
        let _ = writeln!(out, "add counter ip {TABLE} {counter}");
    }
    let _ = writeln!(out, "add chain ip {TABLE} count_allowed");
    let _ = writeln!(
        out,
        "add rule ip {TABLE} count_allowed ip daddr . meta l4proto . th dport . meta mark @{ALLOWED_COUNTED} return"
    );
    let _ = writeln!(
        out,
        "add rule ip {TABLE} count_allowed ip daddr . meta l4proto . meta mark @{RANGES_COUNTED} return"
    );
    let _ = writeln!(out, "add chain ip {TABLE} audit_c2c");
    let _ = writeln!(
        out,
        "add rule ip {TABLE} audit_c2c counter name \"{C2C_AUDIT}\" meta mark set meta mark | 0x{ALLOWED_BIT:08x}"
    );
    let _ = writeln!(
        out,
        "add rule ip {TABLE} audit_c2c {limit} log prefix \"{AUDIT_PREFIX}\" group {group} return"
    );
    let _ = writeln!(
        out,
        "add rule ip {TABLE} audit_c2c counter name \"{AUDIT_DROPPED}\""
    );
    let _ = writeln!(out, "add chain ip {TABLE} log_denied_c2c");
    let _ = writeln!(
        out,
        "add rule ip {TABLE} log_denied_c2c {limit} log prefix \"{DENIED_PREFIX}\" group {group} return"
    );
    let _ = writeln!(
        out,
        "add rule ip {TABLE} log_denied_c2c counter name \"{DENIED_DROPPED}\""
    );
    let _ = writeln!(out, "add chain ip {TABLE} log_denied_at_source");
    let _ = writeln!(
        out,
        "add rule ip {TABLE} log_denied_at_source {limit} log prefix \"{AT_SOURCE_PREFIX}\" group {group} return"
    );
    let _ = writeln!(
        out,
        "add rule ip {TABLE} log_denied_at_source counter name \"{AT_SOURCE_DROPPED}\""
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

/// Packets and bytes of one counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// What `nft -j list table ip netman_flows` says about the counters.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub named: Vec<(String, Count)>,
    pub allowed: Vec<(Allow, Count)>,
    pub ranges: Vec<(RangeKey, Count)>,
}

fn count(v: &serde_json::Value) -> Option<Count> {
    Some(Count {
        packets: v.get("packets")?.as_u64()?,
        bytes: v.get("bytes")?.as_u64()?,
    })
}

/// The elements' keys back from nft's JSON (the mark without the bit).
fn allow_key(v: &[serde_json::Value]) -> Option<Allow> {
    match v {
        [ip, proto, port, mark] => Some(Allow {
            daddr: ip.as_str()?.parse().ok()?,
            proto: super::plan::Proto::parse(proto.as_str()?)?,
            port: u16::try_from(port.as_u64()?).ok()?,
            mark: u32::try_from(mark.as_u64()?).ok()? & !ALLOWED_BIT,
        }),
        _ => None,
    }
}

fn range_key(v: &[serde_json::Value]) -> Option<RangeKey> {
    match v {
        [ip, proto, mark] => Some(RangeKey {
            daddr: ip.as_str()?.parse().ok()?,
            proto: super::plan::Proto::parse(proto.as_str()?)?,
            mark: u32::try_from(mark.as_u64()?).ok()? & !ALLOWED_BIT,
        }),
        _ => None,
    }
}

pub fn parse_counters(json: &str) -> Counters {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out = Counters::default();
    for item in &items {
        if let Some(c) = item.get("counter") {
            if let (Some(name), Some(n)) = (c.get("name").and_then(|n| n.as_str()), count(c)) {
                out.named.push((name.to_string(), n));
            }
        }
        let Some(set) = item.get("set") else { continue };
        let name = set.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let elems = set
            .get("elem")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        for e in &elems {
            let Some(e) = e.get("elem") else { continue };
            let (Some(key), Some(n)) = (
                e.get("val")
                    .and_then(|v| v.get("concat"))
                    .and_then(|c| c.as_array()),
                e.get("counter").and_then(count),
            ) else {
                continue;
            };
            match name {
                ALLOWED_COUNTED => out.allowed.extend(allow_key(key).map(|k| (k, n))),
                RANGES_COUNTED => out.ranges.extend(range_key(key).map(|k| (k, n))),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::plan::Proto;

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
             add rule ip netman_flows forward ct state new meta mark & 0xffff0000 == 0x01000000 counter name \"c2c_allowed\" jump count_allowed\n\
             add rule ip netman_flows forward ct state new meta mark & 0xffff0000 == 0 ip daddr @audit_dsts jump audit_c2c\n\
             add rule ip netman_flows forward ct state new meta mark & 0xffff0000 == 0 ip daddr @local_dsts counter name \"c2c_denied\" jump log_denied_c2c\n\
             add rule ip netman_flows forward ct state new meta mark 0 ip saddr @local_dsts meta oifkind \"vxlan\" counter name \"c2c_denied_at_source\" jump log_denied_at_source\n"
        );
        let off = render_chain(&FlowRules {
            denied: false,
            ..on
        });
        assert!(
            off.contains("@local_dsts counter name \"c2c_denied\"\n"),
            "{off}"
        );
        assert!(
            off.ends_with("counter name \"c2c_denied_at_source\"\n"),
            "{off}"
        );
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
            {"set":{"family":"ip","name":"allowed_counted","table":"netman_flows","elem":[
              {"elem":{"val":{"concat":["10.255.2.2","tcp",8080,16777217]},"counter":{"packets":3,"bytes":180}}}]}},
            {"set":{"family":"ip","name":"ranges_counted","table":"netman_flows","elem":[
              {"elem":{"val":{"concat":["10.255.2.2","udp",16777218]},"counter":{"packets":1,"bytes":60}}},
              {"elem":{"val":{"concat":["bad","udp",1]},"counter":{"packets":1,"bytes":60}}}]}},
            {"counter":{"family":"ip","name":"denied_log_dropped","table":"netman_flows","handle":3,"packets":42,"bytes":2520}}]}"#;
        let ip = "10.255.2.2".parse().unwrap();
        assert_eq!(
            parse_counters(json),
            Counters {
                named: vec![(
                    "denied_log_dropped".into(),
                    Count {
                        packets: 42,
                        bytes: 2520
                    }
                )],
                allowed: vec![(
                    Allow {
                        daddr: ip,
                        proto: Proto::Tcp,
                        port: 8080,
                        mark: 1
                    },
                    Count {
                        packets: 3,
                        bytes: 180
                    }
                )],
                ranges: vec![(
                    RangeKey {
                        daddr: ip,
                        proto: Proto::Udp,
                        mark: 2
                    },
                    Count {
                        packets: 1,
                        bytes: 60
                    }
                )],
            }
        );
        assert_eq!(parse_counters("garbage"), Counters::default());
    }

    #[test]
    fn counted_sets_change_by_difference() {
        let ip = "10.255.2.2".parse().unwrap();
        let a = |port| Allow {
            daddr: ip,
            proto: Proto::Tcp,
            port,
            mark: 1,
        };
        let old = Plan {
            allowed: [a(80), a(81)].into(),
            ..Plan::default()
        };
        let mut new = Plan {
            allowed: [a(81), a(82)].into(),
            ..Plan::default()
        };
        new.ranges.insert(
            RangeKey {
                daddr: ip,
                proto: Proto::Udp,
                mark: 2,
            },
            crate::agent::plan::PortRanges::new(vec![(1000, 2000)]).unwrap(),
        );
        assert_eq!(
            render_counted(&old, &new),
            "delete element ip netman_flows allowed_counted { 10.255.2.2 . tcp . 80 . 0x01000001 }\n\
             add element ip netman_flows allowed_counted { 10.255.2.2 . tcp . 82 . 0x01000001 }\n\
             add element ip netman_flows ranges_counted { 10.255.2.2 . udp . 0x01000002 }\n"
        );
        assert_eq!(render_counted(&new, &new), "");
    }

    #[test]
    fn the_full_table_is_accepted_by_nft() {
        let rules = FlowRules {
            denied: true,
            group: 2,
            per_sec: 1,
        };
        let script = render_full(
            &rules,
            &BTreeSet::from(["10.255.1.2".parse().unwrap()]),
            &BTreeSet::new(),
        );
        let ns = format!("nmflowcheck{}", std::process::id());
        let run = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap()
        };
        assert!(run(&["netns", "add", &ns]).status.success());
        let out = crate::netns::run_in(
            &std::path::PathBuf::from(format!("/run/netns/{ns}")),
            move || super::super::nft::Nft::new("nft").run(&script),
        );
        run(&["netns", "del", &ns]);
        out.unwrap().unwrap();
    }
}
