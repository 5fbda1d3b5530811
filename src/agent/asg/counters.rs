//! Reading the ASG table's counters ([`super::counting`]) back: one `nft -j` call lists the
//! named counters and the allowed-connection set; each element is attributed to the rule that
//! decides its connections ([`super::deciding`]), from the groups and containers in force.

use super::compile::SPACE_KEY;
use super::counting::{self, ALLOWED_COUNTS};
use super::deciding::{deciding, IndexedRules};
use super::objects::{Carried, Count, FAMILY, TABLE};
use super::sync::Enforced;
use crate::asg::rule::parse_rules_indexed;
use crate::asg::{Lifecycle, Probe};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// An element of the allowed-connection set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// The destination port; ICMP: type << 8 | code.
    pub port: u16,
}

impl Key {
    /// As nft reads it (the protocol by number).
    pub fn render(&self) -> String {
        format!(
            "{} . {} . {} . {}",
            self.src, self.dst, self.proto, self.port
        )
    }

    pub fn probe(&self) -> Probe {
        match self.proto {
            6 => Probe::Tcp(self.port),
            17 => Probe::Udp(self.port),
            1 => Probe::Icmp {
                icmp_type: (self.port >> 8) as u8,
                code: self.port as u8,
            },
            other => Probe::Other(other),
        }
    }
}

/// What the table's counters said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read {
    pub named: BTreeMap<String, Count>,
    pub allowed: Vec<(Key, Count)>,
}

/// nft's protocol names (`inet_proto` is printed by name when it has one).
fn proto(v: &Value) -> Option<u8> {
    if let Some(n) = v.as_u64() {
        return u8::try_from(n).ok();
    }
    Some(match v.as_str()? {
        "icmp" => 1,
        "igmp" => 2,
        "ipencap" | "ipip" => 4,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "sctp" => 132,
        "udplite" => 136,
        other => other.parse().ok()?,
    })
}

fn count(v: &Value) -> Option<Count> {
    Some(Count {
        packets: v.get("packets")?.as_u64()?,
        bytes: v.get("bytes")?.as_u64()?,
    })
}

fn key(v: &Value) -> Option<Key> {
    match v.get("val")?.get("concat")?.as_array()?.as_slice() {
        [src, dst, p, port] => Some(Key {
            src: src.as_str()?.parse().ok()?,
            dst: dst.as_str()?.parse().ok()?,
            proto: proto(p)?,
            port: u16::try_from(port.as_u64()?).ok()?,
        }),
        _ => None,
    }
}

/// Reads nft's JSON output: one document per command, one per line (anything unreadable is
/// skipped: what nft prints is not trusted to be well formed).
pub fn parse(text: &str) -> Read {
    let mut out = Read::default();
    for doc in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let Ok(doc) = doc else { break };
        let Some(items) = doc.get("nftables").and_then(Value::as_array) else {
            continue;
        };
        for item in items {
            if let Some(c) = item.get("counter") {
                if let (Some(name), Some(n)) = (c.get("name").and_then(Value::as_str), count(c)) {
                    out.named.insert(name.to_string(), n);
                }
            }
            let Some(set) = item.get("set") else { continue };
            if set.get("name").and_then(Value::as_str) != Some(ALLOWED_COUNTS) {
                continue;
            }
            for e in set
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(e) = e.get("elem") else { continue };
                if let (Some(k), Some(n)) = (key(e), e.get("counter").and_then(count)) {
                    out.allowed.push((k, n));
                }
            }
        }
    }
    out
}

fn read_command() -> String {
    format!("list counters table {FAMILY} {TABLE}; list set {FAMILY} {TABLE} {ALLOWED_COUNTS}")
}

/// One `nft -j` listing through `runner`: the named counters and the allowed-connection set.
/// The ASG loop reads through its own libnftables context; the debug port and the scrapes
/// through the `nft` executable ([`read`]).
pub fn read_with(runner: &dyn crate::agent::nft::Runner) -> Result<Read, String> {
    runner
        .list_json(&read_command(), false)
        .map(|out| parse(&out))
        .map_err(|e| e.to_string())
}

