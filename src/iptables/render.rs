//! The one place where typed rules become `iptables-restore` text.

use super::batch::{Batch, Op};
use super::types::*;

/// The argument tokens of a rule (everything after `-A CHAIN`).
pub fn rule_tokens(rule: &Rule) -> Vec<String> {
    let mut t = Tokens::default();
    for m in &rule.matches {
        t.add_match(m);
    }
    t.add_target(&rule.target);
    t.tokens
}

/// Tokens being rendered, and the protocol of the last protocol match (port matches name it).
#[derive(Default)]
struct Tokens {
    tokens: Vec<String>,
    proto: Option<Protocol>,
}

impl Tokens {
    fn push(&mut self, parts: &[&str]) {
        self.tokens.extend(parts.iter().map(|s| s.to_string()));
    }

    fn negated(&mut self, negate: bool, parts: &[&str]) {
        if negate {
            self.push(&["!"]);
        }
        self.push(parts);
    }

    fn add_match(&mut self, m: &Match) {
        let proto = self.proto.map(|p| p.name()).unwrap_or("tcp");
        match m {
            Match::Source { net, negate } => self.negated(*negate, &["-s", &net.to_string()]),
            Match::Destination { net, negate } => self.negated(*negate, &["-d", &net.to_string()]),
            Match::Protocol { proto: p, negate } => {
                self.negated(*negate, &["-p", p.name()]);
                self.proto = if *negate { None } else { Some(*p) };
            }
            Match::DestinationRange(r) => {
                self.push(&["-m", "iprange", "--dst-range", &range(r)]);
            }
            Match::SourceRange(r) => {
                self.push(&["-m", "iprange", "--src-range", &range(r)]);
            }
            Match::DestinationPort(p) => self.push(&["-m", proto, "--dport", &ports(p)]),
            Match::SourcePort(p) => self.push(&["-m", proto, "--sport", &ports(p)]),
            Match::Icmp(i) => {
                let v = match i.code {
                    Some(c) => format!("{}/{}", i.kind, c),
                    None => i.kind.to_string(),
                };
                self.push(&["-m", "icmp", "--icmp-type", &v]);
            }
            Match::Mark {
                value,
                mask,
                negate,
            } => {
                self.push(&["-m", "mark"]);
                let v = match mask {
                    Some(m) => format!("{value:#x}/{m:#x}"),
                    None => format!("{value:#x}"),
                };
                self.negated(*negate, &["--mark", &v]);
            }
            Match::CtState(states) => {
                let s: Vec<&str> = states.iter().map(|s| s.name()).collect();
                self.push(&["-m", "conntrack", "--ctstate", &s.join(",")]);
            }
            Match::InInterface(i) => self.push(&["-i", i.as_str()]),
            Match::OutInterface { name, negate } => self.negated(*negate, &["-o", name.as_str()]),
            Match::Limit { rate: r, burst } => self.push(&[
                "-m",
                "limit",
                "--limit",
                &rate(r),
                "--limit-burst",
                &burst.to_string(),
            ]),
            Match::HashLimitAbove {
                rate: r,
                burst,
                name,
                expire_ms,
            } => self.push(&[
                "-m",
                "hashlimit",
                "--hashlimit-above",
                &rate(r),
                "--hashlimit-burst",
                &burst.to_string(),
                "--hashlimit-mode",
                "dstip,dstport",
                "--hashlimit-name",
                name.as_str(),
                "--hashlimit-htable-expire",
                &expire_ms.to_string(),
            ]),
            Match::Comment(c) => self.push(&["-m", "comment", "--comment", c.as_str()]),
        }
    }

    fn add_target(&mut self, target: &Target) {
        match target {
            Target::Accept => self.push(&["-j", "ACCEPT"]),
            Target::Drop => self.push(&["-j", "DROP"]),
            Target::Return => self.push(&["-j", "RETURN"]),
            Target::Reject(w) => self.push(&["-j", "REJECT", "--reject-with", w.name()]),
            Target::SetMark { value, mask } => self.push(&[
                "-j",
                "MARK",
                "--set-xmark",
                &format!("{value:#x}/{mask:#x}"),
            ]),
            Target::Dnat { ip, port } => {
                let to = match port {
                    Some(p) => format!("{ip}:{p}"),
                    None => ip.to_string(),
                };
                self.push(&["-j", "DNAT", "--to-destination", &to]);
            }
            Target::Masquerade => self.push(&["-j", "MASQUERADE"]),
            Target::Nflog { group, prefix } => self.push(&[
                "-j",
                "NFLOG",
                "--nflog-group",
                &group.to_string(),
                "--nflog-prefix",
                prefix.as_str(),
            ]),
            Target::Jump(c) => self.push(&["-j", c.as_str()]),
            Target::Goto(c) => self.push(&["-g", c.as_str()]),
        }
    }
}

