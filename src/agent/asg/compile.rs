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
//!     ip daddr . meta l4proto . th dport vmap @g_r_exact   # small unlogged tcp/udp rules, expanded (hash)
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
//! A [`Cache`] keeps each group's parsed rules and each layer's compiled sets between runs: a
//! change recompiles only the layers whose groups changed, and the sets of the others are the same
//! allocations (compared by pointer).

use super::objects::{Objects, SetObj};
use super::prefix::LogPrefix;
use super::segments::segment;
use crate::api::security_groups::SecurityGroup;
use crate::asg::{parse_rules_lenient, IcmpSelector, Lifecycle, Rule, Traffic};
use crate::cell::marks::ASG_ALLOWED_BIT;
use crate::cell::Container;
use ipnet::Ipv4Net;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// One group's rules as parsed: (index in the group's array, rule), and what was refused.
#[derive(Debug, Default)]
struct Parsed {
    rules: Vec<(usize, Rule)>,
    errors: Vec<String>,
}

fn parse_group(g: &SecurityGroup) -> Parsed {
    match parse_rules_lenient(&g.rules) {
        Ok((good, bad)) => {
            let bad_idx: BTreeSet<usize> = bad.iter().filter_map(|e| e.index).collect();
            let indices = (0..).filter(|i| !bad_idx.contains(i));
            Parsed {
                rules: indices.zip(good).collect(),
                errors: bad
                    .iter()
                    .map(|e| format!("security group {} ({}): {e}", g.guid, g.name))
                    .collect(),
            }
        }
        Err(e) => Parsed {
            rules: Vec::new(),
            errors: vec![format!("security group {} ({}): {e}", g.guid, g.name)],
        },
    }
}

/// One rule of a group, with where it came from.
struct Source<'a> {
    group: &'a SecurityGroup,
    index: usize,
    rule: &'a Rule,
}

/// Verdict and its priority in a destination segment: a logged rule wins over a plain allow
/// (so a connection any `log: true` rule allows is logged, under the first such rule).
type Verdict = (u8, String);

/// A tcp/udp/icmp rule's part in a layer: (port start, port end, destinations, verdict).
type PortedRule = (u32, u32, Vec<(u32, u32)>, Verdict);

/// A compiled layer: its chains (log chains included), sets and logged rules.
#[derive(Debug, Default)]
struct LayerOut {
    chains: Vec<(String, Vec<String>)>,
    sets: Vec<(String, Arc<SetObj>)>,
    logged: Vec<(String, LoggedRule)>,
}

/// What one compilation keeps for the next: parsed groups (by guid and rules text) and compiled
/// layers (by name, with a fingerprint of their groups).
#[derive(Debug, Default)]
pub struct Cache {
    parsed: HashMap<(String, u64), Arc<Parsed>>,
    layers: HashMap<String, (u64, Arc<LayerOut>)>,
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

/// Rules this small become exact (destination, protocol, port) elements of a hash map.
const EXPAND_UP_TO: u64 = 64;

/// Adds the rule's (address, protocol, port) elements to `exact` when there are at most
/// [`EXPAND_UP_TO`] of them; false (nothing added) otherwise.
fn expand(
    exact: &mut SetObj,
    proto: &str,
    dests: &[(u32, u32)],
    ports: &[crate::asg::PortRange],
    verdict: &str,
) -> bool {
    let addresses: u64 = dests.iter().map(|(s, e)| (e - s) as u64 + 1).sum();
    let port_count: u64 = ports.iter().map(|p| (p.end - p.start) as u64 + 1).sum();
    if addresses.saturating_mul(port_count) > EXPAND_UP_TO {
        return false;
    }
    let name = if proto == "t" { "tcp" } else { "udp" };
    for (s, e) in dests {
        for a in *s..=*e {
            for p in ports {
                for port in p.start..=p.end {
                    let key = format!("{} . {name} . {port}", Ipv4Addr::from(a));
                    exact.elements.insert(key, verdict.to_string());
                }
            }
        }
    }
    true
}

fn reject() -> &'static str {
    "reject with icmp type port-unreachable"
}