/// [`read_with`] the `nft` executable at `nft_path`.
pub fn read(nft_path: &str) -> Result<Read, String> {
    read_with(&crate::agent::nft::Nft::new(nft_path))
}

/// The values a full rewrite must start from ([`super::objects::render_full_carrying`]).
pub fn carried(read: &Read) -> Carried {
    let elements = read.allowed.iter().map(|(k, n)| (k.render(), *n)).collect();
    Carried {
        counters: read.named.clone(),
        elements: BTreeMap::from([(ALLOWED_COUNTS.to_string(), elements)]),
    }
}

/// [`read`] then [`carried`].
pub fn read_carried(nft_path: &str) -> Result<Carried, String> {
    read(nft_path).map(|r| carried(&r))
}

/// What moved since the last read, for the bounded Prometheus totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    pub allowed: u64,
    /// By reason: `deny_network`, `default_deny`, `unknown_source` (the flow log's rule kinds).
    pub denied: BTreeMap<&'static str, u64>,
    /// Refused connections the deny-log limit left unlogged.
    pub log_dropped: u64,
}

/// Last values read, to turn counter values into increases (a counter read lower than before
/// was made again, e.g. by a full rewrite that did not carry it, and counts from 0).
#[derive(Debug, Default)]
pub struct Totals {
    named: HashMap<String, u64>,
    allowed: HashMap<Key, u64>,
}

fn increase(last: Option<u64>, now: u64) -> u64 {
    match last {
        Some(l) if now >= l => now - l,
        _ => now,
    }
}

impl Totals {
    pub fn update(&mut self, read: &Read) -> Moved {
        let mut moved = Moved::default();
        let mut allowed = HashMap::with_capacity(read.allowed.len());
        for (k, n) in &read.allowed {
            moved.allowed += increase(self.allowed.get(k).copied(), n.packets);
            allowed.insert(*k, n.packets);
        }
        self.allowed = allowed;
        for (name, n) in &read.named {
            let up = increase(self.named.insert(name.clone(), n.packets), n.packets);
            let reason = match name.as_str() {
                counting::DENY_NETWORKS_RUNNING | counting::DENY_NETWORKS_STAGING => "deny_network",
                counting::DEFAULT_DENY => "default_deny",
                counting::UNKNOWN_SOURCE => "unknown_source",
                counting::DENY_NETWORKS_DROPPED
                | counting::DEFAULT_DENY_DROPPED
                | counting::UNKNOWN_SOURCE_DROPPED => {
                    moved.log_dropped += up;
                    continue;
                }
                _ => continue,
            };
            *moved.denied.entry(reason).or_default() += up;
        }
        moved
    }
}

/// One rule enforced on the cell and what it allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    pub guid: String,
    pub name: String,
    pub index: usize,
    pub protocol: &'static str,
    /// The rule's `destination`, and `ports` or ICMP `type`/`code`, as the group gives them.
    pub destination: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Value>,
    pub connections: u64,
    pub bytes: u64,
}