fn range(r: &IpRange) -> String {
    format!("{}-{}", r.start, r.end)
}

fn ports(p: &PortRange) -> String {
    if p.start == p.end {
        p.start.to_string()
    } else {
        format!("{}:{}", p.start, p.end)
    }
}

fn rate(r: &Rate) -> String {
    match r.per {
        RateUnit::Second => format!("{}/second", r.count),
        RateUnit::Minute => format!("{}/minute", r.count),
    }
}

/// Quotes one token for `iptables-restore`: bare when it has only safe characters, else in double
/// quotes with `"` and `\` escaped (the syntax `iptables-save` itself prints).
pub fn quote(token: &str) -> String {
    let safe = !token.is_empty()
        && token.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | ',' | '!' | '+')
        });
    if safe {
        return token.to_string();
    }
    let mut out = String::with_capacity(token.len() + 2);
    out.push('"');
    for c in token.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

pub fn join_tokens(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| quote(t))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One rule as the text after `-A CHAIN `.
pub fn rule_spec(rule: &Rule) -> String {
    join_tokens(&rule_tokens(rule))
}

fn op_line(op: &Op) -> String {
    match op {
        Op::NewChain(c) => format!("-N {c}"),
        Op::Append(c, r) => format!("-A {c} {}", rule_spec(r)),
        Op::Insert(c, pos, r) => format!("-I {c} {pos} {}", rule_spec(r)),
        Op::Delete(c, r) => format!("-D {c} {}", rule_spec(r)),
        Op::DeleteSaved(s) => format!("-D {} {}", s.chain, join_tokens(&s.args)),
        Op::Flush(c) => format!("-F {c}"),
        Op::DeleteChain(c) => format!("-X {c}"),
        Op::Rename(from, to) => format!("-E {from} {to}"),
    }
}

/// The `iptables-restore` input for one table of the batch (`None` when it has no operations).
pub fn table_text(batch: &Batch, table: Table) -> Option<String> {
    let ops = batch.ops(table);
    if ops.is_empty() {
        return None;
    }
    let mut text = format!("*{}\n", table.name());
    for op in ops {
        text.push_str(&op_line(op));
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn renders_the_reference_shapes() {
        let ip = Ipv4Addr::new(10, 255, 0, 2);
        let rule = Rule::new(Target::Goto(Chain::new("netout--h1--log").unwrap()))
            .with(Match::DestinationRange(
                IpRange::new(Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 255)).unwrap(),
            ))
            .protocol(Protocol::Tcp)
            .with(Match::DestinationPort(PortRange::new(8000, 8010).unwrap()));
        assert_eq!(
            rule_spec(&rule),
            "-m iprange --dst-range 10.0.0.0-10.0.0.255 -p tcp -m tcp --dport 8000:8010 -g netout--h1--log"
        );
        let rule = Rule::new(Target::Dnat {
            ip,
            port: Some(8080),
        })
        .destination(host(Ipv4Addr::new(192, 0, 2, 1)))
        .protocol(Protocol::Tcp)
        .with(Match::DestinationPort(PortRange::single(61000).unwrap()));
        assert_eq!(
            rule_spec(&rule),
            "-d 192.0.2.1/32 -p tcp -m tcp --dport 61000 -j DNAT --to-destination 10.255.0.2:8080"
        );
        let rule = Rule::new(Target::Nflog {
            group: 3,
            prefix: Text::new("prefix", "OK_h1 ", 64).unwrap(),
        })
        .with(Match::Protocol {
            proto: Protocol::Udp,
            negate: true,
        })
        .ctstate(&[CtState::Invalid, CtState::New, CtState::Untracked]);
        assert_eq!(
            rule_spec(&rule),
            "! -p udp -m conntrack --ctstate INVALID,NEW,UNTRACKED -j NFLOG --nflog-group 3 --nflog-prefix \"OK_h1 \""
        );
        let rule = Rule::new(Target::Accept)
            .source(host(ip))
            .with(Match::Mark {
                value: 0,
                mask: None,
                negate: true,
            })
            .protocol(Protocol::Icmp)
            .with(Match::Icmp(IcmpType {
                kind: 8,
                code: Some(0),
            }));
        assert_eq!(
            rule_spec(&rule),
            "-s 10.255.0.2/32 -m mark ! --mark 0x0 -p icmp -m icmp --icmp-type 8/0 -j ACCEPT"
        );
        let rule = Rule::new(Target::SetMark {
            value: 0xffff0000,
            mask: 0xffffffff,
        });
        assert_eq!(
            rule_spec(&rule),
            "-j MARK --set-xmark 0xffff0000/0xffffffff"
        );
    }

    #[test]
    fn quotes_comments() {
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("10.0.0.1/32"), "10.0.0.1/32");
        assert_eq!(quote(""), "\"\"");
    }
}
