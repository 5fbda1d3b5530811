//! The rules of one container, as typed values: NetOut (ASGs, deny networks, logging), the
//! c2c default deny, the cell-input guard, NetIn DNAT + ingress mark, and masquerade.

use super::config::Config;
use super::names::ChainNames;
use super::protocol::{IcmpJson, NetOutRule, PortMapping, PortRangeJson};
use super::Error;
use crate::cell::marks::ALLOWED_BIT;
use crate::iptables::netlink_removal::ChainRemoval;
use crate::iptables::{
    host, Batch, Chain, CtState, IcmpType, InterfaceName, IpRange, Match, Op, PortRange, Position,
    Protocol, Rate, RejectWith, Rule, Table, Target, Text,
};
use std::net::Ipv4Addr;

/// Container workload (from the `container_workload` property): selects deny networks.
pub fn workload_deny_networks(config: &Config, workload: Option<&str>) -> Vec<ipnet::Ipv4Net> {
    let mut nets = config.deny_networks.always.clone();
    match workload {
        Some("app") | Some("task") => nets.extend(config.deny_networks.running.iter().copied()),
        Some("staging") => nets.extend(config.deny_networks.staging.iter().copied()),
        _ => {}
    }
    nets
}

fn text(what: &str, s: &str, max: usize) -> Text {
    let s: String = s.chars().take(max).collect();
    Text::new(what, &s, max).expect("prefix built from a validated handle")
}

fn nflog(config: &Config, prefix: &str, handle: &str) -> Target {
    Target::Nflog {
        group: config.nflog_group,
        prefix: text("log prefix", &format!("{prefix}{handle}"), 63),
    }
}

fn reject() -> Target {
    Target::Reject(RejectWith::IcmpPortUnreachable)
}

fn port_range(p: &PortRangeJson) -> Result<PortRange, String> {
    PortRange::new(p.start, p.end).map_err(|e| format!("netout rule: {e}"))
}

/// Converts garden NetOut rules into ASG allow rules of `netout--H` (each network x port range;
/// logged rules go to `netout--H--log`). Bad rules are errors (nothing is applied).
pub fn convert_netout(
    rules: &[NetOutRule],
    log_chain: &Chain,
    log_all: bool,
) -> Result<Vec<Rule>, Error> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let target = if r.log || log_all {
            Target::Goto(log_chain.clone())
        } else {
            Target::Accept
        };
        let converted =
            convert_one(r, &target).map_err(|e| Error::Input(format!("netout rule {i}: {e}")))?;
        out.extend(converted);
    }
    Ok(out)
}

