//! Security groups + the cell's containers -> the ASG table ([`Objects`]).
//!
//! ```text
//! table ip netman_asg {
//!   chain forward { type filter hook forward priority -5; policy accept;    # after the c2c table (-10)
//!     ip saddr <overlay> ip daddr != <overlay> ct state invalid meta l4proto tcp drop
//!     ip saddr <overlay> ip daddr != <overlay> ct state new ip saddr vmap @containers
//!     ip saddr <overlay> ip daddr != <overlay> ct state new [log "ASG_DENY unknown_source"] reject
//!   }
//!   map containers { type ipv4_addr : verdict; }        # container IP -> jump rs_<space>_<lifecycle>
//!   chain rs_s<space>_r {                               # one per (space, lifecycle) on the cell
//!     ip daddr @deny_r [log "ASG_DENY deny_networks"] reject   # deny networks beat every allow
//!     jump g_r                                          # the globally enabled groups, compiled once
//!     jump s<space>_r                                   # the groups bound to the space, compiled once
//!     [log "ASG_DENY default"] reject
//!   }
//!   chain g_r {                                         # a layer: one group set's rules
//!     ip daddr vmap @g_r_all                            # protocol all: destination -> verdict
//!     meta l4proto tcp th dport vmap @g_r_tcp           # port segment -> jump g_r_t<start>_<end>
//!     meta l4proto udp th dport vmap @g_r_udp
//!     meta l4proto icmp th sport vmap @g_r_icmp         # (type << 8 | code) segment
//!   }
//!   chain g_r_t443_443 { ip daddr vmap @g_r_t443_443_m }   # destination -> jump ok | log_<h>
//!   chain ok { meta mark set meta mark | 0x02000000 accept }
//!   chain log_<h> { [udp: limit] log prefix "ASG_OK <group> <index>" group G; meta mark set ... accept }
//! }
//! ```
//! Every lookup is a hash (containers) or a single-field interval lookup (ports, destinations),
//! so a new connection costs a fixed number of lookups, each logarithmic at worst, however many
//! groups, rules or containers the cell has. The table only decides "refuse" (nftables' reject is
//! final) or "allowed" (the bit [`ASG_ALLOWED_BIT`], which the networker's cell guard accepts):
//! an nftables accept does not override iptables' decisions.
//!
//! Names are stable across changes (a layer is named after its space and lifecycle, a port class
//! after its port segment), so an edit, a bind or a new container is a handful of element changes.

use super::objects::{Objects, SetObj};
use super::prefix::LogPrefix;
use super::segments::segment;
use crate::api::security_groups::SecurityGroup;
use crate::asg::{parse_rules_lenient, IcmpSelector, Lifecycle, Rule, Traffic};
use crate::cell::marks::ASG_ALLOWED_BIT;
use crate::cell::Container;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

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

/// One rule of a group, with where it came from.
struct Source<'a> {
    group: &'a SecurityGroup,
    index: usize,
    rule: Rule,
}

/// Verdict and its priority in a destination segment: a logged rule wins over a plain allow
/// (so a connection any `log: true` rule allows is logged, under the first such rule).
type Verdict = (u8, String);

fn parse_groups<'a>(
    groups: &'a [SecurityGroup],
    skipped: &mut Vec<String>,
) -> Vec<Vec<Source<'a>>> {
    groups
        .iter()
        .map(|g| match parse_rules_lenient(&g.rules) {
            Ok((good, bad)) => {
                let bad_idx: BTreeSet<usize> = bad.iter().filter_map(|e| e.index).collect();
                for e in &bad {
                    skipped.push(format!("security group {} ({}): {e}", g.guid, g.name));
                }
                let indices = (0..).filter(|i| !bad_idx.contains(i));
                good.into_iter()
                    .zip(indices)
                    .map(|(rule, index)| Source {
                        group: g,
                        index,
                        rule,
                    })
                    .collect()
            }
            Err(e) => {
                skipped.push(format!("security group {} ({}): {e}", g.guid, g.name));
                Vec::new()
            }
        })
        .collect()
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

fn reject() -> &'static str {
    "reject with icmp type port-unreachable"
}

struct Builder<'s> {
    settings: &'s Settings,
    out: Compiled,
}

