//! Security groups + the cell's containers -> the ASG table ([`Objects`]).
//!
//! ```text
//! table ip netman_asg {
//!   chain forward { type filter hook forward priority -5; policy accept;    # after the c2c table (-10)
//!     ip saddr <overlay> ip daddr != <overlay> ct state invalid meta l4proto tcp drop
//!     ip saddr <overlay> ip daddr != <overlay> ct state new ip saddr vmap @containers
//!     ip saddr <overlay> ip daddr != <overlay> ct state new counter name "unknown_source" goto deny_unknown_source
//!   }
//!   map containers { type ipv4_addr : verdict; }        # container IP -> jump rs_<space>_<lifecycle>
//!   chain rs_s<space>_r {                               # one per (space, lifecycle) on the cell
//!     ip daddr @deny_r counter name "deny_networks_running" goto deny_networks   # beat every allow
//!     jump g_r                                          # the globally enabled groups, compiled once
//!     jump s<space>_r                                   # the groups bound to the space, compiled once
//!     counter name "default_deny" goto deny_default
//!   }
//!   chain deny_default {                                # and deny_networks, deny_unknown_source
//!     limit rate N/second burst N packets log prefix "ASG_DENY default" group G reject
//!     counter name "default_deny_log_dropped" reject    # what the limit left unlogged
//!   }
//!   chain g_r {                                         # a layer: one group set's rules
//!     ip daddr vmap @g_r_all                            # protocol all: destination -> verdict
//!     meta l4proto tcp th dport vmap @g_r_tcp           # port-first: port segment -> jump cd_<h>
//!     meta l4proto tcp meta mark set ip daddr map @g_r_tcph meta mark vmap @host_classes
//!                                                       # destination-first, single addresses:
//!                                                       #   (hash) -> class number -> jump cp_<h>
//!     meta l4proto tcp ip daddr vmap @g_r_tcpd          #   wider segments: -> jump cp_<h>
//!     meta l4proto udp th dport vmap @g_r_udp           # the same for udp
//!     meta l4proto udp meta mark set ip daddr map @g_r_udph meta mark vmap @host_classes
//!     meta l4proto udp ip daddr vmap @g_r_udpd
//!     meta l4proto icmp th sport vmap @g_r_icmp         # (type << 8 | code) segment
//!   }
//!   map g_r_tcph { type ipv4_addr : mark; }             # host -> its class's number (data)
//!   map host_classes { type mark : verdict; }           # number -> jump cp_<h>, table-wide
//!   chain cd_<h> { ip daddr vmap @cd_<h>_m }           # a class: destination -> jump ok | log_<h>
//!   chain cp_<h> { th dport 80 jump ok; th dport 443 jump ok }   # a small class: rules, no map
//!   chain ok {                                         # every allow ends here: counted, then allowed
//!     meta l4proto icmp update @allowed_counts { ip saddr . ip daddr . meta l4proto . th sport }
//!     meta l4proto != icmp update @allowed_counts { ip saddr . ip daddr . meta l4proto . th dport }
//!     meta mark set meta mark | 0x02000000 accept
//!   }
//!   set allowed_counts { type ...; size 65536; flags dynamic; counter; }   # [`super::counting`]
//!   chain log_<h> { [udp: limit] log prefix "ASG_OK <group> <index>" group G; goto ok }
//! }
//! ```
//! Every lookup is a hash (containers, hosts), a single-field interval lookup (ports,
//! destinations) or a small class's at most [`INLINE_UP_TO`] comparisons, so a new connection
//! costs a fixed number of lookups, each logarithmic at worst, however many
//! groups, rules or containers the cell has. The table only decides "refuse" (nftables' reject is
//! final) or "allowed" (the bit [`ASG_ALLOWED_BIT`], which the networker's cell guard accepts):
//! an nftables accept does not override iptables' decisions.
//!
//! A rule is kept once where the structure allows: it goes to the port-first or the
//! destination-first maps, whichever repeats it in fewer classes (a port range to one host is
//! one destination element, one port to many networks one port element), segments with equal
//! classes share one class chain (named after its content), and plain tcp/udp allows to single
//! addresses (most real rules) are hash elements (address -> number of the class of its ports),
//! kept apart and changed group by group, so an edit costs what it changes. The number is data,
//! not a verdict ([`HostClasses`]): the packet mark holds it between the host map and
//! `host_classes` (an allowed new egress connection leaves with the class number in the mark's
//! low bits instead of the source tag, which only c2c traffic uses). Logged and ICMP rules stay
//! port-first, which is looked up first, so a connection a logged rule allows is logged. Nothing
//! is expanded into per-port elements.
//!
//! Names are stable across changes (a layer is named after its space and lifecycle, a class
//! after its content), so an edit, a bind or a new container is a handful of element changes.
//! A [`Cache`] keeps each group's parsed rules and each layer's compiled sets between runs: a
//! change recompiles only the layers whose groups changed, and the sets of the others are the same
//! allocations (compared by pointer).

use super::counting;
use super::objects::{Objects, SetObj};
use super::prefix::LogPrefix;
use super::segments::segment;
use crate::api::security_groups::SecurityGroup;
use crate::asg::{parse_rules_lenient, IcmpSelector, Lifecycle, Rule, Traffic};
use crate::cell::marks::ASG_ALLOWED_BIT;
use crate::cell::Container;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The metadata key naming a container's space.
pub const SPACE_KEY: &str = "space_id";

/// Base chain priority: after the c2c table's (-10, which sets the source tag as the whole mark),
/// before iptables-nft's filter FORWARD (0), where the cell guard accepts the bit.
pub const PRIORITY: i32 = -5;

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DenyNetworks {
    #[serde(default)]
    pub always: Vec<Ipv4Net>,
    #[serde(default)]
    pub running: Vec<Ipv4Net>,
    #[serde(default)]
    pub staging: Vec<Ipv4Net>,
}

/// What the compilation needs besides groups and containers (from the agent's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The container network: egress is traffic from it to anywhere else.
    pub overlay: Ipv4Net,
    pub deny: DenyNetworks,
    /// Log every allowed new connection, not only those of `log: true` rules.
    pub log_all: bool,
    pub nflog_group: u16,
    /// Rate limit of the deny logs (0: denials are not logged).
    pub denied_logs_per_sec: u32,
    pub accepted_udp_logs_per_sec: u32,
}

/// A rule that names itself in its log prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedRule {
    pub group_guid: String,
    pub group_name: String,
    /// 0-based index in the group's rule array.
    pub index: usize,
    pub protocol: &'static str,
    pub description: String,
}

/// The compiled state: the table and what its log prefixes and container entries mean.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compiled {
    pub objects: Objects,
    /// Log prefix (as written in the table) -> the rule it names.
    pub logged: BTreeMap<String, LoggedRule>,
    /// Container IP -> the chain of its rule set.
    pub containers: BTreeMap<Ipv4Addr, String>,
    /// What was left out, and why (bad rules, colliding names).
    pub skipped: Vec<String>,
}

/// FNV-1a: stable across runs and builds (names of chains derive from it).
pub fn hash64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn lc_suffix(lc: Lifecycle) -> &'static str {
    match lc {
        Lifecycle::Running => "r",
        Lifecycle::Staging => "s",
    }
}

/// Protocols of host rules: 0 tcp, 1 udp.
const HOST_L4: [&str; 2] = ["tcp", "udp"];

/// A plain tcp/udp allow to one address: (protocol index in [`HOST_L4`], address, port ranges).
type HostRule = (usize, u32, Vec<(u32, u32)>);

/// One group's rules as parsed: host rules (plain tcp/udp allows whose destinations are all
/// single addresses, the bulk of real groups) apart, as they are applied group by group; the
/// others as (index in the group's array, rule); and what was refused.
#[derive(Debug, Default)]
struct Parsed {
    rules: Vec<(usize, Rule)>,
    hosts: Vec<HostRule>,
    errors: Vec<String>,
}

