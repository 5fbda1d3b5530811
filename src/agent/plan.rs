//! The planner: from the local containers and the policies that touch their apps, the desired
//! dataplane state as plain values (no kernel, no text). Rendering is [`super::nft`]'s job.

use crate::api::policy::{parse_tag, Policy};
use crate::cell::marks::MAX_TAG;
use crate::cell::Container;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// Port ranges up to this many ports are planned as single ports (hash-set elements, one lookup
/// for all of them); wider ranges go to a chain of their own ([`PortRanges`]).
pub const EXPAND_RANGES_UP_TO: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// "Packets to `daddr` on `proto` to destination port `port` with packet mark `mark` (the source
/// app's tag) are allowed": one element of the hash set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Allow {
    pub daddr: Ipv4Addr,
    pub proto: Proto,
    pub port: u16,
    pub mark: u32,
}

/// A (destination, protocol, source tag) with port ranges too wide to expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RangeKey {
    pub daddr: Ipv4Addr,
    pub proto: Proto,
    pub mark: u32,
}

/// Sorted, non-overlapping port ranges, each wider than [`EXPAND_RANGES_UP_TO`] ports. One
/// chain of the agent's table checks them; every (destination, protocol, tag) with the same
/// ranges shares that chain, so the per-connection cost is one hash lookup and one small range
/// check, however many wide ranges the cell holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRanges(Vec<(u16, u16)>);

/// Up to this many ranges, a chain's name spells them out; beyond, it is a hash of them.
const SPELLED_OUT_RANGES: usize = 16;

impl PortRanges {
    /// `None` unless the ranges are non-empty, each `start <= end`, sorted, and neither
    /// overlapping nor adjacent (adjacent ones are one range).
    pub fn new(ranges: Vec<(u16, u16)>) -> Option<PortRanges> {
        let ordered = ranges.iter().all(|(s, e)| s <= e)
            && ranges
                .windows(2)
                .all(|w| u32::from(w[0].1) + 1 < u32::from(w[1].0));
        (ordered && !ranges.is_empty()).then_some(PortRanges(ranges))
    }

    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// The name of the chain that checks these ranges: `ports_8000_8999_20000_20999`, or
    /// `ports_h<64-bit FNV-1a>` for long lists (a collision is refused by the planner).
    pub fn chain_name(&self) -> String {
        if self.0.len() <= SPELLED_OUT_RANGES {
            let mut name = String::from("ports");
            for (s, e) in &self.0 {
                name.push_str(&format!("_{s}_{e}"));
            }
            return name;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (s, e) in &self.0 {
            for b in s.to_be_bytes().into_iter().chain(e.to_be_bytes()) {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("ports_h{h:016x}")
    }
}

/// The complete desired state of one cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Local containers of apps that are a policy source: IP -> their app's tag.
    pub source_tags: BTreeMap<Ipv4Addr, u32>,
    /// Allowed single ports (ranges of up to [`EXPAND_RANGES_UP_TO`] ports, expanded).
    pub allowed: BTreeSet<Allow>,
    /// Wider port ranges, merged per (destination, protocol, source tag).
    pub ranges: BTreeMap<RangeKey, PortRanges>,
}

impl Plan {
    pub fn element_count(&self) -> usize {
        self.source_tags.len() + self.allowed.len() + self.ranges.len()
    }

    /// The distinct range lists: one chain each.
    pub fn range_chains(&self) -> BTreeSet<&PortRanges> {
        self.ranges.values().collect()
    }
}

/// A policy or container the planner had to leave out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped(pub String);

/// Plans the cell. Pure: same input, same output. Containers without an app take no part.
pub fn plan(containers: &[Container], policies: &[Policy]) -> (Plan, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let by_app = local_apps(containers, &mut skipped);
    let mut source_tags = BTreeMap::new();
    let mut ranges: BTreeMap<RangeKey, Vec<(u16, u16)>> = BTreeMap::new();
    for p in policies {
        let src_ips = by_app.get(p.source.id.as_str());
        let dst_ips = by_app.get(p.destination.id.as_str());
        if src_ips.is_none() && dst_ips.is_none() {
            continue;
        }
        let tag = match source_tag(p) {
            Ok(t) => t,
            Err(why) => {
                skipped.push(why);
                continue;
            }
        };
        for ip in src_ips.into_iter().flatten() {
            source_tags.insert(*ip, tag);
        }
        let Some(ips) = dst_ips else { continue };
        let (proto, start, end) = match destination(p) {
            Ok(d) => d,
            Err(why) => {
                skipped.push(why);
                continue;
            }
        };
        for ip in ips {
            let key = RangeKey {
                daddr: *ip,
                proto,
                mark: tag,
            };
            ranges.entry(key).or_default().push((start, end));
        }
    }
    let (allowed, ranges) = elements(ranges, &mut skipped);
    let plan = Plan {
        source_tags,
        allowed,
        ranges,
    };
    (plan, skipped)
}

/// App -> its local IPs (sorted, deduplicated); an IP claimed twice keeps its first handle.
fn local_apps<'a>(
    containers: &'a [Container],
    skipped: &mut Vec<Skipped>,
) -> BTreeMap<&'a str, BTreeSet<Ipv4Addr>> {
    let mut by_app: BTreeMap<&str, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    let mut owner: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    let mut sorted: Vec<(&str, Ipv4Addr, &str)> = containers
        .iter()
        .filter_map(|c| Some((c.handle.as_str(), c.ip, c.app()?)))
        .collect();
    sorted.sort();
    for (handle, ip, app) in sorted {
        if let Some(other) = owner.get(&ip) {
            skipped.push(Skipped(format!(
                "container {handle} has IP {ip} already used by {other}"
            )));
            continue;
        }
        owner.insert(ip, handle);
        by_app.entry(app).or_default().insert(ip);
    }
    by_app
}