impl Builder<'_> {
    fn log(&self, prefix: &LogPrefix) -> Option<String> {
        let n = self.settings.denied_logs_per_sec;
        (n > 0).then(|| {
            format!(
                "limit rate {n}/second burst {n} packets log prefix \"{prefix}\" group {}",
                self.settings.nflog_group
            )
        })
    }

    /// A chain that logs with `prefix` and then sets the allowed bit.
    fn allow_logged(&mut self, name: &str, prefix: &LogPrefix) {
        let s = self.settings;
        let u = s.accepted_udp_logs_per_sec;
        let g = s.nflog_group;
        self.out.objects.chain(
            name,
            vec![
                format!("meta l4proto udp limit rate {u}/second burst {u} packets log prefix \"{prefix}\" group {g}"),
                format!("meta l4proto != udp log prefix \"{prefix}\" group {g}"),
                format!("meta mark set meta mark | 0x{ASG_ALLOWED_BIT:08x} accept"),
            ],
        );
    }

    fn verdict(&mut self, src: &Source) -> Verdict {
        if src.rule.log {
            let prefix = LogPrefix::rule(&src.group.guid, src.index);
            let text = prefix.to_string();
            let chain = format!("log_{:016x}", hash64(&text));
            if !self.out.logged.contains_key(&text) {
                self.allow_logged(&chain, &prefix);
                self.out.logged.insert(
                    text.clone(),
                    LoggedRule {
                        group_guid: src.group.guid.clone(),
                        group_name: src.group.name.clone(),
                        index: src.index,
                        protocol: src.rule.traffic.protocol(),
                        description: src.rule.description.clone(),
                    },
                );
            }
            (0, format!("jump {chain}"))
        } else if self.settings.log_all {
            (1, "jump ok_log".into())
        } else {
            (1, "jump ok".into())
        }
    }

    /// One layer (the rules of one set of groups): its chain, its maps, its port classes.
    fn layer(&mut self, name: &str, sources: &[&Source]) {
        let mut all: Vec<(u32, u32, Verdict, String)> = Vec::new();
        // proto -> (port start, port end, destinations, verdict)
        let mut ported: BTreeMap<&str, Vec<(u32, u32, Vec<(u32, u32)>, Verdict)>> = BTreeMap::new();
        for src in sources {
            let v = self.verdict(src);
            let dests: Vec<(u32, u32)> = src
                .rule
                .destinations
                .iter()
                .map(|d| (v4(d.start), v4(d.end)))
                .collect();
            match &src.rule.traffic {
                Traffic::All => {
                    for (s, e) in &dests {
                        all.push((*s, *e, v.clone(), v.1.clone()));
                    }
                }
                Traffic::Tcp(ports) | Traffic::Udp(ports) => {
                    let proto = if matches!(src.rule.traffic, Traffic::Tcp(_)) {
                        "t"
                    } else {
                        "u"
                    };
                    for p in ports {
                        ported.entry(proto).or_default().push((
                            p.start as u32,
                            p.end as u32,
                            dests.clone(),
                            v.clone(),
                        ));
                    }
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
                    ported
                        .entry("i")
                        .or_default()
                        .push((s, e, dests.clone(), v.clone()));
                }
            }
        }
        let objects = &mut self.out.objects;
        let mut all_map = SetObj::new("type ipv4_addr : verdict; flags interval;");
        for (s, e, v) in segment(&all) {
            all_map.elements.insert(ip_key(s, e), v);
        }
        objects.sets.insert(format!("{name}_all"), all_map);
        let mut rules = vec![format!("ip daddr vmap @{name}_all")];
        for (proto, l4, field) in [
            ("t", "tcp", "th dport"),
            ("u", "udp", "th dport"),
            ("i", "icmp", "th sport"),
        ] {
            let mut port_map = SetObj::new("type inet_service : verdict; flags interval;");
            for (ps, pe, class) in port_classes(ported.get(proto).map(Vec::as_slice).unwrap_or(&[]))
            {
                let chain = format!("{name}_{proto}{ps}_{pe}");
                let mut dest_map = SetObj::new("type ipv4_addr : verdict; flags interval;");
                for (s, e, v) in segment(&class) {
                    dest_map.elements.insert(ip_key(s, e), v);
                }
                objects.sets.insert(format!("{chain}_m"), dest_map);
                objects.chain(&chain, vec![format!("ip daddr vmap @{chain}_m")]);
                port_map
                    .elements
                    .insert(port_key(ps, pe), format!("jump {chain}"));
            }
            objects.sets.insert(format!("{name}_{l4}"), port_map);
            rules.push(format!("meta l4proto {l4} {field} vmap @{name}_{l4}"));
        }
        objects.chain(name, rules);
    }
}