fn parse_group(g: &SecurityGroup) -> Parsed {
    let (good, bad) = match parse_rules_lenient(&g.rules) {
        Ok(r) => r,
        Err(e) => {
            return Parsed {
                errors: vec![format!("security group {} ({}): {e}", g.guid, g.name)],
                ..Parsed::default()
            }
        }
    };
    let bad_idx: BTreeSet<usize> = bad.iter().filter_map(|e| e.index).collect();
    let indices = (0..).filter(|i| !bad_idx.contains(i));
    let mut parsed = Parsed {
        errors: bad
            .iter()
            .map(|e| format!("security group {} ({}): {e}", g.guid, g.name))
            .collect(),
        ..Parsed::default()
    };
    for (index, rule) in indices.zip(good) {
        let ports = match &rule.traffic {
            Traffic::Tcp(p) => Some((0, p)),
            Traffic::Udp(p) => Some((1, p)),
            _ => None,
        };
        match ports {
            Some((l4, ports))
                if !rule.log && rule.destinations.iter().all(|d| d.start == d.end) =>
            {
                let ports: Vec<(u32, u32)> = ports
                    .iter()
                    .map(|p| (p.start as u32, p.end as u32))
                    .collect();
                for d in &rule.destinations {
                    parsed.hosts.push((l4, v4(d.start), ports.clone()));
                }
            }
            _ => parsed.rules.push((index, rule)),
        }
    }
    parsed
}

/// One rule of a group, with where it came from.
struct Source<'a> {
    group: &'a SecurityGroup,
    index: usize,
    rule: &'a Rule,
}

/// Verdict and its priority in a segment: a logged rule wins over a plain allow (so a
/// connection any `log: true` rule allows is logged), then the first rule in the layer's order
/// ([`super::deciding`] names the same rule).
type Verdict = (u8, usize, String);

/// A tcp/udp/icmp rule's part on one axis of a layer: (start, end on the outer field, ranges on
/// the inner field, verdict); port-first: (port start, port end, destinations, verdict).
type PortedRule = (u32, u32, Vec<(u32, u32)>, Verdict);

/// A compiled layer: its chains (log chains included), sets and logged rules.
#[derive(Debug, Default)]
struct LayerOut {
    chains: Vec<(String, Vec<String>)>,
    sets: Vec<(String, Arc<SetObj>)>,
    logged: Vec<(String, LoggedRule)>,
}

/// A parsed group and its version: a number given to each distinct (guid, rules text).
#[derive(Debug)]
struct Version {
    rules: String,
    id: u64,
    parsed: Arc<Parsed>,
    /// The compilation that last saw the group.
    generation: u64,
}

/// (protocol index in [`HOST_L4`], address).
type HostKey = (usize, u32);

/// The map from a host class's number to its chain (`mark : verdict`), table-wide.
pub const HOST_CLASSES: &str = "host_classes";

/// A class chain of the host parts: its number, how many layers use it, its rules and its map.
#[derive(Debug)]
struct HostClass {
    number: u32,
    layers: usize,
    rules: Vec<String>,
    map: Option<(String, Arc<SetObj>)>,
}

/// The host parts' classes, table-wide, with their numbers: a host map's element carries its
/// class's number as data, and [`HOST_CLASSES`] maps the number to the class chain. So adding a
/// host adds no verdict element: the kernel validates the jump graph at commit whenever an
/// element with a jump verdict is added, walking every verdict map the base chain reaches,
/// which cost 30-100 ms per edit with 135,000 hosts in verdict maps. A number stays with its
/// class while any layer uses the class; freed numbers are reused.
#[derive(Debug)]
struct HostClasses {
    by_name: HashMap<String, HostClass>,
    free: Vec<u32>,
    next: u32,
    map: Arc<SetObj>,
}

impl Default for HostClasses {
    fn default() -> HostClasses {
        HostClasses {
            by_name: HashMap::new(),
            free: Vec::new(),
            next: 1,
            map: Arc::new(SetObj {
                decl: "type mark : verdict;".into(),
                elements: super::objects::Elements::sharded(),
            }),
        }
    }
}

/// A class number as written in the maps.
pub fn mark_key(n: u32) -> String {
    format!("0x{n:08x}")
}

impl HostClasses {
    /// One more layer uses the class `name` (deciding `ports` with `verdict`): its number.
    fn acquire(&mut self, name: &str, ports: &[(u32, u32)], verdict: &str) -> u32 {
        if let Some(c) = self.by_name.get_mut(name) {
            c.layers += 1;
            return c.number;
        }
        let number = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        // Bits 24 and 25 (the allowed bits) stay out of the numbers: the mark holds the number
        // between the two lookups, and the `ok` chain ORs the ASG bit into it.
        assert!(number < 1 << 24, "more than 16 million host classes");
        Arc::make_mut(&mut self.map)
            .elements
            .insert(mark_key(number), format!("jump {name}"));
        let inner = ports.iter().map(|(a, b)| (*a, *b, verdict.to_string()));
        let (_, rules, map) = class_objects("th dport", inner.collect());
        self.by_name.insert(
            name.to_string(),
            HostClass {
                number,
                layers: 1,
                rules,
                map: map.map(|(n, s)| (n, Arc::new(s))),
            },
        );
        number
    }

    fn release(&mut self, name: &str) {
        let Some(c) = self.by_name.get_mut(name) else {
            return;
        };
        c.layers -= 1;
        if c.layers == 0 {
            let number = c.number;
            self.by_name.remove(name);
            Arc::make_mut(&mut self.map)
                .elements
                .remove(&mark_key(number));
            self.free.push(number);
        }
    }
}

/// A layer's host rules, kept between compilations and changed group by group: an edit costs
/// the hosts the changed groups name, not the layer.
#[derive(Debug, Default)]
struct HostPart {
    verdict: String,
    /// Member group versions.
    members: HashMap<u64, Arc<Parsed>>,
    /// The same, in the order given (an unchanged list skips the update).
    member_ids: Vec<u64>,
    /// (protocol, address) -> each member's port ranges to it.
    ports: HashMap<HostKey, BTreeMap<u64, Vec<(u32, u32)>>>,
    class_of: HashMap<HostKey, Arc<str>>,
    /// Class name -> (hosts pointing at it, its number).
    classes: HashMap<Arc<str>, (usize, u32)>,
    /// Port list -> its class's name (most hosts share a handful of port lists: each is named,
    /// a SHA-256, once).
    names: HashMap<Vec<(u32, u32)>, Arc<str>>,
    /// address -> class number, per protocol (`<layer>_tcph`, `<layer>_udph`).
    maps: [Arc<SetObj>; 2],
}

impl HostPart {
    fn new(verdict: &str) -> HostPart {
        let map = || {
            Arc::new(SetObj {
                decl: "type ipv4_addr : mark;".into(),
                elements: super::objects::Elements::sharded(),
            })
        };
        HostPart {
            verdict: verdict.to_string(),
            maps: [map(), map()],
            ..HostPart::default()
        }
    }

    /// Gives back its classes (the layer is gone or rebuilt).
    fn release(&self, classes: &mut HostClasses) {
        for name in self.classes.keys() {
            classes.release(name);
        }
    }

    fn name_of(&mut self, ports: &[(u32, u32)]) -> Arc<str> {
        if let Some(name) = self.names.get(ports) {
            return Arc::clone(name);
        }
        let inner = ports.iter().map(|(a, b)| (*a, *b, self.verdict.clone()));
        let (name, _, _) = class_objects("th dport", inner.collect());
        let name: Arc<str> = name.into();
        self.names.insert(ports.to_vec(), Arc::clone(&name));
        name
    }

    /// Brings the part to `members` (group version -> parsed group).
    fn update(&mut self, members: HashMap<u64, Arc<Parsed>>, classes: &mut HostClasses) {
        let mut touched: Vec<HostKey> = Vec::new();
        for (id, p) in &self.members {
            if members.contains_key(id) {
                continue;
            }
            for (l4, host, _) in &p.hosts {
                if let Some(by_member) = self.ports.get_mut(&(*l4, *host)) {
                    by_member.remove(id);
                    if by_member.is_empty() {
                        self.ports.remove(&(*l4, *host));
                    }
                }
                touched.push((*l4, *host));
            }
        }
        for (id, p) in &members {
            if self.members.contains_key(id) {
                continue;
            }
            for (l4, host, ports) in &p.hosts {
                let mine = self
                    .ports
                    .entry((*l4, *host))
                    .or_default()
                    .entry(*id)
                    .or_default();
                mine.extend(ports.iter().copied());
                touched.push((*l4, *host));
            }
        }
        self.members = members;
        // In order: numbers are given in the order classes first appear.
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            let ports = self
                .ports
                .get(&key)
                .map(|by_member| union(by_member.values().flatten().copied().collect()));
            let name = ports.as_deref().map(|p| self.name_of(p));
            if self.class_of.get(&key) == name.as_ref() {
                continue;
            }
            let addr = Ipv4Addr::from(key.1).to_string();
            let map = Arc::make_mut(&mut self.maps[key.0]);
            if let Some(old) = self.class_of.remove(&key) {
                map.elements.remove(&addr);
                let c = self.classes.get_mut(&old).expect("a class in use");
                c.0 -= 1;
                if c.0 == 0 {
                    self.classes.remove(&old);
                    classes.release(&old);
                }
            }
            if let (Some(name), Some(ports)) = (name, ports) {
                let verdict = &self.verdict;
                let c = self
                    .classes
                    .entry(Arc::clone(&name))
                    .or_insert_with(|| (0, classes.acquire(&name, &ports, verdict)));
                c.0 += 1;
                map.elements.insert(addr, mark_key(c.1));
                self.class_of.insert(key, name);
            }
        }
    }
}

