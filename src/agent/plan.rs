//! The planner: from the local containers and the policies that touch their apps, the desired
//! dataplane state as plain values (no kernel, no text). Rendering is [`super::nft`]'s job.

use crate::api::policy::{parse_tag, Policy};
use crate::cell::marks::MAX_TAG;
use crate::cell::Container;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// Port ranges up to this many ports are planned as single ports (hash-set elements, O(1) per
/// lookup); only wider ranges go to the interval set, whose lookup cost grows with its size.
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

/// "Packets to `daddr` on `proto` with a destination port in `ports` and packet mark `mark` (the
/// source app's tag) are allowed."
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Allow {
    pub daddr: Ipv4Addr,
    pub proto: Proto,
    pub start: u16,
    pub end: u16,
    pub mark: u32,
}

impl Allow {
    pub fn is_range(&self) -> bool {
        self.start != self.end
    }
}

/// The complete desired state of one cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Local containers of apps that are a policy source: IP -> their app's tag.
    pub source_tags: BTreeMap<Ipv4Addr, u32>,
    /// Allowed (destination, protocol, port range, source tag); overlapping port ranges of one
    /// (destination, protocol, tag) are merged so that no two ranges overlap.
    pub allowed: BTreeSet<Allow>,
}

impl Plan {
    pub fn element_count(&self) -> usize {
        self.source_tags.len() + self.allowed.len()
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
    let mut ranges: BTreeMap<(Ipv4Addr, Proto, u32), Vec<(u16, u16)>> = BTreeMap::new();
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
            ranges
                .entry((*ip, proto, tag))
                .or_default()
                .push((start, end));
        }
    }
    let plan = Plan {
        source_tags,
        allowed: allowed_elements(ranges),
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
/// single ports.
fn allowed_elements(ranges: BTreeMap<(Ipv4Addr, Proto, u32), Vec<(u16, u16)>>) -> BTreeSet<Allow> {
    let mut allowed = BTreeSet::new();
    for ((daddr, proto, mark), list) in ranges {
        for (start, end) in merge(list) {
            let (start, end) = (start as u32, end as u32);
            let spans: Vec<(u32, u32)> = if end - start < EXPAND_RANGES_UP_TO {
                (start..=end).map(|p| (p, p)).collect()
            } else {
                vec![(start, end)]
            };
            for (start, end) in spans {
                allowed.insert(Allow {
                    daddr,
                    proto,
                    start: start as u16,
                    end: end as u16,
                    mark,
                });
            }
        }
    }
    allowed
}

/// Single ports stay as they are (they go to the hash set, where a duplicate is the same
/// element); overlapping port ranges are merged, since the interval set rejects overlaps.
/// Adjacent ranges are not merged, so that one policy change touches as few elements as possible.
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
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => ranges.push((s, e)),
        }
    }
    out.extend(ranges);
    out
}

/// What changes between two plans, element by element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub remove_sources: Vec<Ipv4Addr>,
    pub add_sources: Vec<(Ipv4Addr, u32)>,
    pub remove_allowed: Vec<Allow>,
    pub add_allowed: Vec<Allow>,
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
        d
    }

    pub fn is_empty(&self) -> bool {
        self.remove_sources.is_empty()
            && self.add_sources.is_empty()
            && self.remove_allowed.is_empty()
            && self.add_allowed.is_empty()
    }

    pub fn len(&self) -> usize {
        self.remove_sources.len()
            + self.add_sources.len()
            + self.remove_allowed.len()
            + self.add_allowed.len()
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
        let allowed: Vec<String> = plan
            .allowed
            .iter()
            .map(|a| format!("{} {} {}-{} {}", a.daddr, a.proto, a.start, a.end, a.mark))
            .collect();
        assert_eq!(
            allowed,
            [
                "10.255.1.3 tcp 8080-8080 1",
                "10.255.1.3 udp 53-53 3",
                "10.255.1.4 tcp 8080-8080 1",
                "10.255.1.4 udp 53-53 3"
            ]
        );
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
        let got: Vec<_> = plan
            .allowed
            .iter()
            .map(|a| (a.proto, a.start, a.end, a.mark))
            .collect();
        assert_eq!(
            got,
            [
                (Proto::Tcp, 7000, 7000, 2),
                (Proto::Tcp, 7001, 7001, 2),
                (Proto::Tcp, 7002, 7002, 2),
                (Proto::Tcp, 8000, 8190, 1),
                (Proto::Tcp, 8085, 8085, 1),
                (Proto::Tcp, 8085, 8085, 2),
                (Proto::Tcp, 8191, 8295, 1),
                (Proto::Tcp, 9000, 9000, 1),
                (Proto::Udp, 8085, 8085, 1)
            ]
        );
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
        assert_eq!(d.add_allowed[0].start, 443);
        let back = Diff::between(&new, &old);
        assert_eq!(back.remove_allowed[0].start, 443);
        let retag = plan(&containers, &[p("A", "0009", "B", "tcp", 80, 80)]).0;
        let d = Diff::between(&old, &retag);
        assert_eq!(d.remove_sources.len(), 1);
        assert_eq!(d.add_sources, vec![("10.255.1.2".parse().unwrap(), 9)]);
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
            let elems: Vec<&Allow> = plan.allowed.iter().collect();
            let spans: Vec<&&Allow> = elems.iter().filter(|a| a.is_range()).collect();
            for w in spans.windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            for port in 0u16..=530 {
                let want = ranges.iter().any(|(s, len)| port >= *s && port <= *s + *len);
                let got = elems.iter().any(|a| port >= a.start && port <= a.end);
                prop_assert_eq!(want, got, "port {}", port);
            }
        }
    }
}