/// The policy's source tag (what the source's packets are marked with).
fn source_tag(p: &Policy) -> Result<u32, Skipped> {
    match p.source.tag.as_deref().and_then(parse_tag) {
        Some(t) if (1..=MAX_TAG).contains(&t) => Ok(t),
        _ => Err(Skipped(format!(
            "policy {} -> {}: source tag {:?} is not a 16-bit hex tag",
            p.source.id, p.destination.id, p.source.tag
        ))),
    }
}

/// The policy's destination protocol and port range.
fn destination(p: &Policy) -> Result<(Proto, u16, u16), Skipped> {
    let (src, dst) = (&p.source.id, &p.destination.id);
    let Some(proto) = Proto::parse(&p.destination.protocol) else {
        return Err(Skipped(format!(
            "policy {src} -> {dst}: protocol {:?} is not tcp or udp",
            p.destination.protocol
        )));
    };
    let (start, end) = (p.destination.ports.start, p.destination.ports.end);
    let end = if end == 0 { start } else { end };
    if !(1..=65535).contains(&start) || !(start..=65535).contains(&end) {
        return Err(Skipped(format!(
            "policy {src} -> {dst}: invalid port range {start}-{end}"
        )));
    }
    Ok((proto, start as u16, end as u16))
}

/// The set elements: merged ranges per (destination, protocol, tag); narrow ranges expanded to
/// single ports, wide ones kept as the key's [`PortRanges`].
fn elements(
    ranges: BTreeMap<RangeKey, Vec<(u16, u16)>>,
    skipped: &mut Vec<Skipped>,
) -> (BTreeSet<Allow>, BTreeMap<RangeKey, PortRanges>) {
    let mut allowed = BTreeSet::new();
    let mut wide_of: BTreeMap<RangeKey, PortRanges> = BTreeMap::new();
    for (key, list) in ranges {
        let mut wide = Vec::new();
        for (start, end) in merge(list) {
            if u32::from(end - start) < EXPAND_RANGES_UP_TO {
                allowed.extend((start..=end).map(|port| Allow {
                    daddr: key.daddr,
                    proto: key.proto,
                    port,
                    mark: key.mark,
                }));
            } else {
                wide.push((start, end));
            }
        }
        if !wide.is_empty() {
            wide_of.insert(key, PortRanges(wide));
        }
    }
    let mut by_name: BTreeMap<String, PortRanges> = BTreeMap::new();
    wide_of.retain(|key, ports| match by_name.get(&ports.chain_name()) {
        Some(other) if other != ports => {
            skipped.push(Skipped(format!(
                "{} {} tag {:04X}: port ranges {:?} hash to the chain name of {:?}",
                key.daddr, key.proto, key.mark, ports.0, other.0
            )));
            false
        }
        _ => {
            by_name.insert(ports.chain_name(), ports.clone());
            true
        }
    });
    (allowed, wide_of)
}

