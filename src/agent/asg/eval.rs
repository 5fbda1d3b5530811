//! A reader of the compiled table, for tests: walks the chains, maps and sets of [`Objects`] the
//! way the kernel evaluates them (only the statement forms the compiler writes; anything else
//! panics, so a new form cannot pass unread), and says what happens to a new connection.

use super::objects::{Objects, SetObj};
use crate::asg::Probe;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The allowed bit is set; the log prefixes written on the way.
    Allowed(Vec<String>),
    Refused,
}

/// What a new connection did in the table: the outcome, and the counters it moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Named counters, in the order hit.
    pub counters: Vec<String>,
    /// Dynamic set updates: (set, key as nft reads it).
    pub counted: Vec<(String, String)>,
}

enum Step {
    Done(Outcome),
    Continue,
    /// A `goto`'s chain ended: the chain that went there ends too.
    Return,
}

struct Packet {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    probe: Probe,
    /// The packet mark's value as the table sets it (a host class's number).
    mark: u32,
    logs: Vec<String>,
    counters: Vec<String>,
    counted: Vec<(String, String)>,
}

impl Packet {
    fn l4(&self) -> &'static str {
        match self.probe {
            Probe::Tcp(_) => "tcp",
            Probe::Udp(_) => "udp",
            Probe::Icmp { .. } => "icmp",
            Probe::Other(_) => "other",
        }
    }

    fn proto(&self) -> u8 {
        match self.probe {
            Probe::Tcp(_) => 6,
            Probe::Udp(_) => 17,
            Probe::Icmp { .. } => 1,
            Probe::Other(n) => n,
        }
    }

    fn dport(&self) -> Option<u32> {
        match self.probe {
            Probe::Tcp(p) | Probe::Udp(p) => Some(p as u32),
            _ => None,
        }
    }
}

fn in_range(key: &str, x: u32, parse: fn(&str) -> u32) -> bool {
    match key.split_once('-') {
        Some((a, b)) => parse(a) <= x && x <= parse(b),
        None => parse(key) == x,
    }
}

fn addr(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap_or_else(|e| panic!("{s}: {e}")))
}

fn num(s: &str) -> u32 {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The value of the element whose key covers `x` (intervals of one field).
fn lookup(set: &SetObj, x: u32, parse: fn(&str) -> u32) -> Option<&String> {
    let hits: Vec<&String> = set
        .elements
        .iter()
        .filter(|(k, _)| in_range(k, x, parse))
        .map(|(_, v)| v)
        .collect();
    assert!(hits.len() <= 1, "overlapping elements for {x} in {set:?}");
    hits.first().copied()
}

fn quoted(rule: &str) -> String {
    rule.split('"').nth(1).expect("a log prefix").to_string()
}

fn chain(o: &Objects, name: &str, p: &mut Packet) -> Step {
    let (_, rules) = o
        .chains
        .get(name)
        .unwrap_or_else(|| panic!("no chain {name}"));
    for rule in rules {
        match statement(o, rule, p) {
            Step::Done(out) => return Step::Done(out),
            Step::Return => return Step::Continue,
            Step::Continue => {}
        }
    }
    Step::Continue
}

fn set<'a>(o: &'a Objects, name: &str) -> &'a SetObj {
    o.sets.get(name).unwrap_or_else(|| panic!("no set {name}"))
}

fn verdict(o: &Objects, value: Option<&String>, p: &mut Packet) -> Step {
    match value {
        None => Step::Continue,
        Some(v) => match v.strip_prefix("jump ") {
            Some(target) => chain(o, target, p),
            None => panic!("verdict {v}"),
        },
    }
}

/// `update @S { ip saddr . ip daddr . meta l4proto . th sport|th dport }` (after its protocol
/// test): the key this packet adds to or finds in `S`. A protocol without ports reads whatever
/// its header holds there: 0 here.
fn update(rest: &str, p: &mut Packet) -> Step {
    let (set, key) = rest.split_once(' ').expect("a set and a key");
    let port = match key {
        "{ ip saddr . ip daddr . meta l4proto . th sport }" => match p.probe {
            Probe::Icmp { icmp_type, code } => (icmp_type as u32) << 8 | code as u32,
            _ => panic!("th sport of {:?}", p.probe),
        },
        "{ ip saddr . ip daddr . meta l4proto . th dport }" => p.dport().unwrap_or(0),
        _ => panic!("update key not understood: {key}"),
    };
    let key = format!("{} . {} . {} . {port}", p.src, p.dst, p.proto());
    p.counted.push((set.to_string(), key));
    Step::Continue
}

