//! The cell guard: a cell-wide default deny for container traffic, behind every container's
//! own chains. A container's chains decide all of its traffic (each ends in REJECT); the guard
//! sees only what no container chain decided: traffic of a container whose chains are not (or no
//! longer) installed. So a container that has an address but not yet its chains (CNI ADD done,
//! rules not yet applied, or the networker killed in between) is denied, not open.
//!
//! `netman--input` (last in INPUT) rejects new traffic from the container network to the cell,
//! but for loopback and the VXLAN device (remote containers' traffic, which their own cell
//! governs). `netman--forward` (last in FORWARD) rejects new traffic from or to the container
//! network. Replies (RELATED, ESTABLISHED) pass: a container without chains cannot have started a
//! connection, and replies of complete containers (e.g. of an untagged container over the VXLAN
//! device) must keep flowing as before. Container jumps are inserted first in INPUT and FORWARD,
//! so they always come before the guard's.

use super::config::Config;
use crate::cell::marks::ASG_ALLOWED_BIT;
use crate::iptables::{
    Batch, Chain, CtState, InterfaceName, Locked, Match, Op, Position, RejectWith, Rule, Table,
    Target,
};

/// The names of the guard's chains (filter table).
pub const CHAINS: [&str; 2] = ["netman--input", "netman--forward"];

/// One chain of the guard: its name, its parent (built-in) chain, its rules.
struct Part {
    chain: Chain,
    parent: Chain,
    rules: Vec<Rule>,
}

fn reject() -> Target {
    Target::Reject(RejectWith::IcmpPortUnreachable)
}

fn replies() -> Rule {
    Rule::new(Target::Return).ctstate(&[CtState::Related, CtState::Established])
}

fn parts(config: &Config) -> [Part; 2] {
    let overlay = config.overlay();
    let from = |name: &str| {
        let name = InterfaceName::new(name).expect("validated at config load");
        Rule::new(Target::Return).with(Match::InInterface(name))
    };
    let chain = |name: &str| Chain::new(name).expect("valid name");
    [
        Part {
            chain: chain(CHAINS[0]),
            parent: Chain::input(),
            rules: vec![
                replies(),
                from("lo"),
                from(&config.vtep_name),
                Rule::new(reject()).source(overlay),
            ],
        },
        Part {
            chain: chain(CHAINS[1]),
            parent: Chain::forward(),
            rules: vec![
                replies(),
                // New egress a security group allows: the policy agent's ASG table marks it
                // (and refuses the rest itself) when it owns the container's egress.
                Rule::new(Target::Accept)
                    .source(overlay)
                    .not_destination(overlay)
                    .with(Match::Mark {
                        value: ASG_ALLOWED_BIT,
                        mask: Some(ASG_ALLOWED_BIT),
                        negate: false,
                    }),
                Rule::new(reject()).source(overlay),
                Rule::new(reject()).destination(overlay),
            ],
        },
    ]
}

fn jump(chain: &Chain) -> Rule {
    Rule::new(Target::Jump(chain.clone()))
}

/// Checks only: fails unless every rule and jump of the guard is in place.
pub fn check_batch(config: &Config) -> Batch {
    let mut b = Batch::new();
    for p in parts(config) {
        b.push(Table::Filter, Op::Check(p.parent, jump(&p.chain)));
        for r in p.rules {
            b.push(Table::Filter, Op::Check(p.chain.clone(), r));
        }
    }
    b
}

/// (Re)installs the guard under `lock`: what exists of it is removed and the chains are made
/// again, their jumps last in INPUT and FORWARD, in one transaction (no moment without it).
pub fn install(config: &Config, lock: &Locked<'_>) -> Result<(), crate::iptables::Error> {
    let state = lock.list(Table::Filter)?;
    let mut b = Batch::new();
    let all: Vec<Chain> = parts(config).into_iter().map(|p| p.chain).collect();
    b.remove_chains(&state, &all);
    for p in parts(config) {
        let j = jump(&p.chain);
        b.create_chain(
            Table::Filter,
            &p.chain,
            &p.rules,
            &p.parent,
            j,
            Position::Last,
        );
    }
    lock.apply(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::render::table_text;

    #[test]
    fn the_guard_rejects_the_container_network_but_lets_replies_pass() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "overlay_network": "10.255.0.0/16", "instance_address": "192.0.2.1"
        }))
        .unwrap();
        let text = table_text(&check_batch(&config), Table::Filter).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("-C")).collect();
        assert_eq!(
            lines,
            [
                "-C INPUT -j netman--input",
                "-C netman--input -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-C netman--input -i lo -j RETURN",
                &format!(
                    "-C netman--input -i {} -j RETURN",
                    crate::cell::DEFAULT_VTEP
                ),
                "-C netman--input -s 10.255.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
                "-C FORWARD -j netman--forward",
                "-C netman--forward -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-C netman--forward -s 10.255.0.0/16 ! -d 10.255.0.0/16 -m mark --mark 0x2000000/0x2000000 -j ACCEPT",
                "-C netman--forward -s 10.255.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
                "-C netman--forward -d 10.255.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
    }
}