/// One NetOut rule: a rule per destination range (and per port range for TCP and UDP).
pub fn convert_one(r: &NetOutRule, target: &Target) -> Result<Vec<Rule>, String> {
    let mut nets: Vec<Option<IpRange>> = Vec::new();
    for n in &r.networks {
        nets.push(Some(IpRange::new(n.start, n.end)?));
    }
    if nets.is_empty() {
        nets.push(None);
    }
    let with_net = |n: &Option<IpRange>| match n {
        Some(range) => Rule::new(target.clone()).with(Match::DestinationRange(*range)),
        None => Rule::new(target.clone()),
    };
    let mut out = Vec::new();
    match r.protocol {
        0 => {
            if !r.ports.is_empty() {
                return Err("protocol all must not have ports".into());
            }
            out.extend(nets.iter().map(with_net));
        }
        1 | 2 => {
            let proto = if r.protocol == 1 {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            if r.icmps.is_some() {
                return Err(format!("{} rule must not have icmps", proto.name()));
            }
            if r.ports.is_empty() {
                return Err(format!("{} rule needs ports", proto.name()));
            }
            for n in &nets {
                for p in &r.ports {
                    let range = port_range(p)?;
                    out.push(
                        with_net(n)
                            .protocol(proto)
                            .with(Match::DestinationPort(range)),
                    );
                }
            }
        }
        3 => {
            if !r.ports.is_empty() {
                return Err("icmp rule must not have ports".into());
            }
            out.extend(nets.iter().map(|n| icmp_rule(with_net(n), r.icmps)));
        }
        other => {
            return Err(format!(
                "unknown protocol {other} (0 all, 1 tcp, 2 udp, 3 icmp)"
            ))
        }
    }
    Ok(out)
}

fn icmp_rule(rule: Rule, icmp: Option<IcmpJson>) -> Rule {
    let rule = rule.protocol(Protocol::Icmp);
    match icmp {
        // type 255 = any type (garden/CAPI convention)
        Some(icmp) if icmp.kind != 255 => rule.with(Match::Icmp(IcmpType {
            kind: icmp.kind,
            code: icmp.code.filter(|c| *c != 255),
        })),
        _ => rule,
    }
}

/// Number of fixed rules at the top of `netout--H` (ASG allows are inserted after them): the
/// established accept, the invalid drop, and per deny network its reject, after its log rule
/// when `logged` (`iptables_asg_logging`), as [`UpPlan`]'s NetOut rules lay them out.
pub fn netout_preamble_len(deny: usize, logged: bool) -> u32 {
    let per_deny = if logged { 2 } else { 1 };
    2 + deny as u32 * per_deny
}

/// Where `up` puts a jump from a built-in chain: filter jumps first in INPUT and FORWARD (as the
/// original, and before the cell guard's, which are last: see `guard`), nat and mangle jumps last.
pub fn hook_position(table: Table) -> Position {
    match table {
        Table::Filter => Position::First,
        _ => Position::Last,
    }
}

/// The jumps from built-in chains into the container's chains, in the order `up` adds them
/// (without the NetOut jump when the policy agent owns the container's egress).
pub fn hooks(
    config: &Config,
    handle: &str,
    ip: Ipv4Addr,
    agent_egress: bool,
) -> Vec<(Table, Chain, Rule)> {
    let n = ChainNames::for_handle(handle);
    let ip = host(ip);
    let overlay = config.overlay();
    let hooks = vec![
        (
            Table::Mangle,
            Chain::prerouting(),
            Rule::new(Target::Jump(n.netin.clone())),
        ),
        (
            Table::Nat,
            Chain::prerouting(),
            Rule::new(Target::Jump(n.netin.clone())),
        ),
        (
            Table::Nat,
            Chain::postrouting(),
            Rule::new(Target::Jump(n.masq.clone())).source(ip),
        ),
        (
            Table::Filter,
            Chain::forward(),
            Rule::new(Target::Jump(n.netout.clone()))
                .source(ip)
                .not_destination(overlay),
        ),
        (
            Table::Filter,
            Chain::forward(),
            Rule::new(Target::Jump(n.overlay.clone())),
        ),
        (
            Table::Filter,
            Chain::input(),
            Rule::new(Target::Jump(n.input.clone())).source(ip),
        ),
    ];
    hooks
        .into_iter()
        .filter(|(_, _, r)| !(agent_egress && r.target == Target::Jump(n.netout.clone())))
        .collect()
}

/// The filter chains of a container: without `netout--H` and its log chain when the agent owns
/// its egress.
pub fn filter_chains(n: &ChainNames, agent_egress: bool) -> Vec<Chain> {
    let mut chains = n.filter();
    if agent_egress {
        chains.retain(|c| *c != n.netout && *c != n.netout_log);
    }
    chains
}

/// What `down` removes over nfnetlink: every chain a container can have in each table, and the
/// built-in chains `up` hooks them into (only what exists is removed; the chains of a container
/// whose egress the agent owns are a subset).
pub fn removal_plan(config: &Config, handle: &str) -> Vec<ChainRemoval> {
    let n = ChainNames::for_handle(handle);
    let hooks = hooks(config, handle, Ipv4Addr::UNSPECIFIED, false);
    [
        (Table::Mangle, n.mangle()),
        (Table::Nat, n.nat()),
        (Table::Filter, n.filter()),
    ]
    .into_iter()
    .map(|(table, chains)| {
        let mut parents: Vec<Chain> = Vec::new();
        for (_, parent, _) in hooks.iter().filter(|(t, _, _)| *t == table) {
            if !parents.contains(parent) {
                parents.push(parent.clone());
            }
        }
        ChainRemoval {
            table,
            chains,
            parents,
        }
    })
    .collect()
}

/// Everything `up` installs for one container, as one batch (mangle, nat, filter).
pub struct UpPlan<'a> {
    pub config: &'a Config,
    pub handle: &'a str,
    pub ip: Ipv4Addr,
    pub mappings: &'a [PortMapping],
    pub asg: Vec<Rule>,
    pub workload: Option<&'a str>,
    /// The policy agent enforces this container's ASGs (no NetOut chains).
    pub agent_egress: bool,
}