struct Builder<'s> {
    settings: &'s Settings,
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
    fn allow_logged(&self, prefix: &LogPrefix) -> Vec<String> {
        let s = self.settings;
        let u = s.accepted_udp_logs_per_sec;
        let g = s.nflog_group;
        vec![
                format!("meta l4proto udp limit rate {u}/second burst {u} packets log prefix \"{prefix}\" group {g}"),
                format!("meta l4proto != udp log prefix \"{prefix}\" group {g}"),
                format!("meta mark set meta mark | 0x{ASG_ALLOWED_BIT:08x} accept"),
        ]
    }

    fn verdict(&self, layer: &mut LayerOut, src: &Source) -> Verdict {
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
            (0, format!("jump {chain}"))
        } else if self.settings.log_all {
            (1, "jump ok_log".into())
        } else {
            (1, "jump ok".into())
        }
    }

    /// One layer (the rules of one set of groups): its chain, its maps, its port classes.
    fn layer(&self, name: &str, sources: &[Source]) -> LayerOut {
        let mut out = LayerOut::default();
        let mut all: Vec<(u32, u32, Verdict, String)> = Vec::new();
        // proto -> (port start, port end, destinations, verdict)
        let mut ported: BTreeMap<&str, Vec<PortedRule>> = BTreeMap::new();
        let mut exact = SetObj::new("type ipv4_addr . inet_proto . inet_service : verdict;");
        for src in sources {
            let v = self.verdict(&mut out, src);
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
                    if !src.rule.log && expand(&mut exact, proto, &dests, ports, &v.1) {
                        continue;
                    }
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
        let mut all_map = SetObj::new("type ipv4_addr : verdict; flags interval;");
        for (s, e, v) in segment(&all) {
            all_map.elements.insert(ip_key(s, e), v);
        }
        out.sets.push((format!("{name}_all"), Arc::new(all_map)));
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
                out.sets.push((format!("{chain}_m"), Arc::new(dest_map)));
                out.chains
                    .push((chain.clone(), vec![format!("ip daddr vmap @{chain}_m")]));
                port_map
                    .elements
                    .insert(port_key(ps, pe), format!("jump {chain}"));
            }
            out.sets.push((format!("{name}_{l4}"), Arc::new(port_map)));
            rules.push(format!("meta l4proto {l4} {field} vmap @{name}_{l4}"));
        }
        // Checked after the interval maps, so a logged rule (never in here) decides first.
        out.sets.push((format!("{name}_exact"), Arc::new(exact)));
        rules.push(format!(
            "ip daddr . meta l4proto . th dport vmap @{name}_exact"
        ));
        out.chains.push((name.to_string(), rules));
        out
    }
}