/// Sorted, disjoint, adjacent ranges joined.
fn union(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a as u64 <= last.1 as u64 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// A layer between compilations: its rules other than host rules compiled as a whole (with a
/// fingerprint of the groups that have such rules), and its host part.
#[derive(Debug)]
struct LayerState {
    rest_fp: u64,
    rest: Arc<LayerOut>,
    hosts: HostPart,
}

/// What one compilation keeps for the next: parsed groups (by guid, with their rules text) and
/// layers (by name).
#[derive(Debug, Default)]
pub struct Cache {
    parsed: HashMap<String, Version>,
    next_id: u64,
    generation: u64,
    layers: HashMap<String, LayerState>,
    host_classes: HostClasses,
}

fn v4(a: Ipv4Addr) -> u32 {
    u32::from(a)
}

fn ip_key(s: u32, e: u32) -> String {
    if s == e {
        Ipv4Addr::from(s).to_string()
    } else {
        format!("{}-{}", Ipv4Addr::from(s), Ipv4Addr::from(e))
    }
}

fn port_key(s: u32, e: u32) -> String {
    if s == e {
        s.to_string()
    } else {
        format!("{s}-{e}")
    }
}

/// Into how many segments the cuts `bounds` (sorted; every range's start and end + 1) split
/// `[s, e]`.
fn span(bounds: &[u64], s: u32, e: u32) -> u64 {
    let lo = bounds.partition_point(|b| *b <= s as u64);
    let hi = bounds.partition_point(|b| *b <= e as u64);
    (hi - lo) as u64 + 1
}

fn cuts<'a>(ranges: impl Iterator<Item = &'a (u32, u32)>) -> Vec<u64> {
    let mut b: Vec<u64> = ranges
        .flat_map(|(s, e)| [*s as u64, *e as u64 + 1])
        .collect();
    b.sort_unstable();
    b.dedup();
    b
}

/// A tcp/udp/icmp rule of a layer, as ranges.
struct Ranged {
    dests: Vec<(u32, u32)>,
    /// Ports, or ICMP (type << 8 | code) ranges.
    ports: Vec<(u32, u32)>,
    verdict: Verdict,
    /// Logged rules (and ICMP) stay in the port-first maps, which are looked up first, so a
    /// connection a logged rule allows is logged.
    port_first: bool,
}

/// Splits a protocol's rules between the port-first maps (port segment -> class of
/// destinations) and the destination-first maps (destination segment -> class of ports): each
/// rule goes where it is repeated in fewer elements (a port range or list to one host is one
/// destination element; one port to many networks is one port element); ties go to the
/// destinations, whose classes are shared by equal port lists.
fn split_axes(rules: &[Ranged]) -> (Vec<PortedRule>, Vec<PortedRule>) {
    let port_cuts = cuts(rules.iter().flat_map(|r| r.ports.iter()));
    let dest_cuts = cuts(rules.iter().flat_map(|r| r.dests.iter()));
    let (mut by_port, mut by_dest) = (Vec::new(), Vec::new());
    for r in rules {
        let n = |v: &Vec<(u32, u32)>| v.len() as u64;
        let on_ports: u64 = r
            .ports
            .iter()
            .map(|(s, e)| span(&port_cuts, *s, *e))
            .sum::<u64>()
            * n(&r.dests);
        // Destination-first classes are shared by every equal port list (the inner elements
        // are paid once), so a rule costs its destination segments there.
        let on_dests: u64 = r.dests.iter().map(|(s, e)| span(&dest_cuts, *s, *e)).sum();
        if r.port_first || on_ports < on_dests {
            for (s, e) in &r.ports {
                by_port.push((*s, *e, r.dests.clone(), r.verdict.clone()));
            }
        } else {
            for (s, e) in &r.dests {
                by_dest.push((*s, *e, r.ports.clone(), r.verdict.clone()));
            }
        }
    }
    (by_port, by_dest)
}

fn reject() -> &'static str {
    "reject with icmp type port-unreachable"
}

struct Builder<'s> {
    settings: &'s Settings,
}

impl Builder<'_> {
    /// A deny's chain: refuses, logging within the deny-log limit; what the limit leaves out is
    /// counted in `<why>_log_dropped` (so lines + dropped = refused).
    fn deny_chain(&self, prefix: &LogPrefix, dropped: &str) -> Vec<String> {
        let n = self.settings.denied_logs_per_sec;
        if n == 0 {
            return vec![reject().to_string()];
        }
        vec![
            format!(
                "limit rate {n}/second burst {n} packets log prefix \"{prefix}\" group {} {}",
                self.settings.nflog_group,
                reject()
            ),
            format!("counter name \"{dropped}\" {}", reject()),
        ]
    }

    /// A chain that logs with `prefix` and then allows (through `ok`, which counts).
    fn allow_logged(&self, prefix: &LogPrefix) -> Vec<String> {
        let s = self.settings;
        let u = s.accepted_udp_logs_per_sec;
        let g = s.nflog_group;
        vec![
                format!("meta l4proto udp limit rate {u}/second burst {u} packets log prefix \"{prefix}\" group {g}"),
                format!("meta l4proto != udp log prefix \"{prefix}\" group {g}"),
                "goto ok".to_string(),
        ]
    }

    /// The verdict of `src`, the `order`-th rule of its layer.
    fn verdict(&self, layer: &mut LayerOut, src: &Source, order: usize) -> Verdict {
        if src.rule.log {
            let prefix = LogPrefix::rule(&src.group.guid, src.index);
            let text = prefix.to_string();
            let chain = format!("log_{:016x}", hash64(&text));
            if !layer.logged.iter().any(|(t, _)| *t == text) {
                layer
                    .chains
                    .push((chain.clone(), self.allow_logged(&prefix)));
                layer.logged.push((
                    text.clone(),
                    LoggedRule {
                        group_guid: src.group.guid.clone(),
                        group_name: src.group.name.clone(),
                        index: src.index,
                        protocol: src.rule.traffic.protocol(),
                        description: src.rule.description.clone(),
                    },
                ));
            }
            (0, order, format!("jump {chain}"))
        } else {
            (1, order, self.plain())
        }
    }

    /// The verdict of a rule that is not logged itself.
    fn plain(&self) -> String {
        if self.settings.log_all {
            "jump ok_log".into()
        } else {
            "jump ok".into()
        }
    }

    /// One layer (the rules of one set of groups): its chain, its maps, its classes.
    fn layer(&self, name: &str, sources: &[Source]) -> LayerOut {
        let mut out = LayerOut::default();
        let mut all: Vec<(u32, u32, Verdict, String)> = Vec::new();
        let mut ranged: BTreeMap<&str, Vec<Ranged>> = BTreeMap::new();
        for (order, src) in sources.iter().enumerate() {
            let v = self.verdict(&mut out, src, order);
            let dests: Vec<(u32, u32)> = src
                .rule
                .destinations
                .iter()
                .map(|d| (v4(d.start), v4(d.end)))
                .collect();
            match &src.rule.traffic {
                Traffic::All => {
                    for (s, e) in &dests {
                        all.push((*s, *e, v.clone(), v.2.clone()));
                    }
                }
                Traffic::Tcp(ports) | Traffic::Udp(ports) => {
                    let l4 = src.rule.traffic.protocol();
                    ranged.entry(l4).or_default().push(Ranged {
                        dests,
                        ports: ports
                            .iter()
                            .map(|p| (p.start as u32, p.end as u32))
                            .collect(),
                        verdict: v,
                        port_first: src.rule.log,
                    });
                }
                Traffic::Icmp { icmp_type, code } => {
                    let (s, e) = match (icmp_type, code) {
                        (IcmpSelector::Exactly(t), IcmpSelector::Exactly(c)) => {
                            let x = (*t as u32) << 8 | *c as u32;
                            (x, x)
                        }
                        (IcmpSelector::Exactly(t), IcmpSelector::Any) => {
                            ((*t as u32) << 8, (*t as u32) << 8 | 0xff)
                        }
                        // Any type: every type and code (iptables' `--icmp-type any`).
                        (IcmpSelector::Any, _) => (0, 0xffff),
                    };
                    ranged.entry("icmp").or_default().push(Ranged {
                        dests,
                        ports: vec![(s, e)],
                        verdict: v,
                        port_first: true,
                    });
                }
            }
        }
        let mut all_map = SetObj::new("type ipv4_addr : verdict; flags interval;");
        for (s, e, v) in segment(&all) {
            all_map.elements.insert(ip_key(s, e), v);
        }
        out.sets.push((format!("{name}_all"), Arc::new(all_map)));
        let mut rules = vec![format!("ip daddr vmap @{name}_all")];
        let mut seen = HashSet::new();
        for (l4, field) in [
            ("tcp", "th dport"),
            ("udp", "th dport"),
            ("icmp", "th sport"),
        ] {
            let (by_port, by_dest) = split_axes(ranged.get(l4).map(Vec::as_slice).unwrap_or(&[]));
            let port_map = classes(
                &mut out,
                &mut seen,
                &by_port,
                (port_key, "type inet_service : verdict; flags interval;"),
                "ip daddr",
            );
            out.sets.push((format!("{name}_{l4}"), Arc::new(port_map)));
            rules.push(format!("meta l4proto {l4} {field} vmap @{name}_{l4}"));
            if l4 != "icmp" {
                // The host part's map (plain allows to single addresses, a hash: a third of an
                // interval element's cost to load), then the wider destinations.
                rules.push(format!(
                    "meta l4proto {l4} meta mark set ip daddr map @{name}_{l4}h meta mark vmap @{HOST_CLASSES}"
                ));
                let dest_map = classes(
                    &mut out,
                    &mut seen,
                    &by_dest,
                    (ip_key, "type ipv4_addr : verdict; flags interval;"),
                    field,
                );
                out.sets.push((format!("{name}_{l4}d"), Arc::new(dest_map)));
                rules.push(format!("meta l4proto {l4} ip daddr vmap @{name}_{l4}d"));
            }
        }
        out.chains.push((name.to_string(), rules));
        out
    }
}