/// Per rule of every group that applies to a container of the cell (0 for a rule nothing
/// used), in the groups' order; and what no rule in force decides (connections of an address
/// no container has now, or allowed by rules changed since).
pub fn per_rule(enforced: &Enforced, read: &Read) -> (Vec<RuleCount>, Count) {
    let mut parsed: HashMap<String, IndexedRules> = HashMap::new();
    let mut rules_of = |g: &crate::api::security_groups::SecurityGroup| -> IndexedRules {
        Arc::clone(parsed.entry(g.guid.clone()).or_insert_with(|| {
            Arc::new(
                parse_rules_indexed(&g.rules)
                    .map(|(good, _)| good)
                    .unwrap_or_default(),
            )
        }))
    };
    let mut counts: HashMap<(&str, usize), Count> = HashMap::new();
    let mut unattributed = Count::default();
    // Containers of one space and lifecycle (an app's instances) share their decisions.
    type Decision<'a> = Option<(&'a str, usize)>;
    let mut decided: HashMap<(&str, Lifecycle, Ipv4Addr, u8, u16), Decision> = HashMap::new();
    for (k, n) in &read.allowed {
        let rule = enforced.containers.get(&k.src).and_then(|c| {
            let lc = c.workload().and_then(Lifecycle::of_workload)?;
            let space = c
                .metadata
                .get(SPACE_KEY)
                .and_then(Value::as_str)
                .unwrap_or("");
            *decided
                .entry((space, lc, k.dst, k.proto, k.port))
                .or_insert_with(|| {
                    deciding(&enforced.groups, space, lc, k.dst, k.probe(), &mut rules_of)
                        .map(|(g, index, _)| (g.guid.as_str(), index))
                })
        });
        let slot = match rule {
            Some(rule) => counts.entry(rule).or_default(),
            None => &mut unattributed,
        };
        slot.packets += n.packets;
        slot.bytes += n.bytes;
    }
    let placements: Vec<(&str, Lifecycle)> = enforced
        .containers
        .values()
        .filter_map(|c| {
            let lc = c.workload().and_then(Lifecycle::of_workload)?;
            Some((
                c.metadata
                    .get(SPACE_KEY)
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                lc,
            ))
        })
        .collect();
    let mut out = Vec::new();
    for g in &enforced.groups {
        if !placements
            .iter()
            .any(|(space, lc)| crate::asg::applies(g, space, *lc))
        {
            continue;
        }
        let raw: Vec<Value> = serde_json::from_str(&g.rules).unwrap_or_default();
        for (index, rule) in rules_of(g).iter() {
            let n = counts
                .get(&(g.guid.as_str(), *index))
                .copied()
                .unwrap_or_default();
            let field = |name: &str| raw.get(*index).and_then(|r| r.get(name)).cloned();
            let ports = match rule.traffic.protocol() {
                "tcp" | "udp" => field("ports"),
                "icmp" => Some(serde_json::json!({"type": field("type"), "code": field("code")})),
                _ => None,
            };
            out.push(RuleCount {
                guid: g.guid.clone(),
                name: g.name.clone(),
                index: *index,
                protocol: rule.traffic.protocol(),
                destination: field("destination").unwrap_or(Value::Null),
                ports,
                connections: n.packets,
                bytes: n.bytes,
            });
        }
    }
    (out, unattributed)
}

/// The ASG table's counters as the flow log reports them: read on each scrape and each
/// `/counters` request, against the groups and containers in force.
pub struct AsgCounters {
    asg: Arc<super::AsgAgent>,
    nft_path: String,
    totals: std::sync::Mutex<Totals>,
}

impl AsgCounters {
    /// Takes what the table counted so far as the baseline (nothing when it is not there yet).
    pub fn new(asg: Arc<super::AsgAgent>, nft_path: &str) -> AsgCounters {
        asg.publish_enforced();
        let counters = AsgCounters {
            asg,
            nft_path: nft_path.to_string(),
            totals: std::sync::Mutex::new(Totals::default()),
        };
        let _ = counters.moved();
        counters
    }

    /// What moved since the last call; then the keys of addresses no container has now are
    /// removed (counted first), so the set holds the cell's containers' keys only and a new
    /// container at an old address starts from 0.
    pub fn moved(&self) -> Result<Moved, String> {
        let read = read(&self.nft_path)?;
        let moved = {
            let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
            totals.update(&read)
        };
        self.forget_gone(&read);
        Ok(moved)
    }