/// Single ports stay as they are (they go to the hash set, where a duplicate is the same
/// element); overlapping or adjacent port ranges are merged.
fn merge(mut list: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    list.sort_unstable();
    list.dedup();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(list.len());
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for (s, e) in list {
        if s == e {
            out.push((s, e));
            continue;
        }
        match ranges.last_mut() {
            Some(last) if u32::from(s) <= u32::from(last.1) + 1 => last.1 = last.1.max(e),
            _ => ranges.push((s, e)),
        }
    }
    out.extend(ranges);
    out
}

/// What changes between two plans, element by element, and the range chains that come or go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub remove_sources: Vec<Ipv4Addr>,
    pub add_sources: Vec<(Ipv4Addr, u32)>,
    pub remove_allowed: Vec<Allow>,
    pub add_allowed: Vec<Allow>,
    pub remove_ranges: Vec<RangeKey>,
    pub add_ranges: Vec<(RangeKey, PortRanges)>,
    /// Chains to create before any element points at them.
    pub add_chains: Vec<PortRanges>,
    /// Chains to delete after no element points at them any more.
    pub remove_chains: Vec<PortRanges>,
}

impl Diff {
    pub fn between(old: &Plan, new: &Plan) -> Diff {
        let mut d = Diff::default();
        for (ip, tag) in &old.source_tags {
            if new.source_tags.get(ip) != Some(tag) {
                d.remove_sources.push(*ip);
            }
        }
        for (ip, tag) in &new.source_tags {
            if old.source_tags.get(ip) != Some(tag) {
                d.add_sources.push((*ip, *tag));
            }
        }
        d.remove_allowed = old.allowed.difference(&new.allowed).copied().collect();
        d.add_allowed = new.allowed.difference(&old.allowed).copied().collect();
        for (key, ports) in &old.ranges {
            if new.ranges.get(key) != Some(ports) {
                d.remove_ranges.push(*key);
            }
        }
        for (key, ports) in &new.ranges {
            if old.ranges.get(key) != Some(ports) {
                d.add_ranges.push((*key, ports.clone()));
            }
        }
        let (old_chains, new_chains) = (old.range_chains(), new.range_chains());
        d.add_chains = new_chains
            .difference(&old_chains)
            .map(|p| (*p).clone())
            .collect();
        d.remove_chains = old_chains
            .difference(&new_chains)
            .map(|p| (*p).clone())
            .collect();
        d
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.remove_sources.len()
            + self.add_sources.len()
            + self.remove_allowed.len()
            + self.add_allowed.len()
            + self.remove_ranges.len()
            + self.add_ranges.len()
            + self.add_chains.len()
            + self.remove_chains.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(handle: &str, ip: &str, app: &str) -> Container {
        Container::for_app(handle, ip.parse().unwrap(), app)
    }

    fn p(src: &str, stag: &str, dst: &str, proto: &str, start: i64, end: i64) -> Policy {
        let mut p = Policy::new(src, dst, proto, start, end);
        p.source.tag = Some(stag.into());
        p.destination.tag = Some("00FF".into());
        p
    }

    fn singles(plan: &Plan) -> Vec<String> {
        plan.allowed
            .iter()
            .map(|a| format!("{} {} {} {}", a.daddr, a.proto, a.port, a.mark))
            .collect()
    }

    fn wide(plan: &Plan) -> Vec<String> {
        plan.ranges
            .iter()
            .map(|(k, r)| format!("{} {} {} {:?}", k.daddr, k.proto, k.mark, r.ranges()))
            .collect()
    }

    #[test]
    fn marks_local_sources_and_allows_local_destinations() {
        let containers = [
            c("a1", "10.255.1.2", "A"),
            c("b1", "10.255.1.3", "B"),
            c("b2", "10.255.1.4", "B"),
        ];
        let policies = [
            p("A", "0001", "B", "tcp", 8080, 8080),
            p("C", "0003", "B", "udp", 53, 53),
            p("A", "0001", "R", "tcp", 9000, 9100), // remote destination: only the mark
        ];
        let (plan, skipped) = plan(&containers, &policies);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            plan.source_tags,
            BTreeMap::from([("10.255.1.2".parse().unwrap(), 1)])
        );
        assert_eq!(
            singles(&plan),
            [
                "10.255.1.3 tcp 8080 1",
                "10.255.1.3 udp 53 3",
                "10.255.1.4 tcp 8080 1",
                "10.255.1.4 udp 53 3"
            ]
        );
        assert!(plan.ranges.is_empty());
    }