type Key = fn(u32, u32) -> String;

/// A class this small is a chain of one rule per segment (`th dport 80 jump ok`) instead of a
/// chain and a map: an nftables set costs far more to create than a rule (thousands of sets
/// take seconds), and a few comparisons cost no more than a lookup.
const INLINE_UP_TO: usize = 4;

/// A class's name: `c` + the field it decides on (`d`estination, `p`ort) + 128 bits of the
/// SHA-256 of its content, so equal classes of every layer share one chain, and a class's
/// name never names other content.
fn class_name(field: char, content: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, content.as_bytes());
    let mut name = format!("c{field}_");
    for b in &d.as_ref()[..16] {
        let _ = write!(name, "{b:02x}");
    }
    name
}

/// A class deciding `inner` (segments of `field`, `ip daddr` or `th dport`): its chain's name
/// and rules, and its map (name and elements) unless the rules hold the segments.
fn class_objects(
    field: &str,
    inner: Vec<(u32, u32, String)>,
) -> (String, Vec<String>, Option<(String, SetObj)>) {
    let (tag, key, decl): (char, Key, &str) = if field == "ip daddr" {
        ('d', ip_key, "type ipv4_addr : verdict; flags interval;")
    } else {
        (
            'p',
            port_key,
            "type inet_service : verdict; flags interval;",
        )
    };
    let mut content = String::from(field);
    for (a, b, v) in &inner {
        let _ = write!(content, ";{a}-{b}:{v}");
    }
    let chain = class_name(tag, &content);
    if inner.len() <= INLINE_UP_TO {
        let rules = inner
            .into_iter()
            .map(|(a, b, v)| format!("{field} {} {v}", key(a, b)))
            .collect();
        (chain, rules, None)
    } else {
        let mut map = SetObj::new(decl);
        for (a, b, v) in inner {
            map.elements.insert(key(a, b), v);
        }
        let rules = vec![format!("{field} vmap @{chain}_m")];
        (chain.clone(), rules, Some((format!("{chain}_m"), map)))
    }
}

/// The class chain deciding `inner`, created in `out` unless `seen` already has it.
fn class(
    out: &mut LayerOut,
    seen: &mut HashSet<String>,
    field: &str,
    inner: Vec<(u32, u32, String)>,
) -> String {
    let (chain, rules, map) = class_objects(field, inner);
    if seen.insert(chain.clone()) {
        if let Some((name, map)) = map {
            out.sets.push((name, Arc::new(map)));
        }
        out.chains.push((chain.clone(), rules));
    }
    chain
}

/// Outer segments -> class chains that decide on the inner field; segments with equal classes
/// share one chain (also across layers: see [`class_name`]). Returns the outer map.
fn classes(
    out: &mut LayerOut,
    seen: &mut HashSet<String>,
    rules: &[PortedRule],
    (outer_key, outer_decl): (Key, &str),
    inner_field: &str,
) -> SetObj {
    let mut outer: Vec<(u32, u32, String)> = Vec::new();
    for (s, e, members) in axis_classes(rules) {
        let chain = class(out, seen, inner_field, segment(&members));
        match outer.last_mut() {
            Some(last) if last.1 as u64 + 1 == s as u64 && last.2 == chain => last.1 = e,
            _ => outer.push((s, e, chain)),
        }
    }
    let mut map = SetObj::new(outer_decl);
    for (s, e, chain) in outer {
        map.elements
            .insert(outer_key(s, e), format!("jump {chain}"));
    }
    map
}

/// One axis -> segments split at every rule's boundaries, each with the inner ranges (and
/// verdicts) of the rules covering it. Uncovered segments are left out.
#[allow(clippy::type_complexity)]
fn axis_classes(rules: &[PortedRule]) -> Vec<(u32, u32, Vec<(u32, u32, Verdict, String)>)> {
    let bounds = cuts(
        rules
            .iter()
            .map(|(s, e, _, _)| (*s, *e))
            .collect::<Vec<_>>()
            .iter(),
    );
    let mut by_start: Vec<usize> = (0..rules.len()).collect();
    by_start.sort_by_key(|i| rules[*i].0);
    let mut active: BTreeSet<usize> = BTreeSet::new();
    let mut next = 0;
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let (s, e) = (w[0] as u32, (w[1] - 1) as u32);
        while next < by_start.len() && rules[by_start[next]].0 <= s {
            active.insert(by_start[next]);
            next += 1;
        }
        active.retain(|i| rules[*i].1 >= s);
        if active.is_empty() {
            continue;
        }
        let mut class = Vec::new();
        for i in &active {
            let (_, _, inner, v) = &rules[*i];
            for (a, b) in inner {
                class.push((*a, *b, v.clone(), v.2.clone()));
            }
        }
        out.push((s, e, class));
    }
    out
}

fn deny_set(nets: &[&Ipv4Net]) -> SetObj {
    let ranges: Vec<(u32, u32, u8, ())> = nets
        .iter()
        .map(|n| (v4(n.network()), v4(n.broadcast()), 0, ()))
        .collect();
    let mut set = SetObj::new("type ipv4_addr; flags interval;");
    for (s, e, ()) in segment(&ranges) {
        set.elements.insert(ip_key(s, e), String::new());
    }
    set
}

/// Compiles the groups that apply to the cell's containers (from scratch).
pub fn compile(
    groups: &[SecurityGroup],
    containers: &[Container],
    settings: &Settings,
) -> Compiled {
    compile_with(&mut Cache::default(), groups, containers, settings)
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29)
}