fn statement(o: &Objects, rule: &str, p: &mut Packet) -> Step {
    if let Some(rest) = rule.strip_prefix("meta l4proto icmp update @") {
        return if p.l4() == "icmp" {
            update(rest, p)
        } else {
            Step::Continue
        };
    }
    if let Some(rest) = rule.strip_prefix("meta l4proto != icmp update @") {
        return if p.l4() != "icmp" {
            update(rest, p)
        } else {
            Step::Continue
        };
    }
    if let Some(rest) = rule.strip_prefix("counter name \"") {
        let (name, then) = rest.split_once("\" ").expect("a counter and a statement");
        p.counters.push(name.to_string());
        return statement(o, then, p);
    }
    if let Some(target) = rule.strip_prefix("goto ") {
        return match chain(o, target, p) {
            Step::Done(out) => Step::Done(out),
            _ => Step::Return,
        };
    }
    // `meta l4proto P meta mark set ip daddr map @M <then>`: a data map's value into the mark;
    // no element, and the rule ends there.
    if let Some((l4, rest)) = rule
        .strip_prefix("meta l4proto ")
        .and_then(|r| r.split_once(' '))
    {
        if let Some(rest) = rest.strip_prefix("meta mark set ip daddr map @") {
            if l4 != p.l4() {
                return Step::Continue;
            }
            let (map, then) = rest.split_once(' ').expect("a map and a statement");
            let Some(value) = set(o, map).elements.get(&p.dst.to_string()) else {
                return Step::Continue;
            };
            let hex = value.strip_prefix("0x").expect("a mark in hex");
            p.mark = u32::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{value}: {e}"));
            return statement(o, then, p);
        }
    }
    if let Some((selector, map)) = rule.split_once(" vmap @") {
        let m = set(o, map);
        let value = match selector {
            "ip daddr" => lookup(m, u32::from(p.dst), addr),
            "th dport" => lookup(m, p.dport().expect("a port"), num),
            "meta mark" => m.elements.get(&format!("0x{:08x}", p.mark)),
            "ip daddr . meta l4proto . th dport" => match p.dport() {
                Some(port) => m.elements.get(&format!("{} . {} . {port}", p.dst, p.l4())),
                None => None,
            },
            _ => {
                let rest = selector
                    .strip_prefix("meta l4proto ")
                    .unwrap_or_else(|| panic!("selector {selector}"));
                let (l4, field) = rest.split_once(' ').expect("protocol and field");
                if l4 != p.l4() {
                    return Step::Continue;
                }
                match (field, p.probe) {
                    ("th dport", _) => lookup(m, p.dport().expect("a port"), num),
                    ("ip daddr", _) => lookup(m, u32::from(p.dst), addr),
                    ("th sport", Probe::Icmp { icmp_type, code }) => {
                        lookup(m, (icmp_type as u32) << 8 | code as u32, num)
                    }
                    _ => panic!("selector {selector}"),
                }
            }
        };
        return verdict(o, value, p);
    }
    if let Some(rest) = rule.strip_prefix("ip daddr @") {
        let (name, action) = rest.split_once(' ').expect("a set and an action");
        if lookup(set(o, name), u32::from(p.dst), addr).is_none() {
            return Step::Continue;
        }
        return statement(o, action, p);
    }
    // A small class: `ip daddr A[-B] jump X` / `th dport N[-M] jump X`.
    let words: Vec<&str> = rule.split(' ').collect();
    if let [a, b, key, "jump", target] = words.as_slice() {
        let hit = match (*a, *b) {
            ("ip", "daddr") => in_range(key, u32::from(p.dst), addr),
            ("th", "dport") => in_range(key, p.dport().expect("a port"), num),
            _ => panic!("statement not understood: {rule}"),
        };
        return if hit {
            chain(o, target, p)
        } else {
            Step::Continue
        };
    }
    if let Some(target) = rule.strip_prefix("jump ") {
        return chain(o, target, p);
    }
    if rule.starts_with("meta mark set meta mark | 0x") && rule.ends_with(" accept") {
        return Step::Done(Outcome::Allowed(std::mem::take(&mut p.logs)));
    }
    if rule.starts_with("reject") {
        return Step::Done(Outcome::Refused);
    }
    let logs = |p: &mut Packet| {
        p.logs.push(quoted(rule));
        Step::Continue
    };
    if rule.starts_with("meta l4proto udp limit rate ") {
        return if p.l4() == "udp" {
            logs(p)
        } else {
            Step::Continue
        };
    }
    if rule.starts_with("meta l4proto != udp log prefix ") {
        return if p.l4() != "udp" {
            logs(p)
        } else {
            Step::Continue
        };
    }
    // A deny log: under its limit (always, here), logs and refuses.
    if rule.starts_with("limit rate ") && rule.contains(" log prefix ") {
        logs(p);
        return if rule.contains(" reject") {
            Step::Done(Outcome::Refused)
        } else {
            Step::Continue
        };
    }
    panic!("statement not understood: {rule}")
}

/// What the table does to a new connection from container `src` to `dst` (the forward chain's
/// egress rules: the container's rule set, an unknown source refused).
pub fn decide(o: &Objects, src: Ipv4Addr, dst: Ipv4Addr, probe: Probe) -> Decision {
    let mut p = Packet {
        src,
        dst,
        probe,
        // A source tag, as the c2c table leaves the mark: read as a class number, it would name
        // one (numbers start at 1).
        mark: 1,
        logs: Vec::new(),
        counters: Vec::new(),
        counted: Vec::new(),
    };
    let containers = set(o, "containers");
    let outcome = match verdict(o, containers.elements.get(&src.to_string()), &mut p) {
        Step::Done(out) => out,
        Step::Continue | Step::Return => Outcome::Refused,
    };
    Decision {
        outcome,
        counters: p.counters,
        counted: p.counted,
    }
}