    fn forget_gone(&self, read: &Read) {
        let enforced = self.asg.enforced();
        // Nothing published yet: every key would look gone.
        if enforced.containers.is_empty() && enforced.groups.is_empty() {
            return;
        }
        let gone: Vec<String> = read
            .allowed
            .iter()
            .filter(|(k, _)| !enforced.containers.contains_key(&k.src))
            .map(|(k, _)| k.render())
            .collect();
        let mut script = String::new();
        for chunk in gone.chunks(2000) {
            script.push_str(&format!(
                "delete element {FAMILY} {TABLE} {ALLOWED_COUNTS} {{ {} }}\n",
                chunk.join(", ")
            ));
        }
        if script.is_empty() {
            return;
        }
        // A key gone meanwhile (a full rewrite) fails the batch: the next read tries again.
        if let Err(e) = crate::agent::nft::Nft::new(self.nft_path.as_str()).run(&script) {
            log::debug!("forgetting the counts of containers gone: {e}");
        }
    }

    /// `/counters`' part: every rule enforced on the cell with the connections it allowed, and
    /// the table's named counters.
    pub fn json(&self) -> Result<Value, String> {
        let read = read(&self.nft_path)?;
        let enforced = self.asg.enforced();
        let (rules, unattributed) = per_rule(&enforced, &read);
        let mut allowed = Count::default();
        for (_, n) in &read.allowed {
            allowed.packets += n.packets;
            allowed.bytes += n.bytes;
        }
        let named: serde_json::Map<String, Value> = read
            .named
            .iter()
            .map(|(name, n)| {
                let v = serde_json::json!({"connections": n.packets, "bytes": n.bytes});
                (name.clone(), v)
            })
            .collect();
        Ok(serde_json::json!({
            "security_groups": rules,
            "egress": {
                "allowed": {"connections": allowed.packets, "bytes": allowed.bytes},
                "unattributed": {"connections": unattributed.packets, "bytes": unattributed.bytes},
                "tracked_keys": read.allowed.len(),
                "tracked_keys_max": counting::ALLOWED_COUNTS_SIZE,
                "counters": named,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "ip", "name": "default_deny", "table": "netman_asg", "handle": 2, "packets": 5, "bytes": 300}}, {"counter": {"family": "ip", "name": "default_deny_log_dropped", "table": "netman_asg", "handle": 3, "packets": 4, "bytes": 240}}]}
{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "ip", "name": "allowed_counts", "table": "netman_asg", "type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"], "handle": 1, "size": 65536, "elem": [{"elem": {"val": {"concat": ["10.255.0.2", "1.2.3.4", "icmp", 2048]}, "counter": {"packets": 1, "bytes": 84}}}, {"elem": {"val": {"concat": ["10.255.0.2", "1.2.3.4", "tcp", 80]}, "counter": {"packets": 3, "bytes": 180}}}, {"elem": {"val": {"concat": ["10.255.0.2", "1.2.3.4", 47, 0]}, "counter": {"packets": 1, "bytes": 60}}}, {"elem": {"val": {"concat": ["bad", "1.2.3.4", "tcp", 80]}, "counter": {"packets": 9, "bytes": 9}}}], "stmt": [{"counter": null}]}}]}
"#;

    fn k(dst: &str, proto: u8, port: u16) -> Key {
        Key {
            src: "10.255.0.2".parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            port,
        }
    }

    #[test]
    fn both_documents_are_read_and_bad_elements_skipped() {
        let r = parse(SAMPLE);
        let c = |packets, bytes| Count { packets, bytes };
        assert_eq!(
            r.named,
            BTreeMap::from([
                ("default_deny".to_string(), c(5, 300)),
                ("default_deny_log_dropped".to_string(), c(4, 240)),
            ])
        );
        assert_eq!(
            r.allowed,
            [
                (k("1.2.3.4", 1, 2048), c(1, 84)),
                (k("1.2.3.4", 6, 80), c(3, 180)),
                (k("1.2.3.4", 47, 0), c(1, 60)),
            ]
        );
        assert_eq!(
            k("1.2.3.4", 1, 0x0803).probe(),
            Probe::Icmp {
                icmp_type: 8,
                code: 3
            }
        );
        assert_eq!(parse("garbage"), Read::default());
        let carried = carried(&r);
        assert_eq!(
            carried.elements[ALLOWED_COUNTS][1],
            ("10.255.0.2 . 1.2.3.4 . 6 . 80".to_string(), c(3, 180))
        );
    }

    #[test]
    fn totals_count_increases_and_a_counter_made_again_from_zero() {
        let mut t = Totals::default();
        let first = t.update(&parse(SAMPLE));
        assert_eq!(first.allowed, 5);
        assert_eq!(first.denied["default_deny"], 5);
        assert_eq!(first.log_dropped, 4);
        assert_eq!(
            t.update(&parse(SAMPLE)),
            Moved {
                denied: BTreeMap::from([("default_deny", 0)]),
                ..Moved::default()
            }
        );
        let mut lower = parse(SAMPLE);
        lower.named.insert(
            "default_deny".into(),
            Count {
                packets: 2,
                bytes: 1,
            },
        );
        lower.allowed[1].1.packets = 4;
        let m = t.update(&lower);
        assert_eq!((m.allowed, m.denied["default_deny"]), (1, 2));
    }

    /// The table as compiled, with counter values carried into a full rewrite, is accepted by
    /// the kernel, and reads back with those values; an incremental change keeps them.
    #[test]
    fn carried_counters_survive_a_full_rewrite_in_the_kernel() {
        use super::super::compile::{compile, DenyNetworks, Settings};
        use super::super::objects::{render_diff, render_full_carrying};
        use crate::agent::nft::Nft;
        let settings = Settings {
            overlay: "10.255.0.0/16".parse().unwrap(),
            deny: DenyNetworks::default(),
            log_all: true,
            nflog_group: 1,
            denied_logs_per_sec: 1,
            accepted_udp_logs_per_sec: 100,
        };
        let group = |rules: &str| crate::api::security_groups::SecurityGroup {
            guid: "g".into(),
            name: "g".into(),
            rules: rules.into(),
            running_default: true,
            ..Default::default()
        };
        let mut app = crate::cell::Container::for_app("a", "10.255.0.2".parse().unwrap(), "a");
        app.metadata
            .insert("container_workload".into(), serde_json::json!("app"));
        let before = compile(
            &[group(
                r#"[{"protocol":"tcp","destination":"1.2.3.4","ports":"80","log":true}]"#,
            )],
            std::slice::from_ref(&app),
            &settings,
        );
        let after = compile(
            &[group(
                r#"[{"protocol":"tcp","destination":"1.2.3.4","ports":"80,443"}]"#,
            )],
            &[app],
            &settings,
        );
        let mut was = Read::default();
        was.named.insert(
            counting::DEFAULT_DENY.into(),
            Count {
                packets: 5,
                bytes: 300,
            },
        );
        was.allowed.push((
            k("1.2.3.4", 6, 80),
            Count {
                packets: 3,
                bytes: 180,
            },
        ));
        let full = render_full_carrying(&before.objects, &carried(&was));
        let diff = render_diff(&before.objects, &after.objects).unwrap();
        let ns = format!("nmasgcount{}", std::process::id());
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap()
        };
        assert!(ip(&["netns", "add", &ns]).status.success());
        let got = crate::netns::run_in(
            &std::path::PathBuf::from(format!("/run/netns/{ns}")),
            move || -> Result<(Read, Read), String> {
                let nft = Nft::new("nft");
                nft.run(&full).map_err(|e| e.to_string())?;
                let first = read("nft")?;
                nft.run(&diff).map_err(|e| e.to_string())?;
                Ok((first, read("nft")?))
            },
        );
        ip(&["netns", "del", &ns]);
        let (first, second) = got.unwrap().unwrap();
        for r in [&first, &second] {
            assert_eq!(r.named.len(), counting::COUNTERS.len(), "{r:?}");
            assert_eq!(
                r.named[counting::DEFAULT_DENY],
                Count {
                    packets: 5,
                    bytes: 300
                }
            );
            assert_eq!(r.allowed, was.allowed);
        }
    }

    #[test]
    fn each_key_goes_to_its_deciding_rule_and_unused_rules_show_zero() {
        use crate::api::security_groups::SecurityGroup;
        let group = |guid: &str, rules: Value, global: bool, spaces: &[&str]| SecurityGroup {
            guid: guid.into(),
            name: format!("name-{guid}"),
            rules: rules.to_string(),
            running_default: global,
            running_space_guids: spaces.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let app = |ip: &str, space: &str| {
            let mut c = crate::cell::Container::for_app(ip, ip.parse().unwrap(), "a");
            c.metadata
                .insert("space_id".into(), serde_json::json!(space));
            c.metadata
                .insert("container_workload".into(), serde_json::json!("app"));
            (c.ip, c)
        };
        let enforced = Enforced {
            groups: vec![
                group(
                    "s",
                    serde_json::json!([
                        {"protocol": "tcp", "destination": "1.2.3.4", "ports": "80"},
                        {"protocol": "icmp", "destination": "1.2.3.4", "type": 8, "code": -1},
                        {"protocol": "udp", "destination": "1.2.3.4", "ports": "53"}]),
                    false,
                    &["sp"],
                ),
                group(
                    "g",
                    serde_json::json!([{"protocol": "tcp", "destination": "1.2.3.0/24", "ports": "80-81"}]),
                    true,
                    &[],
                ),
                group("elsewhere", serde_json::json!([]), false, &["other"]),
            ],
            containers: [app("10.255.0.2", "sp"), app("10.255.0.3", "sp")].into(),
            ..Enforced::default()
        };
        let key = |src: &str, dst: &str, proto: u8, port: u16| Key {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            port,
        };
        let c = |packets| Count {
            packets,
            bytes: packets * 60,
        };
        let read = Read {
            named: BTreeMap::new(),
            allowed: vec![
                // Both containers to 1.2.3.4:80: the global group's range decides.
                (key("10.255.0.2", "1.2.3.4", 6, 80), c(2)),
                (key("10.255.0.3", "1.2.3.4", 6, 80), c(3)),
                (key("10.255.0.2", "1.2.3.5", 6, 81), c(1)),
                (key("10.255.0.2", "1.2.3.4", 1, 0x0800), c(4)),
                // A container gone, and a port no rule allows now.
                (key("10.255.0.9", "1.2.3.4", 6, 80), c(5)),
                (key("10.255.0.2", "1.2.3.4", 6, 443), c(6)),
            ],
        };
        let (rules, unattributed) = per_rule(&enforced, &read);
        let got: Vec<(&str, usize, u64)> = rules
            .iter()
            .map(|r| (r.guid.as_str(), r.index, r.connections))
            .collect();
        assert_eq!(got, [("s", 0, 0), ("s", 1, 4), ("s", 2, 0), ("g", 0, 6)]);
        assert_eq!(unattributed, c(11));
        assert_eq!(
            rules[1].ports,
            Some(serde_json::json!({"type": 8, "code": -1}))
        );
        assert_eq!(rules[3].destination, serde_json::json!("1.2.3.0/24"));
        assert_eq!(rules[3].bytes, 360);
    }

    fn hostile() -> impl Strategy<Value = String> {
        // Mutations of real output, and arbitrary text.
        prop_oneof![
            "\\PC{0,200}",
            (0..SAMPLE.len(), "\\PC{0,12}").prop_map(|(at, s)| {
                let at = (0..=at)
                    .rev()
                    .find(|i| SAMPLE.is_char_boundary(*i))
                    .unwrap_or(0);
                format!("{}{s}{}", &SAMPLE[..at], &SAMPLE[at..])
            }),
            (0..SAMPLE.len()).prop_map(|cut| SAMPLE[..cut].to_string()),
        ]
    }

    proptest! {
        /// Hostile output never panics, and a key read back renders as nft reads it.
        #[test]
        fn any_output_parses_without_panic(text in hostile()) {
            let r = parse(&text);
            for (k, _) in &r.allowed {
                let parts: Vec<String> = k.render().split(" . ").map(str::to_string).collect();
                prop_assert_eq!(parts.len(), 4);
            }
            let mut t = Totals::default();
            let _ = t.update(&r);
        }
    }
}