/// Port space -> segments split at every rule's boundaries, each with the destinations (and
/// verdicts) of the rules covering it. Uncovered segments are left out.
#[allow(clippy::type_complexity)]
fn port_classes(
    rules: &[(u32, u32, Vec<(u32, u32)>, Verdict)],
) -> Vec<(u32, u32, Vec<(u32, u32, Verdict, String)>)> {
    let mut bounds: BTreeSet<u32> = BTreeSet::new();
    for (s, e, _, _) in rules {
        bounds.insert(*s);
        bounds.insert(e + 1);
    }
    let bounds: Vec<u32> = bounds.into_iter().collect();
    let mut by_start: Vec<usize> = (0..rules.len()).collect();
    by_start.sort_by_key(|i| rules[*i].0);
    let mut active: BTreeSet<usize> = BTreeSet::new();
    let mut next = 0;
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let (s, e) = (w[0], w[1] - 1);
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
            let (_, _, dests, v) = &rules[*i];
            for (ds, de) in dests {
                class.push((*ds, *de, v.clone(), v.1.clone()));
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

/// Compiles the groups that apply to the cell's containers.
pub fn compile(
    groups: &[SecurityGroup],
    containers: &[Container],
    settings: &Settings,
) -> Compiled {
    let mut b = Builder {
        settings,
        out: Compiled::default(),
    };
    let parsed = parse_groups(groups, &mut b.out.skipped);
    let ov = settings.overlay;
    let egress = format!("ip saddr {ov} ip daddr != {ov}");

    // Allow chains.
    b.out.objects.chain(
        "ok",
        vec![format!(
            "meta mark set meta mark | 0x{ASG_ALLOWED_BIT:08x} accept"
        )],
    );
    if settings.log_all {
        b.allow_logged("ok_log", &LogPrefix::Allowed);
    }

    // Deny networks per lifecycle.
    let d = &settings.deny;
    for lc in [Lifecycle::Running, Lifecycle::Staging] {
        let extra = match lc {
            Lifecycle::Running => &d.running,
            Lifecycle::Staging => &d.staging,
        };
        let nets: Vec<&Ipv4Net> = d.always.iter().chain(extra.iter()).collect();
        b.out
            .objects
            .sets
            .insert(format!("deny_{}", lc_suffix(lc)), deny_set(&nets));
    }

    // Global layers.
    for lc in [Lifecycle::Running, Lifecycle::Staging] {
        let sources: Vec<&Source> = parsed
            .iter()
            .flatten()
            .filter(|s| is_default(s.group, lc))
            .collect();
        b.layer(&format!("g_{}", lc_suffix(lc)), &sources);
    }

    // Rule sets: one per (space, lifecycle) present on the cell.
    let default_log = b.log(&LogPrefix::Default);
    let deny_log = b.log(&LogPrefix::DenyNetworks);
    let ruleset = |b: &mut Builder, name: &str, lc: Option<Lifecycle>, layers: &[String]| {
        let mut rules = Vec::new();
        if let Some(lc) = lc {
            let set = format!("deny_{}", lc_suffix(lc));
            if let Some(log) = &deny_log {
                rules.push(format!("ip daddr @{set} {log}"));
            }
            rules.push(format!("ip daddr @{set} {}", reject()));
        }
        for l in layers {
            rules.push(format!("jump {l}"));
        }
        rules.extend(default_log.clone());
        rules.push(reject().to_string());
        b.out.objects.chain(name, rules);
    };
    ruleset(&mut b, "rs_none", None, &[]);
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
                if !b.out.objects.chains.contains_key(&rs) {
                    ruleset(&mut b, &rs, Some(lc), std::slice::from_ref(&global));
                }
                let bound: Vec<&Source> = parsed
                    .iter()
                    .flatten()
                    .filter(|s| {
                        !space.is_empty()
                            && !is_default(s.group, lc)
                            && is_bound(s.group, space, lc)
                    })
                    .collect();
                if bound.is_empty() {
                    rs
                } else {
                    let h = hash64(space);
                    match spaces_by_hash.get(&h) {
                        Some(other) if other != space => {
                            b.out.skipped.push(format!(
                                "space {space} hashes like space {other}: its bound groups are left out"
                            ));
                            rs
                        }
                        _ => {
                            spaces_by_hash.insert(h, space.to_string());
                            let layer = format!("s{h:016x}_{}", lc_suffix(lc));
                            let rs = format!("rs_{layer}");
                            if !b.out.objects.chains.contains_key(&layer) {
                                b.layer(&layer, &bound);
                                ruleset(&mut b, &rs, Some(lc), &[global, layer.clone()]);
                            }
                            rs
                        }
                    }
                }
            }
        };
        containers_map
            .elements
            .insert(c.ip.to_string(), format!("jump {chain}"));
        b.out.containers.insert(c.ip, chain);
    }
    b.out
        .objects
        .sets
        .insert("containers".into(), containers_map);

    let mut forward = vec![
        format!("{egress} ct state invalid meta l4proto tcp drop"),
        format!("{egress} ct state new ip saddr vmap @containers"),
    ];
    if let Some(log) = b.log(&LogPrefix::UnknownSource) {
        forward.push(format!("{egress} ct state new {log}"));
    }
    forward.push(format!("{egress} ct state new {}", reject()));
    b.out.objects.chains.insert(
        "forward".into(),
        (
            format!("{{ type filter hook forward priority {PRIORITY}; policy accept; }}"),
            forward,
        ),
    );
    b.out
}

fn is_default(g: &SecurityGroup, lc: Lifecycle) -> bool {
    match lc {
        Lifecycle::Running => g.running_default,
        Lifecycle::Staging => g.staging_default,
    }
}

fn is_bound(g: &SecurityGroup, space: &str, lc: Lifecycle) -> bool {
    let spaces = match lc {
        Lifecycle::Running => &g.running_space_guids,
        Lifecycle::Staging => &g.staging_space_guids,
    };
    spaces.iter().any(|s| s == space)
}
