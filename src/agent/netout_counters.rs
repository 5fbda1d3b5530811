//! Per-rule counters of the networker's static NetOut chains (`netout--<handle>`), read by
//! position from `iptables-save -c -t filter`. The chain is the networker's layout: a preamble
//! (established accept, invalid drop, then each deny network's reject, after its `DENYNET_` log
//! when `iptables_asg_logging` is on), the allows (NetOut rule i rendered as
//! `convert_one(rule i)`, in order), and a tail (the `DENY_` log when logging, then REJECT).
//! The preamble is recognised by its shape rather than `netout_preamble_len`: that counts only
//! the rejects, and the agent knows neither the workload's deny networks nor the networker's
//! logging switch. Any other layout (another version's chain, one changed from outside) is
//! reported unattributed, never guessed.

use crate::cell::Container;
use crate::flowlog::identity::SPACE_KEY;
use crate::iptables::{SavedRule, TableState, Target};
use crate::networker::cni_cache;
use crate::networker::names::{validate_handle, ChainNames};
use crate::networker::protocol::NetOutRule;
use crate::networker::rules::convert_one;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// New connections (their first packets: established traffic is accepted in the preamble).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub connections: u64,
    pub bytes: u64,
}

impl Count {
    fn of(rule: &SavedRule) -> Count {
        Count {
            connections: rule.packets.unwrap_or(0),
            bytes: rule.bytes.unwrap_or(0),
        }
    }