/// Puts a layer's chains, sets and logged rules into the table.
fn merge(out: &mut Compiled, name: &str, layer: &LayerState) {
    let rest = &layer.rest;
    for (name, rules) in &rest.chains {
        out.objects.chain(name, rules.clone());
    }
    for (name, set) in &rest.sets {
        out.objects.sets.insert(name.clone(), Arc::clone(set));
    }
    for (prefix, rule) in &rest.logged {
        out.logged.insert(prefix.clone(), rule.clone());
    }
    for (l4, map) in HOST_L4.iter().zip(&layer.hosts.maps) {
        out.objects
            .sets
            .insert(format!("{name}_{l4}h"), Arc::clone(map));
    }
}

/// Compiles with `cache`: groups whose rules text did not change are not parsed again, layers
/// whose groups did not change are not compiled again.
pub fn compile_with(
    cache: &mut Cache,
    groups: &[SecurityGroup],
    containers: &[Container],
    settings: &Settings,
) -> Compiled {
    let b = Builder { settings };
    let mut out = Compiled::default();
    // The cache's versions are checked in place and those of groups gone dropped after: an
    // edit allocates for the changed groups only.
    cache.generation += 1;
    let generation = cache.generation;
    let versions: Vec<(u64, Arc<Parsed>)> = groups
        .iter()
        .map(|g| {
            let current = cache.parsed.get_mut(&g.guid).filter(|v| v.rules == g.rules);
            let v = match current {
                Some(v) => v,
                None => {
                    cache.next_id += 1;
                    let v = Version {
                        rules: g.rules.clone(),
                        id: cache.next_id,
                        parsed: Arc::new(parse_group(g)),
                        generation,
                    };
                    cache.parsed.insert(g.guid.clone(), v);
                    cache.parsed.get_mut(&g.guid).expect("just inserted")
                }
            };
            v.generation = generation;
            (v.id, Arc::clone(&v.parsed))
        })
        .collect();
    cache.parsed.retain(|_, v| v.generation == generation);
    for (_, p) in &versions {
        out.skipped.extend(p.errors.iter().cloned());
    }
    let verdict = b.plain();
    let mut layers_now: HashMap<String, LayerState> = HashMap::new();
    let mut layer = |out: &mut Compiled, name: &str, members: &[usize]| {
        let mut rest_fp = hash64(name);
        for &i in members {
            if !versions[i].1.rules.is_empty() {
                rest_fp = mix(rest_fp, versions[i].0);
                rest_fp = mix(rest_fp, hash64(&groups[i].name));
            }
        }
        let previous = cache.layers.remove(name);
        let (rest, hosts) = match previous {
            Some(l) if l.hosts.verdict == verdict => {
                let rest = (l.rest_fp == rest_fp).then_some(l.rest);
                (rest, l.hosts)
            }
            other => {
                if let Some(l) = other {
                    l.hosts.release(&mut cache.host_classes);
                }
                (None, HostPart::new(&verdict))
            }
        };
        let rest = rest.unwrap_or_else(|| {
            let sources: Vec<Source> = members
                .iter()
                .flat_map(|&i| {
                    versions[i].1.rules.iter().map(move |(index, rule)| Source {
                        group: &groups[i],
                        index: *index,
                        rule,
                    })
                })
                .collect();
            Arc::new(b.layer(name, &sources))
        });
        let mut hosts = hosts;
        // A layer whose members are the same versions is left as it is (most layers, at an edit).
        let ids: Vec<u64> = members.iter().map(|&i| versions[i].0).collect();
        if hosts.member_ids != ids {
            hosts.update(
                members
                    .iter()
                    .map(|&i| (versions[i].0, Arc::clone(&versions[i].1)))
                    .collect(),
                &mut cache.host_classes,
            );
            hosts.member_ids = ids;
        }
        let state = LayerState {
            rest_fp,
            rest,
            hosts,
        };
        merge(out, name, &state);
        layers_now.insert(name.to_string(), state);
    };

    let ov = settings.overlay;
    let egress = format!("ip saddr {ov} ip daddr != {ov}");
    let mut ok = counting::count_allowed();
    ok.push(format!(
        "meta mark set meta mark | 0x{ASG_ALLOWED_BIT:08x} accept"
    ));
    out.objects.chain("ok", ok);
    out.objects
        .set(counting::ALLOWED_COUNTS, counting::allowed_counts_set());
    out.objects.counters = counting::COUNTERS.iter().map(|c| c.to_string()).collect();
    for (chain, prefix, dropped) in [
        (
            "deny_networks",
            LogPrefix::DenyNetworks,
            counting::DENY_NETWORKS_DROPPED,
        ),
        (
            "deny_default",
            LogPrefix::Default,
            counting::DEFAULT_DENY_DROPPED,
        ),
        (
            "deny_unknown_source",
            LogPrefix::UnknownSource,
            counting::UNKNOWN_SOURCE_DROPPED,
        ),
    ] {
        out.objects.chain(chain, b.deny_chain(&prefix, dropped));
    }
    if settings.log_all {
        out.objects
            .chain("ok_log", b.allow_logged(&LogPrefix::Allowed));
    }

    // Deny networks per lifecycle.
    let d = &settings.deny;
    for lc in [Lifecycle::Running, Lifecycle::Staging] {
        let extra = match lc {
            Lifecycle::Running => &d.running,
            Lifecycle::Staging => &d.staging,
        };
        let nets: Vec<&Ipv4Net> = d.always.iter().chain(extra.iter()).collect();
        out.objects
            .set(&format!("deny_{}", lc_suffix(lc)), deny_set(&nets));
    }

    // Global layers, and the groups bound to each space by lifecycle (a group already global
    // for a lifecycle is not repeated in its spaces' layers, as the original plans).
    let mut bound: HashMap<(&str, Lifecycle), Vec<usize>> = HashMap::new();
    for lc in [Lifecycle::Running, Lifecycle::Staging] {
        let members: Vec<usize> = (0..groups.len())
            .filter(|&i| is_default(&groups[i], lc))
            .collect();
        layer(&mut out, &format!("g_{}", lc_suffix(lc)), &members);
        for (i, g) in groups.iter().enumerate() {
            if is_default(g, lc) {
                continue;
            }
            let spaces = match lc {
                Lifecycle::Running => &g.running_space_guids,
                Lifecycle::Staging => &g.staging_space_guids,
            };
            // Each space once (most groups name one: no set to build).
            let once: Vec<&String> = match spaces.as_slice() {
                [] | [_] => spaces.iter().collect(),
                _ => spaces.iter().collect::<BTreeSet<_>>().into_iter().collect(),
            };
            for space in once {
                bound.entry((space.as_str(), lc)).or_default().push(i);
            }
        }
    }

    // Rule sets: one per (space, lifecycle) present on the cell.
    let ruleset = |out: &mut Compiled, name: &str, lc: Option<Lifecycle>, layers: &[String]| {
        let mut rules = Vec::new();
        if let Some(lc) = lc {
            let set = format!("deny_{}", lc_suffix(lc));
            let counter = counting::deny_networks(lc);
            rules.push(format!(
                "ip daddr @{set} counter name \"{counter}\" goto deny_networks"
            ));
        }
        for l in layers {
            rules.push(format!("jump {l}"));
        }
        rules.push(format!(
            "counter name \"{}\" goto deny_default",
            counting::DEFAULT_DENY
        ));
        out.objects.chain(name, rules);
    };
    ruleset(&mut out, "rs_none", None, &[]);
    let mut spaces_by_hash: BTreeMap<u64, String> = BTreeMap::new();
    let mut containers_map = SetObj::new("type ipv4_addr : verdict;");
    for c in containers {
        let lc = c
            .metadata
            .get(crate::cell::WORKLOAD_KEY)
            .and_then(|v| v.as_str())
            .and_then(Lifecycle::of_workload);
        let space = c
            .metadata
            .get(SPACE_KEY)
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let chain = match lc {
            None => "rs_none".to_string(),
            Some(lc) => {
                let global = format!("g_{}", lc_suffix(lc));
                let rs = format!("rs_{}", lc_suffix(lc));
                if !out.objects.chains.contains_key(&rs) {
                    ruleset(&mut out, &rs, Some(lc), std::slice::from_ref(&global));
                }
                match bound.get(&(space, lc)).filter(|_| !space.is_empty()) {
                    None => rs,
                    Some(members) => {
                        let h = hash64(space);
                        match spaces_by_hash.get(&h) {
                            Some(other) if other != space => {
                                out.skipped.push(format!(
                                    "space {space} hashes like space {other}: its bound groups are left out"
                                ));
                                rs
                            }
                            _ => {
                                spaces_by_hash.insert(h, space.to_string());
                                let name = format!("s{h:016x}_{}", lc_suffix(lc));
                                let rs = format!("rs_{name}");
                                if !out.objects.chains.contains_key(&name) {
                                    layer(&mut out, &name, members);
                                    ruleset(&mut out, &rs, Some(lc), &[global, name.clone()]);
                                }
                                rs
                            }
                        }
                    }
                }
            }
        };
        containers_map
            .elements
            .insert(c.ip.to_string(), format!("jump {chain}"));
        out.containers.insert(c.ip, chain);
    }
    for (_, gone) in cache.layers.drain() {
        gone.hosts.release(&mut cache.host_classes);
    }
    cache.layers = layers_now;
    out.objects
        .sets
        .insert(HOST_CLASSES.into(), Arc::clone(&cache.host_classes.map));
    for (name, class) in &cache.host_classes.by_name {
        out.objects.chain(name, class.rules.clone());
        if let Some((set, map)) = &class.map {
            out.objects.sets.insert(set.clone(), Arc::clone(map));
        }
    }
    out.objects.set("containers", containers_map);

    let mut forward = vec![
        format!("{egress} ct state invalid meta l4proto tcp drop"),
        format!("{egress} ct state new ip saddr vmap @containers"),
    ];
    forward.push(format!(
        "{egress} ct state new counter name \"{}\" goto deny_unknown_source",
        counting::UNKNOWN_SOURCE
    ));
    out.objects.chains.insert(
        "forward".into(),
        (
            format!("{{ type filter hook forward priority {PRIORITY}; policy accept; }}"),
            forward,
        ),
    );
    out
}