impl UpPlan<'_> {
    /// The chains in the order they are created (a chain exists before anything jumps or goes
    /// to it), then the jumps from the built-in chains.
    pub fn batch(&self) -> Batch {
        let n = ChainNames::for_handle(self.handle);
        let marks: Vec<Rule> = self.mappings.iter().map(|m| self.netin_mark(m)).collect();
        let dnats: Vec<Rule> = self.mappings.iter().map(|m| self.netin_dnat(m)).collect();
        let chains = [
            (Table::Mangle, &n.netin, marks),
            (Table::Nat, &n.netin, dnats),
            (Table::Nat, &n.masq, self.masq_rules()),
            (Table::Filter, &n.netout_log, self.netout_log_rules()),
            (Table::Filter, &n.netout, self.netout_rules()),
            (Table::Filter, &n.overlay, self.overlay_rules()),
            (Table::Filter, &n.input, self.input_rules()),
        ];
        let mut b = Batch::new();
        let netout = [&n.netout, &n.netout_log];
        for (table, chain, rules) in chains {
            if self.agent_egress && netout.contains(&chain) {
                continue;
            }
            b.push(table, Op::NewChain(chain.clone()));
            b.append_rules(table, chain, &rules);
        }
        for (table, parent, jump) in hooks(self.config, self.handle, self.ip, self.agent_egress) {
            b.add_jump(table, &parent, jump, hook_position(table));
        }
        b
    }

    /// The NetOut part of [`UpPlan::batch`] alone (its chains and its jump), for a container
    /// whose other rules went in without it (`agent_egress`) when the agent then declined.
    pub fn netout_batch(&self) -> Batch {
        let n = ChainNames::for_handle(self.handle);
        let mut b = Batch::new();
        for (chain, rules) in [
            (&n.netout_log, self.netout_log_rules()),
            (&n.netout, self.netout_rules()),
        ] {
            b.push(Table::Filter, Op::NewChain(chain.clone()));
            b.append_rules(Table::Filter, chain, &rules);
        }
        let netout = Target::Jump(n.netout.clone());
        for (table, parent, jump) in hooks(self.config, self.handle, self.ip, false) {
            if jump.target == netout {
                b.add_jump(table, &parent, jump, hook_position(table));
            }
        }
        b
    }

    /// nat: masquerade what leaves the overlay.
    fn masq_rules(&self) -> Vec<Rule> {
        vec![Rule::new(Target::Masquerade).not_destination(self.config.overlay())]
    }

    /// filter: accepted egress that is logged (logged NetOut rules go to it); UDP rate limited.
    fn netout_log_rules(&self) -> Vec<Rule> {
        let c = self.config;
        let udp_rate = Rate::per_second(c.iptables_accepted_udp_logs_per_sec).expect("validated");
        vec![
            Rule::new(nflog(c, "OK_", self.handle))
                .with(Match::Protocol {
                    proto: Protocol::Udp,
                    negate: true,
                })
                .ctstate(&[CtState::Invalid, CtState::New, CtState::Untracked]),
            Rule::new(nflog(c, "OK_", self.handle))
                .protocol(Protocol::Udp)
                .with(Match::Limit {
                    rate: udp_rate,
                    burst: c.iptables_accepted_udp_logs_per_sec,
                }),
            Rule::new(Target::Accept),
        ]
    }

    /// filter: NetOut (ASGs) for egress leaving the overlay: the workload's deny networks first,
    /// then the allows, then REJECT.
    fn netout_rules(&self) -> Vec<Rule> {
        let mut netout = vec![
            Rule::new(Target::Accept).ctstate(&[CtState::Related, CtState::Established]),
            Rule::new(Target::Drop)
                .protocol(Protocol::Tcp)
                .ctstate(&[CtState::Invalid]),
        ];
        for d in workload_deny_networks(self.config, self.workload) {
            if self.config.iptables_asg_logging {
                // Its own prefix: the flow log names "deny network" as the deciding rule.
                netout.push(self.deny_log("DENYNET_").destination(d));
            }
            netout.push(Rule::new(reject()).destination(d));
        }
        netout.extend(self.asg.iter().cloned());
        if self.config.iptables_asg_logging {
            netout.push(self.deny_log("DENY_"));
        }
        netout.push(Rule::new(reject()));
        netout
    }

    /// filter: overlay (c2c): tagged egress only, default deny of ingress but for NetIn and
    /// what a policy allows.
    fn overlay_rules(&self) -> Vec<Rule> {
        let c = self.config;
        let ip = host(self.ip);
        let vtep = InterfaceName::new(&c.vtep_name).expect("validated at config load");
        let mark = |value, mask| Match::Mark {
            value,
            mask,
            negate: false,
        };
        let mut ov = vec![
            // Only through the VXLAN device: a same-cell destination must meet its own chain.
            Rule::new(Target::Accept)
                .source(ip)
                .destination(c.overlay())
                .with(Match::OutInterface {
                    name: vtep,
                    negate: false,
                })
                .with(Match::Mark {
                    value: 0,
                    mask: None,
                    negate: true,
                }),
            Rule::new(Target::Accept)
                .destination(ip)
                .ctstate(&[CtState::Related, CtState::Established]),
            Rule::new(Target::Accept)
                .destination(ip)
                .with(mark(c.ingress_mark(), None)),
            // The policy agent marks the first packet of an allowed connection with this bit
            // (it decides, this chain enforces: see src/cell/marks.rs).
            Rule::new(Target::Accept)
                .destination(ip)
                .with(mark(ALLOWED_BIT, Some(ALLOWED_BIT))),
        ];
        if c.iptables_c2c_logging {
            ov.push(self.deny_log("DENY_C2C_").destination(ip));
        }
        ov.push(Rule::new(reject()).destination(ip));
        ov
    }

    /// filter: input (container -> cell): established, DNS, nothing else.
    fn input_rules(&self) -> Vec<Rule> {
        let mut input =
            vec![Rule::new(Target::Accept).ctstate(&[CtState::Related, CtState::Established])];
        for dns in &self.config.dns_servers {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                input.push(
                    Rule::new(Target::Accept)
                        .destination(host(*dns))
                        .protocol(proto)
                        .with(Match::DestinationPort(PortRange::single(53).expect("53"))),
                );
            }
        }
        input.push(Rule::new(reject()));
        input
    }

    fn deny_log(&self, prefix: &str) -> Rule {
        let rate = Rate::per_second(self.config.iptables_denied_logs_per_sec).expect("validated");
        Rule::new(nflog(self.config, prefix, self.handle)).with(Match::Limit {
            rate,
            burst: self.config.iptables_denied_logs_per_sec,
        })
    }

    pub fn netin_dnat(&self, m: &PortMapping) -> Rule {
        netin_dnat(self.config, self.ip, m)
    }
    pub fn netin_mark(&self, m: &PortMapping) -> Rule {
        netin_mark(self.config, m)
    }
}