/// Port space -> segments split at every rule's boundaries, each with the destinations (and
/// verdicts) of the rules covering it. Uncovered segments are left out.
#[allow(clippy::type_complexity)]
fn port_classes(rules: &[PortedRule]) -> Vec<(u32, u32, Vec<(u32, u32, Verdict, String)>)> {
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
fn merge(out: &mut Compiled, layer: &LayerOut) {
    for (name, rules) in &layer.chains {
        out.objects.chain(name, rules.clone());
    }
    for (name, set) in &layer.sets {
        out.objects.sets.insert(name.clone(), Arc::clone(set));
    }
    for (prefix, rule) in &layer.logged {
        out.logged.insert(prefix.clone(), rule.clone());
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
    let rule_hashes: Vec<u64> = groups.iter().map(|g| hash64(&g.rules)).collect();
    let mut parsed_now = HashMap::with_capacity(groups.len());
    let parsed: Vec<Arc<Parsed>> = groups
        .iter()
        .zip(&rule_hashes)
        .map(|(g, h)| {
            let key = (g.guid.clone(), *h);
            let p = match cache.parsed.get(&key) {
                Some(p) => Arc::clone(p),
                None => Arc::new(parse_group(g)),
            };
            parsed_now.insert(key, Arc::clone(&p));
            p
        })
        .collect();
    cache.parsed = parsed_now;
    for p in &parsed {
        out.skipped.extend(p.errors.iter().cloned());
    }
    let mut layers_now: HashMap<String, (u64, Arc<LayerOut>)> = HashMap::new();
    let mut layer = |out: &mut Compiled, name: &str, members: &[usize]| {
        let mut fp = hash64(name);
        for &i in members {
            fp = mix(fp, hash64(&groups[i].guid));
            fp = mix(fp, rule_hashes[i]);
            fp = mix(fp, hash64(&groups[i].name));
        }
        let compiled = match cache.layers.get(name) {
            Some((f, o)) if *f == fp => Arc::clone(o),
            _ => {
                let sources: Vec<Source> = members
                    .iter()
                    .flat_map(|&i| {
                        parsed[i].rules.iter().map(move |(index, rule)| Source {
                            group: &groups[i],
                            index: *index,
                            rule,
                        })
                    })
                    .collect();
                Arc::new(b.layer(name, &sources))
            }
        };
        merge(out, &compiled);
        layers_now.insert(name.to_string(), (fp, compiled));
    };

    let ov = settings.overlay;
    let egress = format!("ip saddr {ov} ip daddr != {ov}");
    out.objects.chain(
        "ok",
        vec![format!(
            "meta mark set meta mark | 0x{ASG_ALLOWED_BIT:08x} accept"
        )],
    );
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
            for space in spaces.iter().collect::<BTreeSet<_>>() {
                bound.entry((space.as_str(), lc)).or_default().push(i);
            }
        }
    }

    // Rule sets: one per (space, lifecycle) present on the cell.
    let default_log = b.log(&LogPrefix::Default);
    let deny_log = b.log(&LogPrefix::DenyNetworks);
    let ruleset = |out: &mut Compiled, name: &str, lc: Option<Lifecycle>, layers: &[String]| {
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
    cache.layers = layers_now;
    out.objects.set("containers", containers_map);

    let mut forward = vec![
        format!("{egress} ct state invalid meta l4proto tcp drop"),
        format!("{egress} ct state new ip saddr vmap @containers"),
    ];
    if let Some(log) = b.log(&LogPrefix::UnknownSource) {
        forward.push(format!("{egress} ct state new {log}"));
    }
    forward.push(format!("{egress} ct state new {}", reject()));
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
    use super::*;
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
    fn containers_point_at_their_space_and_lifecycle_and_small_rules_are_exact() {
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
        let exact = &c.objects.sets["g_r_exact"].elements;
        assert_eq!(exact.len(), 2);
        assert!(exact.contains_key("1.2.3.4 . tcp . 443"));
        // The logged rule stays an interval rule and names itself.
        assert!(c.logged.contains_key("ASG_OK s 0"));
        let layer = format!("s{:016x}_r", hash64("sp"));
        let udp = &c.objects.sets[&format!("{layer}_u53_53_m")].elements;
        assert!(
            udp["10.0.0.0-10.255.255.255"].starts_with("jump log_"),
            "{udp:?}"
        );
        // Deny networks come before the layers in every rule set.
        let rules = &c.objects.chains[&sp].1;
        assert!(rules[1].contains("@deny_r reject"), "{rules:?}");
        assert_eq!(rules[2], "jump g_r");
        assert_eq!(rules[3], format!("jump {layer}"));
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
        let layer = format!("s{:016x}_r", hash64("sp"));
        assert!(!first
            .objects
            .sets
            .contains_key(&format!("{layer}_t1_2000_m")));
        assert!(second
            .objects
            .sets
            .contains_key(&format!("{layer}_t1_2000_m")));
    }
}