    #[test]
    fn overlapping_ranges_merge_per_destination_protocol_and_tag() {
        let containers = [c("b1", "10.255.1.3", "B")];
        let policies = [
            p("A", "0001", "B", "tcp", 8000, 8086),
            p("A", "0001", "B", "tcp", 8083, 8190),
            p("A", "0001", "B", "tcp", 8085, 8085),
            p("A", "0001", "B", "tcp", 8191, 8295),
            p("A", "0001", "B", "tcp", 9000, 9000),
            p("A", "0001", "B", "udp", 8085, 8085),
            p("C", "0002", "B", "tcp", 8085, 8085),
            p("C", "0002", "B", "tcp", 7000, 7002), // narrow: expanded to single ports
        ];
        let (plan, _) = plan(&containers, &policies);
        assert_eq!(
            singles(&plan),
            [
                "10.255.1.3 tcp 7000 2",
                "10.255.1.3 tcp 7001 2",
                "10.255.1.3 tcp 7002 2",
                "10.255.1.3 tcp 8085 1",
                "10.255.1.3 tcp 8085 2",
                "10.255.1.3 tcp 9000 1",
                "10.255.1.3 udp 8085 1"
            ]
        );
        assert_eq!(wide(&plan), ["10.255.1.3 tcp 1 [(8000, 8295)]"]);
    }

    #[test]
    fn keys_with_the_same_wide_ranges_share_one_chain() {
        let containers = [c("b1", "10.255.1.3", "B"), c("d1", "10.255.1.4", "D")];
        let policies = [
            p("A", "0001", "B", "tcp", 20000, 20999),
            p("C", "0002", "B", "tcp", 20000, 20999),
            p("A", "0001", "D", "udp", 20000, 20999),
            p("A", "0001", "D", "tcp", 20000, 20999),
            p("A", "0001", "D", "tcp", 30000, 30999),
        ];
        let (plan, _) = plan(&containers, &policies);
        assert_eq!(plan.ranges.len(), 4);
        let names: Vec<String> = plan.range_chains().iter().map(|r| r.chain_name()).collect();
        assert_eq!(
            names,
            ["ports_20000_20999", "ports_20000_20999_30000_30999"]
        );
    }

    #[test]
    fn long_range_lists_get_a_hashed_chain_name() {
        let list: Vec<(u16, u16)> = (0..40u16)
            .map(|i| (1000 + i * 100, 1090 + i * 100))
            .collect();
        let name = PortRanges(list.clone()).chain_name();
        assert!(name.starts_with("ports_h") && name.len() == 23, "{name}");
        let mut other = list;
        other[39].1 += 1;
        assert_ne!(PortRanges(other).chain_name(), name);
    }

