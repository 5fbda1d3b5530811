//! The egress rule that decided a logged connection. The lookup is an interface
//! ([`EgressRules`]): [`StaticNetout`] reads the container's static NetOut rules (garden's
//! `netout_rules`, kept by the networker in its CNI cache) and names the first that matches, as
//! iptables does; with dynamic security groups the agent adds the rules its ASG table names in
//! its log prefixes (`crate::agent::asg::flow_rules`).

use super::event::{Rule, Verdict};
use super::packet::Ipv4Packet;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The part of garden's NetOut rule (as the networker keeps it in its CNI cache) that decides
/// which rule a packet meets. Read here rather than through the networker's type: the agent side
/// depends only on the stored format (`networker` and `agent` share only `cell`).
#[derive(Debug, Clone, Deserialize)]
pub struct NetOutRule {
    #[serde(default)]
    pub protocol: u8,
    #[serde(default)]
    pub networks: Vec<Range<Ipv4Addr>>,
    #[serde(default)]
    pub ports: Vec<Range<u16>>,
    /// ICMP type and code of a protocol 3 rule (type 255: any; no code or 255: any code).
    #[serde(default)]
    pub icmps: Option<Icmps>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Icmps {
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub code: Option<u8>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Range<T> {
    pub start: T,
    pub end: T,
}

pub trait EgressRules: Send + Sync {
    /// The rule that allowed `packet` leaving container `handle`.
    fn allowing(&self, handle: &str, packet: &Ipv4Packet) -> Rule;
    /// The verdict and rule a log prefix of the ASG table names (`ASG_OK ...`, `ASG_DENY ...`)
    /// for `packet`; `None` when no ASG table is enforced or the prefix names nothing it knows.
    fn security_group(&self, _prefix: &str, _packet: &Ipv4Packet) -> Option<(Verdict, Rule)> {
        None
    }
    /// The cell's containers changed: forget what was read about them.
    fn refresh(&self) {}
}

/// The static NetOut rules of each container, read from the networker's CNI cache
/// (`<cni_cache_dir>/<handle>.json`, `runtime_config.netOutRules`) once per container.
pub struct StaticNetout {
    dir: PathBuf,
    cache: Mutex<HashMap<String, Arc<Vec<NetOutRule>>>>,
}

impl StaticNetout {
    pub fn new(dir: impl Into<PathBuf>) -> StaticNetout {
        StaticNetout {
            dir: dir.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn rules(&self, handle: &str) -> Option<Arc<Vec<NetOutRule>>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = cache.get(handle) {
            return Some(r.clone());
        }
        if handle.contains('/') || handle.starts_with('.') {
            return None;
        }
        let bytes = std::fs::read(self.dir.join(format!("{handle}.json"))).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let rules = v.get("runtime_config")?.get("netOutRules")?.clone();
        let rules: Vec<NetOutRule> = serde_json::from_value(rules).ok()?;
        let rules = Arc::new(rules);
        cache.insert(handle.to_string(), rules.clone());
        Some(rules)
    }
}

impl EgressRules for StaticNetout {
    fn allowing(&self, handle: &str, packet: &Ipv4Packet) -> Rule {
        let found = self
            .rules(handle)
            .and_then(|rules| rules.iter().position(|r| matches(r, packet)));
        match found {
            Some(index) => Rule::Netout { index },
            None => Rule::Unknown,
        }
    }

    fn refresh(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Whether NetOut rule `r` allows `p` (garden's numbering: 0 all, 1 tcp, 2 udp, 3 icmp).
pub fn matches(r: &NetOutRule, p: &Ipv4Packet) -> bool {
    let in_networks = r.networks.is_empty()
        || r.networks
            .iter()
            .any(|n| (n.start..=n.end).contains(&p.dst));
    let protocol = match r.protocol {
        0 => true,
        1 => p.protocol == 6,
        2 => p.protocol == 17,
        3 => p.protocol == 1,
        _ => false,
    };
    let ports = match (r.protocol, p.ports) {
        (1 | 2, Some((_, dport))) => r.ports.iter().any(|x| (x.start..=x.end).contains(&dport)),
        (1 | 2, None) => false,
        _ => true,
    };
    // As the networker renders it: `--icmp-type T` or `T/C`; 255 means any.
    let icmp = match (r.protocol, r.icmps) {
        (3, Some(Icmps { kind, code })) if kind != 255 => p.icmp.is_some_and(|(t, c)| {
            t == kind && code.filter(|c| *c != 255).is_none_or(|code| code == c)
        }),
        _ => true,
    };
    in_networks && protocol && ports && icmp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> NetOutRule {
        serde_json::from_str(json).unwrap()
    }

    fn tcp(dst: &str, port: u16) -> Ipv4Packet {
        Ipv4Packet {
            protocol: 6,
            src: "10.255.1.2".parse().unwrap(),
            dst: dst.parse().unwrap(),
            ports: Some((40000, port)),
            icmp: None,
            len: 60,
        }
    }

    #[test]
    fn the_first_matching_netout_rule_of_the_container_decides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("h1.json"),
            r#"{"runtime_config":{"netOutRules":[
                {"protocol":2,"networks":[{"start":"10.0.0.0","end":"10.0.0.255"}],"ports":[{"start":53,"end":53}]},
                {"protocol":1,"networks":[{"start":"10.0.0.0","end":"10.0.0.255"}],"ports":[{"start":80,"end":90}],"log":true},
                {"protocol":0,"networks":[{"start":"10.0.0.0","end":"10.0.0.255"}]}
            ]}}"#,
        )
        .unwrap();
        let rules = StaticNetout::new(dir.path());
        assert_eq!(
            rules.allowing("h1", &tcp("10.0.0.7", 85)),
            Rule::Netout { index: 1 }
        );
        assert_eq!(
            rules.allowing("h1", &tcp("10.0.0.7", 443)),
            Rule::Netout { index: 2 }
        );
        assert_eq!(rules.allowing("h1", &tcp("10.0.1.7", 85)), Rule::Unknown);
        assert_eq!(rules.allowing("nope", &tcp("10.0.0.7", 85)), Rule::Unknown);
        assert_eq!(rules.allowing("../h1", &tcp("10.0.0.7", 85)), Rule::Unknown);
    }

    fn icmp(kind: u8, code: u8) -> Ipv4Packet {
        Ipv4Packet {
            protocol: 1,
            ports: None,
            icmp: Some((kind, code)),
            ..tcp("1.1.1.1", 0)
        }
    }

    #[test]
    fn icmp_and_all_rules_need_no_ports() {
        let all = rule(r#"{"protocol":0}"#);
        let echo = rule(r#"{"protocol":3,"icmps":{"type":8,"code":0}}"#);
        let ping = icmp(8, 0);
        assert!(matches(&all, &ping) && matches(&echo, &ping));
        assert!(!matches(&echo, &tcp("1.1.1.1", 80)));
    }

    #[test]
    fn an_icmp_event_is_matched_to_the_rule_that_allows_its_type_and_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("h1.json"),
            r#"{"runtime_config":{"netOutRules":[
                {"protocol":3,"networks":[{"start":"1.1.1.1","end":"1.1.1.1"}],"icmps":{"type":8,"code":1}},
                {"protocol":3,"networks":[{"start":"1.1.1.1","end":"1.1.1.1"}],"icmps":{"type":13,"code":0}},
                {"protocol":3,"networks":[{"start":"1.1.1.1","end":"1.1.1.1"}],"icmps":{"type":8}},
                {"protocol":3,"networks":[{"start":"1.1.1.1","end":"1.1.1.1"}],"icmps":{"type":255,"code":255}}
            ]}}"#,
        )
        .unwrap();
        let rules = StaticNetout::new(dir.path());
        let index = |kind, code| match rules.allowing("h1", &icmp(kind, code)) {
            Rule::Netout { index } => Some(index),
            _ => None,
        };
        assert_eq!(index(8, 1), Some(0), "type and code");
        assert_eq!(index(8, 0), Some(2), "type 8, any code");
        assert_eq!(index(13, 0), Some(1));
        assert_eq!(index(13, 1), Some(3), "only the any-type rule");
        assert_eq!(index(0, 0), Some(3));
        let code_any = rule(r#"{"protocol":3,"icmps":{"type":3,"code":255}}"#);
        assert!(matches(&code_any, &icmp(3, 9)) && !matches(&code_any, &icmp(4, 9)));
        let no_header = Ipv4Packet {
            icmp: None,
            ..icmp(8, 0)
        };
        assert!(!matches(
            &rule(r#"{"protocol":3,"icmps":{"type":8}}"#),
            &no_header
        ));
        assert!(matches(&rule(r#"{"protocol":3}"#), &no_header));
    }
}