pub fn netin_dnat(config: &Config, ip: Ipv4Addr, m: &PortMapping) -> Rule {
    Rule::new(Target::Dnat {
        ip,
        port: Some(m.container_port),
    })
    .destination(host(config.instance()))
    .protocol(Protocol::Tcp)
    .with(Match::DestinationPort(
        PortRange::single(m.host_port).expect("non-zero host port"),
    ))
}

pub fn netin_mark(config: &Config, m: &PortMapping) -> Rule {
    Rule::new(Target::SetMark {
        value: config.ingress_mark(),
        mask: 0xffffffff,
    })
    .destination(host(config.instance()))
    .protocol(Protocol::Tcp)
    .with(Match::DestinationPort(
        PortRange::single(m.host_port).expect("non-zero host port"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::render::rule_spec;
    use crate::networker::protocol::{IcmpJson, IpRangeJson};

    fn rule(protocol: u8, ports: &[(u16, u16)], icmps: Option<IcmpJson>, log: bool) -> NetOutRule {
        NetOutRule {
            protocol,
            networks: vec![IpRangeJson {
                start: "10.0.0.0".parse().unwrap(),
                end: "10.0.0.255".parse().unwrap(),
            }],
            ports: ports
                .iter()
                .map(|(s, e)| PortRangeJson { start: *s, end: *e })
                .collect(),
            icmps,
            log,
        }
    }

    #[test]
    fn converts_every_protocol() {
        let log = Chain::new("netout--h--log").unwrap();
        let r = convert_netout(
            &[
                rule(1, &[(80, 80), (8000, 8010)], None, false),
                rule(2, &[(53, 53)], None, true),
                rule(
                    3,
                    &[],
                    Some(IcmpJson {
                        kind: 8,
                        code: Some(0),
                    }),
                    false,
                ),
                rule(0, &[], None, false),
            ],
            &log,
            false,
        )
        .unwrap();
        let specs: Vec<String> = r.iter().map(rule_spec).collect();
        assert_eq!(
            specs,
            vec![
                "-m iprange --dst-range 10.0.0.0-10.0.0.255 -p tcp -m tcp --dport 80 -j ACCEPT",
                "-m iprange --dst-range 10.0.0.0-10.0.0.255 -p tcp -m tcp --dport 8000:8010 -j ACCEPT",
                "-m iprange --dst-range 10.0.0.0-10.0.0.255 -p udp -m udp --dport 53 -g netout--h--log",
                "-m iprange --dst-range 10.0.0.0-10.0.0.255 -p icmp -m icmp --icmp-type 8/0 -j ACCEPT",
                "-m iprange --dst-range 10.0.0.0-10.0.0.255 -j ACCEPT",
            ]
        );
    }

    #[test]
    fn removal_looks_for_every_jump_and_chain_up_adds() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "cni_plugin_dir": "/p", "cni_config_dir": "/c", "bind_mount_dir": "/b",
            "state_file": "/s", "iptables_lock_file": "/l", "datastore": "/d",
            "overlay_network": "10.255.0.0/16", "instance_address": "192.0.2.1",
            "dns_servers": ["169.254.0.2"]
        }))
        .unwrap();
        let ip: Ipv4Addr = "10.255.0.7".parse().unwrap();
        let mappings = [PortMapping {
            host_port: 61000,
            container_port: 8080,
        }];
        for agent_egress in [false, true] {
            let plan = UpPlan {
                config: &config,
                handle: "h",
                ip,
                mappings: &mappings,
                asg: vec![],
                workload: None,
                agent_egress,
            };
            let up = plan.batch();
            let down = removal_plan(&config, "h");
            if agent_egress {
                let text = crate::iptables::render::table_text(&up, Table::Filter).unwrap();
                assert!(!text.contains("netout--"), "{text}");
            }
            for t in [Table::Mangle, Table::Nat, Table::Filter] {
                let builtin_adds: Vec<String> = crate::iptables::render::table_text(&up, t)
                    .unwrap()
                    .lines()
                    .filter_map(|l| {
                        let inserted = l.strip_prefix("-I ").map(|l| l.replacen(" 1 ", " ", 1));
                        inserted.or_else(|| l.strip_prefix("-A ").map(str::to_string))
                    })
                    .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
                    .collect();
                let removal = down.iter().find(|r| r.table == t).unwrap();
                for add in &builtin_adds {
                    let parent = add.split(' ').next().unwrap();
                    assert!(
                        removal.parents.iter().any(|p| p.as_str() == parent),
                        "{t}: {add} is not looked for"
                    );
                }
                for op in up.ops(t) {
                    if let Op::NewChain(c) = op {
                        assert!(removal.chains.contains(c), "{t}: {c} is not removed");
                    }
                }
            }
        }
    }

    /// The static path after the agent declined: the rules without NetOut, then the NetOut
    /// part, install what the static plan does in one batch (filter jumps in another order).
    #[test]
    fn rules_without_netout_then_the_netout_part_make_the_static_plan() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "cni_plugin_dir": "/p", "cni_config_dir": "/c", "bind_mount_dir": "/b",
            "state_file": "/s", "iptables_lock_file": "/l", "datastore": "/d",
            "overlay_network": "10.255.0.0/16", "instance_address": "192.0.2.1",
            "deny_networks": {"always": ["169.254.0.0/16"]}, "iptables_asg_logging": true
        }))
        .unwrap();
        let log = Chain::new("netout--h--log").unwrap();
        let asg = convert_netout(&[rule(1, &[(443, 443)], None, true)], &log, false).unwrap();
        let mappings = [PortMapping {
            host_port: 61000,
            container_port: 8080,
        }];
        let plan = |agent_egress| UpPlan {
            config: &config,
            handle: "h",
            ip: "10.255.0.7".parse().unwrap(),
            mappings: &mappings,
            asg: asg.clone(),
            workload: Some("app"),
            agent_egress,
        };
        for t in [Table::Mangle, Table::Nat, Table::Filter] {
            let text = |b: &Batch| crate::iptables::render::table_text(b, t).unwrap_or_default();
            let lines = |text: String| {
                let mut v: Vec<String> = text
                    .lines()
                    .filter(|l| !l.starts_with('*') && *l != "COMMIT")
                    .map(str::to_string)
                    .collect();
                v.sort();
                v
            };
            let split = lines(text(&plan(true).batch()) + &text(&plan(false).netout_batch()));
            assert_eq!(split, lines(text(&plan(false).batch())), "{t}");
        }
        let netout =
            crate::iptables::render::table_text(&plan(false).netout_batch(), Table::Filter)
                .unwrap();
        assert!(
            netout.contains("-I FORWARD 1 -s 10.255.0.7/32 ! -d 10.255.0.0/16 -j netout--h"),
            "{netout}"
        );
        assert!(netout.contains("-g netout--h--log"), "{netout}");
    }

    #[test]
    fn rejects_bad_rules() {
        let log = Chain::new("netout--h--log").unwrap();
        for (r, msg) in [
            (rule(1, &[], None, false), "needs ports"),
            (rule(0, &[(1, 2)], None, false), "must not have ports"),
            (rule(3, &[(1, 2)], None, false), "must not have ports"),
            (rule(1, &[(9, 1)], None, false), "invalid port range"),
            (rule(7, &[], None, false), "unknown protocol"),
        ] {
            let e = convert_netout(&[r], &log, false).unwrap_err();
            assert!(e.to_string().contains(msg), "{e}");
        }
        let mut r = rule(0, &[], None, false);
        r.networks[0].end = "9.0.0.0".parse().unwrap();
        assert!(convert_netout(&[r], &log, false).is_err());
    }
}