    #[test]
    fn bad_tags_protocols_ports_and_duplicate_ips_are_skipped_with_a_reason() {
        let containers = [c("b1", "10.255.1.3", "B"), c("b9", "10.255.1.3", "X")];
        let policies = [
            p("A", "zz", "B", "tcp", 80, 80),
            p("A", "10000", "B", "tcp", 80, 80),
            p("A", "0001", "B", "icmp", 80, 80),
            p("A", "0001", "B", "tcp", 0, 0),
            p("A", "0001", "B", "tcp", 90, 80),
            p("A", "0001", "B", "tcp", 80, 0), // end 0 = single port
        ];
        let (plan, skipped) = plan(&containers, &policies);
        assert_eq!(skipped.len(), 6, "{skipped:?}");
        assert!(skipped[0].0.contains("already used by b1"));
        assert_eq!(plan.allowed.len(), 1);
    }

    #[test]
    fn diff_lists_only_changes() {
        let containers = [c("a1", "10.255.1.2", "A"), c("b1", "10.255.1.3", "B")];
        let old = plan(&containers, &[p("A", "0001", "B", "tcp", 80, 80)]).0;
        let new = plan(
            &containers,
            &[
                p("A", "0001", "B", "tcp", 80, 80),
                p("A", "0001", "B", "tcp", 443, 443),
            ],
        )
        .0;
        assert!(Diff::between(&old, &old).is_empty());
        let d = Diff::between(&old, &new);
        assert_eq!(d.len(), 1);
        assert_eq!(d.add_allowed[0].port, 443);
        let back = Diff::between(&new, &old);
        assert_eq!(back.remove_allowed[0].port, 443);
        let retag = plan(&containers, &[p("A", "0009", "B", "tcp", 80, 80)]).0;
        let d = Diff::between(&old, &retag);
        assert_eq!(d.remove_sources.len(), 1);
        assert_eq!(d.add_sources, vec![("10.255.1.2".parse().unwrap(), 9)]);
    }

    #[test]
    fn diff_creates_chains_before_use_and_drops_them_when_unused() {
        let containers = [c("b1", "10.255.1.3", "B")];
        let one = plan(&containers, &[p("A", "0001", "B", "tcp", 20000, 20999)]).0;
        let two = plan(
            &containers,
            &[
                p("A", "0001", "B", "tcp", 20000, 20999),
                p("C", "0002", "B", "tcp", 20000, 20999),
            ],
        )
        .0;
        let d = Diff::between(&one, &two);
        assert_eq!((d.add_ranges.len(), d.add_chains.len()), (1, 0), "shared");
        let grown = plan(&containers, &[p("A", "0001", "B", "tcp", 20000, 21999)]).0;
        let d = Diff::between(&one, &grown);
        assert_eq!(d.remove_ranges.len(), 1);
        assert_eq!(d.add_ranges[0].1.chain_name(), "ports_20000_21999");
        assert_eq!(d.add_chains[0].chain_name(), "ports_20000_21999");
        assert_eq!(d.remove_chains[0].chain_name(), "ports_20000_20999");
    }

    proptest! {
        #[test]
        fn planned_ports_are_exactly_the_policy_ports_and_ranges_never_overlap(
            ranges in proptest::collection::vec((1u16..400, 0u16..120), 1..20)
        ) {
            let containers = [c("b1", "10.255.1.3", "B")];
            let policies: Vec<Policy> = ranges
                .iter()
                .map(|(s, len)| p("A", "0001", "B", "tcp", *s as i64, (*s + *len) as i64))
                .collect();
            let (plan, _) = plan(&containers, &policies);
            let wide: Vec<(u16, u16)> = plan
                .ranges
                .values()
                .flat_map(|r| r.ranges().iter().copied())
                .collect();
            for w in wide.windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0);
            }
            for port in 0u16..=530 {
                let want = ranges.iter().any(|(s, len)| port >= *s && port <= *s + *len);
                let got = plan.allowed.iter().any(|a| a.port == port)
                    || wide.iter().any(|(s, e)| port >= *s && port <= *e);
                prop_assert_eq!(want, got, "port {}", port);
            }
        }
    }
}