    fn add(&mut self, other: Count) {
        self.connections = self.connections.saturating_add(other.connections);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainCounts {
    /// One count per NetOut rule, in the rules' order.
    PerRule(Vec<Count>),
    /// The chain is not laid out as the rules render: what its allow lines (`ACCEPT` or a goto,
    /// without a conntrack state match) counted together, and why.
    Unattributed { total: Count, reason: String },
    /// No such chain (the container is not up, or the agent enforces its egress).
    Missing,
}

/// The iptables lines each NetOut rule renders to; `None` when a rule does not convert.
pub fn rendered_lengths(rules: &[NetOutRule]) -> Option<Vec<usize>> {
    rules
        .iter()
        .map(|r| convert_one(r, &Target::Accept).ok().map(|v| v.len()))
        .collect()
}

fn has_arg(rule: &SavedRule, arg: &str) -> bool {
    rule.args.iter().any(|a| a == arg)
}

fn is_deny(rule: &SavedRule) -> bool {
    matches!(rule.jump_target(), Some("REJECT") | Some("NFLOG"))
}

fn is_allow(rule: &SavedRule) -> bool {
    (rule.jump_target() == Some("ACCEPT") || rule.is_goto()) && !has_arg(rule, "--ctstate")
}

/// The counts of `chain`'s NetOut rules, given the lines each rule renders to (`None`: the
/// rules themselves could not be read or converted).
pub fn chain_counts(state: &TableState, chain: &str, lengths: Option<&[usize]>) -> ChainCounts {
    if !state.has_chain(chain) {
        return ChainCounts::Missing;
    }
    let lines: Vec<&SavedRule> = state.rules_of(chain).collect();
    let unattributed = |reason: String| {
        let mut total = Count::default();
        for l in lines.iter().filter(|l| is_allow(l)) {
            total.add(Count::of(l));
        }
        ChainCounts::Unattributed { total, reason }
    };
    let Some(lengths) = lengths else {
        return unattributed("the container's NetOut rules could not be read".into());
    };
    let fixed_preamble = lines.len() >= 2
        && lines[0].jump_target() == Some("ACCEPT")
        && has_arg(lines[0], "--ctstate")
        && lines[1].jump_target() == Some("DROP");
    if !fixed_preamble {
        return unattributed("the chain does not start with the networker's preamble".into());
    }
    let preamble = 2 + lines[2..]
        .iter()
        .take_while(|l| is_deny(l) && has_arg(l, "-d"))
        .count();
    let allows: usize = lengths.iter().sum();
    let tail = &lines[(preamble + allows).min(lines.len())..];
    let tail_fits = match tail {
        [reject] => reject.jump_target() == Some("REJECT"),
        [log, reject] => {
            log.jump_target() == Some("NFLOG") && reject.jump_target() == Some("REJECT")
        }
        _ => false,
    } && tail.iter().all(|l| !has_arg(l, "-d"));
    let block = &lines[preamble..(preamble + allows).min(lines.len())];
    if !tail_fits || block.len() != allows || !block.iter().all(|l| is_allow(l)) {
        return unattributed(format!(
            "{} lines, not {preamble} + {allows} for the rules + the log and reject tail",
            lines.len()
        ));
    }
    let mut at = 0;
    let per_rule = lengths
        .iter()
        .map(|n| {
            let mut c = Count::default();
            for l in &block[at..at + n] {
                c.add(Count::of(l));
            }
            at += n;
            c
        })
        .collect();
    ChainCounts::PerRule(per_rule)
}

/// Per NetOut chain of the networker (named `netout--`, starting with its established accept:
/// not a `--log` chain), the new connections its allow lines accepted (for the Prometheus total;
/// no attribution needed).
pub fn allowed_by_chain(state: &TableState) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let mut first: BTreeMap<&str, bool> = BTreeMap::new();
    for r in state
        .rules
        .iter()
        .filter(|r| r.chain.starts_with("netout--"))
    {
        let is_netout = *first
            .entry(&r.chain)
            .or_insert_with(|| r.jump_target() == Some("ACCEPT") && has_arg(r, "--ctstate"));
        if is_netout && is_allow(r) {
            let n = out.entry(r.chain.clone()).or_default();
            *n = n.saturating_add(r.packets.unwrap_or(0));
        }
    }
    out
}

/// A container's NetOut rules as the networker keeps them in its CNI cache
/// ([`cni_cache`]); `None` when it has no entry.
pub fn cached_rules(dir: &Path, handle: &str) -> Result<Option<Vec<NetOutRule>>, String> {
    Ok(cni_cache::read(dir, handle)?.map(|c| c.net_out_rules().to_vec()))
}

fn protocol_name(p: u8) -> Value {
    match p {
        0 => json!("all"),
        1 => json!("tcp"),
        2 => json!("udp"),
        3 => json!("icmp"),
        other => json!(other),
    }
}

/// `/counters`' `netout` (one entry per NetOut rule of each container whose chain exists, 0
/// included) and `netout_unattributed` (one per container whose chain is laid out otherwise),
/// from the filter table listed with its counters (`iptables-save -c -t filter`).
pub fn json(state: &TableState, cache_dir: &Path, containers: &[Container]) -> Value {
    let mut rules_out = Vec::new();
    let mut unattributed = Vec::new();
    for c in containers {
        // Never a chain the networker made (it validates handles), nor a safe name to derive.
        if validate_handle(&c.handle).is_err() {
            continue;
        }
        let chain = ChainNames::for_handle(&c.handle).netout.to_string();
        let space = c.metadata.get(SPACE_KEY).and_then(Value::as_str);
        let rules = cached_rules(cache_dir, &c.handle);
        let lengths = match &rules {
            Ok(Some(r)) => rendered_lengths(r),
            _ => None,
        };
        match chain_counts(state, &chain, lengths.as_deref()) {
            ChainCounts::Missing => {}
            ChainCounts::PerRule(counts) => {
                let rules = rules.ok().flatten().unwrap_or_default();
                for (index, (r, n)) in rules.iter().zip(counts).enumerate() {
                    rules_out.push(json!({
                        "handle": c.handle, "app": c.app(), "space": space, "index": index,
                        "protocol": protocol_name(r.protocol), "networks": r.networks,
                        "ports": r.ports, "icmps": r.icmps, "log": r.log,
                        "connections": n.connections, "bytes": n.bytes,
                    }));
                }
            }
            ChainCounts::Unattributed { total, reason } => {
                let reason = match rules {
                    Err(e) => format!("{reason}: {e}"),
                    Ok(_) => reason,
                };
                unattributed.push(json!({
                    "handle": c.handle, "app": c.app(), "space": space, "reason": reason,
                    "connections": total.connections, "bytes": total.bytes,
                }));
            }
        }
    }
    json!({"netout": rules_out, "netout_unattributed": unattributed})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::parse::parse_save;
    use crate::iptables::Table;
    use proptest::prelude::*;

    /// Rule 0: one line; rule 1: two port ranges, two lines (logged); rule 2: one line.
    const SAVE: &str = "\
*filter
:FORWARD ACCEPT [0:0]
:netout--eg - [0:0]
:netout--eg--log - [0:0]
[90:5400] -A FORWARD -s 10.255.0.0/16 -j netout--eg
[30:1800] -A netout--eg -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[0:0] -A netout--eg -p tcp -m conntrack --ctstate INVALID -j DROP
[2:120] -A netout--eg -d 192.168.77.4/32 -m limit --limit 1/sec --limit-burst 1 -j NFLOG --nflog-prefix DENYNET_eg --nflog-group 1
[7:420] -A netout--eg -d 192.168.77.4/32 -j REJECT --reject-with icmp-port-unreachable
[3:180] -A netout--eg -d 192.168.77.2/32 -p tcp -m tcp --dport 9000 -j ACCEPT
[1:60] -A netout--eg -d 192.168.77.2/32 -p tcp -m tcp --dport 9001 -g netout--eg--log
[1:64] -A netout--eg -d 192.168.77.2/32 -p tcp -m tcp --dport 9002:9003 -g netout--eg--log
[0:0] -A netout--eg -d 192.168.77.2/32 -p udp -m udp --dport 53 -j ACCEPT
[4:240] -A netout--eg -m limit --limit 1/sec --limit-burst 1 -j NFLOG --nflog-prefix DENY_eg --nflog-group 1
[54:3240] -A netout--eg -j REJECT --reject-with icmp-port-unreachable
[2:120] -A netout--eg--log -j ACCEPT
COMMIT
";

    fn counts(save: &str, lengths: Option<&[usize]>) -> ChainCounts {
        chain_counts(
            &parse_save(Table::Filter, save).unwrap(),
            "netout--eg",
            lengths,
        )
    }

    fn count(connections: u64, bytes: u64) -> Count {
        Count { connections, bytes }
    }

    #[test]
    fn each_rule_gets_the_sum_of_its_lines_after_the_preamble() {
        assert_eq!(
            counts(SAVE, Some(&[1, 2, 1])),
            ChainCounts::PerRule(vec![count(3, 180), count(2, 124), count(0, 0)])
        );
        // Without logging: no deny-network log, no DENY_ log.
        let quiet: String = SAVE
            .lines()
            .filter(|l| !l.contains("NFLOG"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            counts(&quiet, Some(&[1, 2, 1])),
            ChainCounts::PerRule(vec![count(3, 180), count(2, 124), count(0, 0)])
        );
        // No deny networks, no rules.
        let empty = "*filter\n:netout--eg - [0:0]\n\
            [1:60] -A netout--eg -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            [0:0] -A netout--eg -p tcp -m conntrack --ctstate INVALID -j DROP\n\
            [5:300] -A netout--eg -j REJECT\nCOMMIT\n";
        assert_eq!(counts(empty, Some(&[])), ChainCounts::PerRule(vec![]));
    }

    #[test]
    fn a_chain_not_laid_out_as_the_rules_render_is_unattributed_with_its_total() {
        let total = count(5, 304);
        for lengths in [&[1, 2][..], &[1, 2, 2], &[1, 1, 1], &[]] {
            match counts(SAVE, Some(lengths)) {
                ChainCounts::Unattributed { total: t, .. } => assert_eq!(t, total, "{lengths:?}"),
                other => panic!("{lengths:?}: {other:?}"),
            }
        }
        // A line added from outside among the allows.
        let changed = SAVE.replace(
            "[0:0] -A netout--eg -d 192.168.77.2/32 -p udp",
            "[9:9] -A netout--eg -d 10.0.0.1/32 -j DROP\n[0:0] -A netout--eg -d 192.168.77.2/32 -p udp",
        );
        assert!(matches!(
            counts(&changed, Some(&[1, 2, 1])),
            ChainCounts::Unattributed { total: t, .. } if t == total
        ));
        // Rules that could not be read.
        assert!(matches!(
            counts(SAVE, None),
            ChainCounts::Unattributed { .. }
        ));
        // No preamble.
        let bare = SAVE.replace(
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-j DROP",
        );
        assert!(matches!(
            counts(&bare, Some(&[1, 2, 1])),
            ChainCounts::Unattributed { .. }
        ));
        assert_eq!(
            chain_counts(
                &parse_save(Table::Filter, SAVE).unwrap(),
                "netout--x",
                Some(&[])
            ),
            ChainCounts::Missing
        );
    }

    #[test]
    fn the_allowed_total_of_a_chain_is_its_allow_lines_not_its_log_chain() {
        let got = allowed_by_chain(&parse_save(Table::Filter, SAVE).unwrap());
        assert_eq!(got, [("netout--eg".to_string(), 5)].into());
        // Counters that do not read are an error of the listing, never a count of 0.
        assert!(parse_save(
            Table::Filter,
            "*filter\n[1:x] -A netout--eg -j ACCEPT\nCOMMIT\n"
        )
        .is_err());
    }

    #[test]
    fn the_lengths_are_the_networkers_rendering() {
        let rules: Vec<NetOutRule> = serde_json::from_value(serde_json::json!([
            {"protocol": 1, "networks": [{"start": "10.0.0.1", "end": "10.0.0.1"}],
             "ports": [{"start": 80, "end": 80}, {"start": 443, "end": 444}]},
            {"protocol": 0},
            {"protocol": 2, "networks": [{"start": "10.0.0.1", "end": "10.0.0.1"},
                {"start": "10.0.1.0", "end": "10.0.1.255"}], "ports": [{"start": 53, "end": 53}]}
        ]))
        .unwrap();
        assert_eq!(rendered_lengths(&rules), Some(vec![2, 1, 2]));
        let bad: Vec<NetOutRule> =
            serde_json::from_value(serde_json::json!([{"protocol": 9}])).unwrap();
        assert_eq!(rendered_lengths(&bad), None);
    }

    proptest! {
        #[test]
        fn any_text_never_panics(s in "\\PC{0,400}", lengths in proptest::collection::vec(0usize..4, 0..5)) {
            if let Ok(state) = parse_save(Table::Filter, &s) {
                let _ = chain_counts(&state, "netout--eg", Some(&lengths));
                let _ = allowed_by_chain(&state);
                let _ = json(&state, Path::new("/nonexistent"), &[]);
            }
        }

        #[test]
        fn damaged_save_output_never_panics(
            cut in 0usize..3000,
            at in 0usize..3000,
            byte in any::<char>(),
            lengths in proptest::collection::vec(0usize..4, 0..5),
        ) {
            let mut text: Vec<char> = SAVE.chars().collect();
            let at = at % text.len();
            text[at] = byte;
            let text: String = text.into_iter().take(cut).collect();
            if let Ok(state) = parse_save(Table::Filter, &text) {
                let _ = chain_counts(&state, "netout--eg", Some(&lengths));
            }
        }
    }
}