fn is_default(g: &SecurityGroup, lc: Lifecycle) -> bool {
    match lc {
        Lifecycle::Running => g.running_default,
        Lifecycle::Staging => g.staging_default,
    }
}

#[cfg(test)]
mod tests {
    use super::super::eval::{decide, Outcome};
    use super::*;
    use crate::asg::Probe;
    use proptest::prelude::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            overlay: "10.255.0.0/16".parse().unwrap(),
            deny: DenyNetworks {
                always: vec!["169.254.0.0/16".parse().unwrap()],
                running: vec![],
                staging: vec![],
            },
            log_all: false,
            nflog_group: 1,
            denied_logs_per_sec: 1,
            accepted_udp_logs_per_sec: 100,
        }
    }

    fn group(guid: &str, rules: serde_json::Value, global: bool, spaces: &[&str]) -> SecurityGroup {
        SecurityGroup {
            guid: guid.into(),
            name: guid.into(),
            rules: rules.to_string(),
            running_default: global,
            running_space_guids: spaces.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn container(ip: &str, space: &str, workload: &str) -> Container {
        let mut c = Container::for_app(ip, ip.parse().unwrap(), "app");
        c.metadata.insert(SPACE_KEY.into(), json!(space));
        c.metadata
            .insert(crate::cell::WORKLOAD_KEY.into(), json!(workload));
        c
    }

    #[test]
    fn containers_point_at_their_space_and_lifecycle_and_a_host_is_one_element() {
        let groups = [
            group(
                "g",
                json!([{"protocol": "tcp", "destination": "1.2.3.4", "ports": "80, 443"}]),
                true,
                &[],
            ),
            group(
                "s",
                json!([{"protocol": "udp", "destination": "10.0.0.0/8", "ports": "53", "log": true}]),
                false,
                &["sp"],
            ),
        ];
        let cs = [
            container("10.255.0.2", "sp", "app"),
            container("10.255.0.3", "other", "task"),
            container("10.255.0.4", "sp", "staging"),
            container("10.255.0.5", "sp", "weird"),
        ];
        let c = compile(&groups, &cs, &settings());
        let chains: Vec<&str> = c.containers.values().map(String::as_str).collect();
        let sp = format!("rs_s{:016x}_r", hash64("sp"));
        assert_eq!(chains, [sp.as_str(), "rs_r", "rs_s", "rs_none"]);
        // A host with a port list: one hash element, pointing at the class of its ports.
        let hosts = &c.objects.sets["g_r_tcph"].elements;
        assert_eq!(hosts.len(), 1);
        let numbers = &c.objects.sets[HOST_CLASSES].elements;
        let class = numbers[hosts["1.2.3.4"].as_str()]
            .strip_prefix("jump ")
            .unwrap();
        // A small class is a chain of rules, no map.
        assert_eq!(
            c.objects.chains[class].1,
            ["th dport 80 jump ok", "th dport 443 jump ok"]
        );
        // The logged rule stays port-first and names itself.
        assert!(c.logged.contains_key("ASG_OK s 0"));
        let layer = format!("s{:016x}_r", hash64("sp"));
        let class = c.objects.sets[&format!("{layer}_udp")].elements["53"]
            .strip_prefix("jump ")
            .unwrap()
            .to_string();
        let udp = &c.objects.chains[&class].1;
        assert!(
            udp[0].starts_with("ip daddr 10.0.0.0-10.255.255.255 jump log_"),
            "{udp:?}"
        );
        // Deny networks come before the layers in every rule set; each deny has its counter.
        let rules = &c.objects.chains[&sp].1;
        assert_eq!(
            rules,
            &[
                "ip daddr @deny_r counter name \"deny_networks_running\" goto deny_networks"
                    .to_string(),
                "jump g_r".into(),
                format!("jump {layer}"),
                "counter name \"default_deny\" goto deny_default".into(),
            ]
        );
        // The deny log's limit: what it leaves out is counted, then refused all the same.
        assert_eq!(
            c.objects.chains["deny_default"].1,
            [
                "limit rate 1/second burst 1 packets log prefix \"ASG_DENY default\" group 1 reject with icmp type port-unreachable",
                "counter name \"default_deny_log_dropped\" reject with icmp type port-unreachable",
            ]
        );
        // A source that is no container: counted, then refused through its deny log.
        assert_eq!(
            c.objects.chains["forward"].1.last().unwrap(),
            "ip saddr 10.255.0.0/16 ip daddr != 10.255.0.0/16 ct state new counter name \"unknown_source\" goto deny_unknown_source"
        );
        // Every allow is counted in `ok`, logged ones too.
        assert_eq!(c.objects.chains["ok"].1.len(), 3);
        assert!(c.objects.chains["ok"].1[1].contains("update @allowed_counts"));
        let logged = c
            .objects
            .chains
            .iter()
            .find(|(n, _)| n.starts_with("log_"))
            .unwrap();
        assert_eq!(logged.1 .1.last().unwrap(), "goto ok");
    }

    #[test]
    fn the_cache_recompiles_only_changed_layers() {
        let mut groups = vec![
            group(
                "g",
                json!([{"protocol": "all", "destination": "0.0.0.0/0"}]),
                true,
                &[],
            ),
            group(
                "s",
                json!([{"protocol": "tcp", "destination": "10.0.0.0/8", "ports": "1-1000"}]),
                false,
                &["sp"],
            ),
        ];
        let cs = [container("10.255.0.2", "sp", "app")];
        let mut cache = Cache::default();
        let first = compile_with(&mut cache, &groups, &cs, &settings());
        assert_eq!(first, compile(&groups, &cs, &settings()));
        groups[1].rules =
            json!([{"protocol": "tcp", "destination": "10.0.0.0/8", "ports": "1-2000"}])
                .to_string();
        let second = compile_with(&mut cache, &groups, &cs, &settings());
        assert_eq!(
            second,
            compile(&groups, &cs, &settings()),
            "the same result as from scratch"
        );
        assert!(Arc::ptr_eq(
            &first.objects.sets["g_r_all"],
            &second.objects.sets["g_r_all"]
        ));
        // One port range to a network: one destination element, pointing at the class of
        // its ports.
        let tcp = format!("s{:016x}_r_tcpd", hash64("sp"));
        let ports = |c: &Compiled| {
            let class = &c.objects.sets[&tcp].elements["10.0.0.0-10.255.255.255"];
            c.objects.chains[class.strip_prefix("jump ").unwrap()]
                .1
                .clone()
        };
        assert_eq!(ports(&first), ["th dport 1-1000 jump ok"]);
        assert_eq!(ports(&second), ["th dport 1-2000 jump ok"]);
    }

    #[test]
    fn a_port_range_or_list_to_one_host_is_one_element() {
        // The bench's rule shapes, and a single port.
        let rules = json!([
            {"protocol": "tcp", "destination": "100.64.0.1", "ports": "1000, 1001"},
            {"protocol": "tcp", "destination": "100.64.0.2", "ports": "1000-1050"},
            {"protocol": "tcp", "destination": "100.64.0.3", "ports": "443"},
            {"protocol": "udp", "destination": "100.64.0.4", "ports": "53, 54"},
        ]);
        let groups = [group("g", rules, true, &[])];
        let c = compile(
            &groups,
            &[container("10.255.0.2", "sp", "app")],
            &settings(),
        );
        let sets = &c.objects.sets;
        let elements = |m: &str| sets[m].elements.len();
        assert_eq!(elements("g_r_tcph"), 3, "{:?}", sets["g_r_tcph"]);
        assert_eq!(elements("g_r_udph"), 1);
        assert_eq!(elements("g_r_tcp") + elements("g_r_tcpd"), 0);
        // Four hosts; the four classes (1000-1001, 1000-1050, 443, 53-54) are one rule each.
        assert_eq!(elements(HOST_CLASSES), 4);
        let others = elements("containers") + elements("deny_r") + elements("deny_s");
        assert_eq!(
            c.objects.element_count() - others - elements(HOST_CLASSES),
            4
        );
        let classes: Vec<&Vec<String>> = c
            .objects
            .chains
            .iter()
            .filter(|(n, _)| n.starts_with("cp_"))
            .map(|(_, (_, rules))| rules)
            .collect();
        assert_eq!(classes.len(), 4);
        assert!(classes.contains(&&vec!["th dport 1000-1050 jump ok".to_string()]));
        // Many such ranges: one destination element each, classes shared by equal port ranges.
        let groups: Vec<SecurityGroup> = (0..200u32)
            .map(|i| {
                let rule = json!([{"protocol": "tcp", "destination": format!("100.64.{}.{}", i / 200, i % 200),
                    "ports": format!("{}-{}", 1000 + i % 20, 1050 + i % 20)}]);
                group(&format!("g{i}"), rule, true, &[])
            })
            .collect();
        let c = compile(
            &groups,
            &[container("10.255.0.2", "sp", "app")],
            &settings(),
        );
        assert_eq!(c.objects.sets["g_r_tcph"].elements.len(), 200);
        let classes = c
            .objects
            .chains
            .keys()
            .filter(|n| n.starts_with("cp_"))
            .count();
        assert_eq!(classes, 20);
        assert!(
            c.objects.element_count() < 260,
            "{}",
            c.objects.element_count()
        );
    }

    fn dest() -> impl Strategy<Value = String> {
        // Single addresses most often: rules whose destinations all are go to the host maps.
        prop_oneof![
            6 => (0u8..40).prop_map(|x| format!("10.1.0.{x}")),
            1 => (0u8..40, 26u8..=32).prop_map(|(x, m)| format!("10.1.0.{x}/{m}")),
            1 => (0u8..40, 0u8..12).prop_map(|(x, n)| format!("10.1.0.{x}-10.1.0.{}", x + n)),
            1 => Just("0.0.0.0/0".to_string()),
            1 => Just("10.1.0.0-10.1.0.255".to_string()),
        ]
    }

    fn ports() -> impl Strategy<Value = String> {
        let one = prop_oneof![
            4 => (1u16..40).prop_map(|p| p.to_string()),
            3 => (1u16..40, 0u16..15).prop_map(|(p, n)| format!("{p}-{}", p + n)),
            1 => Just("1-65535".to_string()),
        ];
        proptest::collection::vec(one, 1..4).prop_map(|v| v.join(", "))
    }

    fn rule() -> impl Strategy<Value = serde_json::Value> {
        let dests = proptest::collection::vec(dest(), 1..4).prop_map(|v| v.join(","));
        (
            0u8..4,
            dests,
            ports(),
            prop_oneof![Just(-1i32), Just(0), Just(3), Just(8)],
            prop_oneof![Just(-1i32), Just(0), Just(1)],
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(proto, d, p, t, c, log)| match proto {
                0 => json!({"protocol": "tcp", "destination": d, "ports": p, "log": log}),
                1 => json!({"protocol": "udp", "destination": d, "ports": p, "log": log}),
                2 => {
                    json!({"protocol": "icmp", "destination": d, "type": t, "code": c, "log": log})
                }
                _ => json!({"protocol": "all", "destination": d, "log": log}),
            })
    }

    fn spaces() -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(vec!["s0".to_string(), "s1".to_string()], 0..=2)
    }

    fn groups() -> impl Strategy<Value = Vec<SecurityGroup>> {
        let one = (
            proptest::collection::vec(rule(), 1..5),
            proptest::bool::weighted(0.3),
            proptest::bool::weighted(0.3),
            spaces(),
            spaces(),
        );
        proptest::collection::vec(one, 1..8).prop_map(|gs| {
            gs.into_iter()
                .enumerate()
                .map(|(i, (rules, rd, sd, rs, ss))| SecurityGroup {
                    guid: format!("g{i}"),
                    name: format!("group {i}"),
                    rules: serde_json::Value::Array(rules).to_string(),
                    running_default: rd,
                    staging_default: sd,
                    running_space_guids: rs,
                    staging_space_guids: ss,
                })
                .collect()
        })
    }

    fn probe() -> impl Strategy<Value = (Ipv4Addr, Probe)> {
        let dst = prop_oneof![
            9 => (0u8..48).prop_map(|x| Ipv4Addr::new(10, 1, 0, x)),
            1 => Just(Ipv4Addr::new(8, 8, 8, 8)),
        ];
        let p = prop_oneof![
            (0u16..48).prop_map(Probe::Tcp),
            (0u16..48).prop_map(Probe::Udp),
            (0u8..10, 0u8..3).prop_map(|(t, c)| Probe::Icmp {
                icmp_type: t,
                code: c
            }),
            Just(Probe::Other(47)),
        ];
        (dst, p)
    }

    /// The rule model's decision: deny networks first, then any rule of the groups that apply.
    fn model(
        groups: &[SecurityGroup],
        s: &Settings,
        c: &Container,
        dst: Ipv4Addr,
        p: Probe,
    ) -> bool {
        let meta = |k: &str| {
            c.metadata
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let Some(lc) = Lifecycle::of_workload(&meta(crate::cell::WORKLOAD_KEY)) else {
            return false;
        };
        let extra = match lc {
            Lifecycle::Running => &s.deny.running,
            Lifecycle::Staging => &s.deny.staging,
        };
        if s.deny.always.iter().chain(extra).any(|n| n.contains(&dst)) {
            return false;
        }
        crate::asg::groups_for(groups, &meta(SPACE_KEY), lc).any(|g| {
            let (rules, _) = parse_rules_lenient(&g.rules).unwrap();
            rules.iter().any(|r| r.allows(dst, p))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// For random groups, containers and connections, the compiled table (read as the kernel
        /// evaluates it) decides exactly as the rule model; a logged allow names a logged rule
        /// that allows the connection.
        #[test]
        fn the_compiled_table_decides_as_the_rule_model(
            gs in groups(),
            log_all in any::<bool>(),
            probes in proptest::collection::vec(probe(), 40),
        ) {
            let mut s = settings();
            s.log_all = log_all;
            s.deny.always = vec!["10.1.0.30/31".parse().unwrap()];
            s.deny.running = vec!["10.1.0.12/32".parse().unwrap()];
            let cs = [
                container("10.255.0.2", "s0", "app"),
                container("10.255.0.3", "s1", "staging"),
                container("10.255.0.4", "s1", "task"),
                container("10.255.0.5", "", "app"),
                container("10.255.0.6", "s0", "weird"),
                container("10.255.0.7", "s2", "staging"),
            ];
            let compiled = compile(&gs, &cs, &s);
            prop_assert!(compiled.skipped.is_empty(), "{:?}", compiled.skipped);
            for c in &cs {
                for (dst, p) in &probes {
                    let want = model(&gs, &s, c, *dst, *p);
                    let d = decide(&compiled.objects, c.ip, *dst, *p);
                    let got = d.outcome.clone();
                    prop_assert_eq!(
                        matches!(got, Outcome::Allowed(_)), want,
                        "container {} -> {} {:?}: {:?}", c.ip, dst, p, got
                    );
                    if let Outcome::Allowed(logs) = got {
                        for prefix in &logs {
                            let Some(r) = compiled.logged.get(prefix) else {
                                prop_assert!(log_all && prefix == "ASG_OK", "{}", prefix);
                                continue;
                            };
                            let g = gs.iter().find(|g| g.guid == r.group_guid).unwrap();
                            let rule: Vec<serde_json::Value> = serde_json::from_str(&g.rules).unwrap();
                            let (parsed, _) = parse_rules_lenient(&serde_json::Value::Array(vec![rule[r.index].clone()]).to_string()).unwrap();
                            prop_assert!(parsed[0].log && parsed[0].allows(*dst, *p), "{} names {:?}", prefix, parsed[0]);
                        }
                        counted_for_the_deciding_rule(&gs, &compiled, c, *dst, *p, &logs, &d)?;
                    } else {
                        prop_assert!(d.counted.is_empty(), "{:?}", d);
                        prop_assert_eq!(d.counters, vec![deny_counter(&s, c, *dst).to_string()]);
                    }
                }
            }
        }
    }

    /// The named counter a refused connection moves.
    fn deny_counter(s: &Settings, c: &Container, dst: Ipv4Addr) -> &'static str {
        let workload = c.workload().unwrap_or("");
        let Some(lc) = Lifecycle::of_workload(workload) else {
            return counting::DEFAULT_DENY;
        };
        let extra = match lc {
            Lifecycle::Running => &s.deny.running,
            Lifecycle::Staging => &s.deny.staging,
        };
        if s.deny.always.iter().chain(extra).any(|n| n.contains(&dst)) {
            counting::deny_networks(lc)
        } else {
            counting::DEFAULT_DENY
        }
    }

    /// An allowed connection moves one counter: the allowed set's element of its own key, which
    /// the reader gives to the deciding rule; that rule allows it, and when the table logged a
    /// rule's prefix, it is that rule.
    fn counted_for_the_deciding_rule(
        gs: &[SecurityGroup],
        compiled: &Compiled,
        c: &Container,
        dst: Ipv4Addr,
        p: Probe,
        logs: &[String],
        d: &super::super::eval::Decision,
    ) -> Result<(), TestCaseError> {
        prop_assert!(d.counters.is_empty(), "{:?}", d);
        let (proto, port) = match p {
            Probe::Tcp(n) => (6, n),
            Probe::Udp(n) => (17, n),
            Probe::Icmp { icmp_type, code } => (1, (icmp_type as u16) << 8 | code as u16),
            Probe::Other(n) => (n, 0),
        };
        let key = super::super::counters::Key {
            src: c.ip,
            dst,
            proto,
            port,
        };
        prop_assert_eq!(
            &d.counted,
            &vec![(counting::ALLOWED_COUNTS.to_string(), key.render())]
        );
        let space = c
            .metadata
            .get(SPACE_KEY)
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let lc = Lifecycle::of_workload(c.workload().unwrap_or("")).unwrap();
        let parse = |g: &SecurityGroup| {
            Arc::new(crate::asg::rule::parse_rules_indexed(&g.rules).unwrap().0)
        };
        let decided = super::super::deciding::deciding(gs, space, lc, dst, key.probe(), parse);
        let Some((g, index, rule)) = decided else {
            return Err(TestCaseError::fail(format!("no deciding rule for {key:?}")));
        };
        prop_assert!(rule.allows(dst, p));
        let named: Vec<&LoggedRule> = logs.iter().filter_map(|l| compiled.logged.get(l)).collect();
        prop_assert_eq!(named.len(), usize::from(rule.log), "{:?} {:?}", named, rule);
        if let Some(r) = named.first() {
            prop_assert_eq!((&r.group_guid, r.index), (&g.guid, index));
        }
        Ok(())
    }

    /// The table with each host class number replaced by the chain it names (compilations
    /// with different histories number the classes differently). A number left behind by a
    /// class no longer used stays as an element of its own.
    fn by_class_name(c: &Compiled) -> Compiled {
        let mut c = c.clone();
        let numbers = Arc::clone(&c.objects.sets[HOST_CLASSES]);
        for set in c.objects.sets.values_mut() {
            if set.decl == "type ipv4_addr : mark;" {
                let mut named = SetObj::new(&set.decl);
                for (host, n) in set.elements.iter() {
                    named
                        .elements
                        .insert(host.clone(), numbers.elements[n.as_str()].clone());
                }
                *set = Arc::new(named);
            }
        }
        let mut keyed = SetObj::new(&numbers.decl);
        for (_, chain) in numbers.elements.iter() {
            keyed.elements.insert(chain.clone(), chain.clone());
        }
        c.objects.sets.insert(HOST_CLASSES.into(), Arc::new(keyed));
        c
    }

    #[test]
    fn a_host_edit_adds_no_verdict_element_but_a_new_class_number() {
        let hosts = |a: &str, b: &str| {
            json!([
                {"protocol": "tcp", "destination": "1.2.3.4", "ports": a},
                {"protocol": "tcp", "destination": "1.2.3.5", "ports": b},
            ])
        };
        let cs = [container("10.255.0.2", "sp", "app")];
        let mut cache = Cache::default();
        let before = compile_with(
            &mut cache,
            &[group("g", hosts("80", "443"), true, &[])],
            &cs,
            &settings(),
        );
        // 1.2.3.4 moves to the class of 443 (in use): one data element changes, 80's class goes.
        let after = compile_with(
            &mut cache,
            &[group("g", hosts("443", "443"), true, &[])],
            &cs,
            &settings(),
        );
        let script =
            crate::agent::asg::objects::render_diff(&before.objects, &after.objects).unwrap();
        let added: Vec<&str> = script.lines().filter(|l| l.starts_with("add ")).collect();
        let n443 = &before.objects.sets["g_r_tcph"].elements["1.2.3.5"];
        assert_eq!(
            added,
            [format!(
                "add element ip netman_asg g_r_tcph {{ 1.2.3.4 : {n443} }}"
            )],
            "{script}"
        );
        assert!(
            script.contains("delete element ip netman_asg host_classes"),
            "{script}"
        );
        assert_eq!(after.objects.sets[HOST_CLASSES].elements.len(), 1);
        // A new port list: its class gets a number (the freed one), the one verdict element.
        let third = compile_with(
            &mut cache,
            &[group("g", hosts("443", "8080"), true, &[])],
            &cs,
            &settings(),
        );
        let script =
            crate::agent::asg::objects::render_diff(&after.objects, &third.objects).unwrap();
        let verdicts: Vec<&str> = script
            .lines()
            .filter(|l| l.starts_with("add element") && l.contains("jump"))
            .collect();
        assert_eq!(verdicts.len(), 1, "{script}");
        assert!(verdicts[0].contains("host_classes"), "{script}");
        assert_eq!(
            by_class_name(&third),
            by_class_name(&compile(
                &[group("g", hosts("443", "8080"), true, &[])],
                &cs,
                &settings()
            ))
        );
    }

    /// Compiling with a cache after edits gives the same table as compiling from scratch.
    #[test]
    fn the_cache_gives_what_compiling_from_scratch_gives() {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(100));
        runner
            .run(&(groups(), groups()), |(a, b)| {
                let cs = [
                    container("10.255.0.2", "s0", "app"),
                    container("10.255.0.3", "s1", "staging"),
                ];
                // One group edited and another bound or made global, then everything else.
                let mut edited = a.clone();
                edited[0].rules = b[0].rules.clone();
                let last = edited.len() - 1;
                edited[last].running_default = !edited[last].running_default;
                edited[last].staging_space_guids.push("s1".into());
                let mut cache = Cache::default();
                for gs in [&a, &edited, &b, &a] {
                    let cached = compile_with(&mut cache, gs, &cs, &settings());
                    prop_assert_eq!(
                        by_class_name(&cached),
                        by_class_name(&compile(gs, &cs, &settings()))
                    );
                }
                Ok(())
            })
            .unwrap();
    }
}
