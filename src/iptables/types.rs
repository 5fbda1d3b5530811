//! Typed iptables values: tables, chain names, matches, targets and rules. Every value is checked
//! when it is built, so rendering (in `render.rs`) never has to reject anything.

use super::error::Invalid;
use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Filter,
    Nat,
    Mangle,
    Raw,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
            Table::Mangle => "mangle",
            Table::Raw => "raw",
        }
    }

    pub const ALL: [Table; 4] = [Table::Raw, Table::Mangle, Table::Nat, Table::Filter];
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Longest chain name the netman components use (the kernel allows 28 visible characters).
pub const MAX_CHAIN_LEN: usize = 28;

/// A validated chain name: 1-28 characters of `[A-Za-z0-9_.-]`, not starting with `-` or `!`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chain(String);

impl Chain {
    pub fn new(name: &str) -> Result<Chain, Invalid> {
        if name.is_empty() || name.len() > MAX_CHAIN_LEN {
            return Err(Invalid(format!(
                "invalid chain name {name:?}: must be 1-{MAX_CHAIN_LEN} characters"
            )));
        }
        if name.starts_with('-') {
            return Err(Invalid(format!(
                "invalid chain name {name:?}: must not start with '-'"
            )));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(Invalid(format!(
                "invalid chain name {name:?}: only letters, digits, '_', '-' and '.' are allowed"
            )));
        }
        Ok(Chain(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kernel's built-in chains (which have a policy and cannot be created or deleted).
    pub fn is_builtin(&self) -> bool {
        matches!(
            self.0.as_str(),
            "INPUT" | "FORWARD" | "OUTPUT" | "PREROUTING" | "POSTROUTING"
        )
    }

    pub fn input() -> Chain {
        Chain("INPUT".into())
    }
    pub fn forward() -> Chain {
        Chain("FORWARD".into())
    }
    pub fn output() -> Chain {
        Chain("OUTPUT".into())
    }
    pub fn prerouting() -> Chain {
        Chain("PREROUTING".into())
    }
    pub fn postrouting() -> Chain {
        Chain("POSTROUTING".into())
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

/// An inclusive port range; `start == end` is a single port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(start: u16, end: u16) -> Result<PortRange, Invalid> {
        if start == 0 || end < start {
            return Err(Invalid(format!(
                "invalid port range {start}-{end}: ports must be 1-65535 with start <= end"
            )));
        }
        Ok(PortRange { start, end })
    }
    pub fn single(port: u16) -> Result<PortRange, Invalid> {
        PortRange::new(port, port)
    }
}

/// An inclusive IPv4 address range for `-m iprange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl IpRange {
    pub fn new(start: Ipv4Addr, end: Ipv4Addr) -> Result<IpRange, Invalid> {
        if u32::from(end) < u32::from(start) {
            return Err(Invalid(format!(
                "invalid IP range {start}-{end}: start is after end"
            )));
        }
        Ok(IpRange { start, end })
    }
}

/// ICMP type and optional code (`None` = any code of that type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpType {
    pub kind: u8,
    pub code: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
}

impl CtState {
    pub fn name(self) -> &'static str {
        match self {
            CtState::New => "NEW",
            CtState::Established => "ESTABLISHED",
            CtState::Related => "RELATED",
            CtState::Invalid => "INVALID",
            CtState::Untracked => "UNTRACKED",
        }
    }
}

/// Text that goes into a quoted argument (comment, log prefix, hashlimit name): printable ASCII
/// without quotes or backslashes' surprises, bounded length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Text(String);

impl Text {
    pub fn new(what: &str, text: &str, max: usize) -> Result<Text, Invalid> {
        if text.is_empty() || text.len() > max {
            return Err(Invalid(format!(
                "invalid {what} {text:?}: must be 1-{max} characters"
            )));
        }
        if !text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(Invalid(format!(
                "invalid {what} {text:?}: only printable ASCII characters are allowed"
            )));
        }
        Ok(Text(text.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A rate for `-m limit` / `-m hashlimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateUnit {
    Second,
    Minute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u32,
    pub per: RateUnit,
}

impl Rate {
    pub fn new(count: u32, per: RateUnit) -> Result<Rate, Invalid> {
        if count == 0 {
            return Err(Invalid("invalid rate: must be greater than 0".into()));
        }
        Ok(Rate { count, per })
    }
    pub fn per_second(count: u32) -> Result<Rate, Invalid> {
        Rate::new(count, RateUnit::Second)
    }
    pub fn per_minute(count: u32) -> Result<Rate, Invalid> {
        Rate::new(count, RateUnit::Minute)
    }
}

/// One match of a rule. Rendered in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    Source {
        net: Ipv4Net,
        negate: bool,
    },
    Destination {
        net: Ipv4Net,
        negate: bool,
    },
    /// `-p` (and `-m tcp|udp|icmp` for the port/type matches that follow)
    Protocol {
        proto: Protocol,
        negate: bool,
    },
    /// `-m iprange --dst-range`
    DestinationRange(IpRange),
    /// `-m iprange --src-range`
    SourceRange(IpRange),
    /// `-m tcp|udp --dport S[:E]`; needs a preceding `Protocol` match of tcp or udp.
    DestinationPort(PortRange),
    SourcePort(PortRange),
    /// `-m icmp --icmp-type T[/C]`; needs a preceding `Protocol` icmp match.
    Icmp(IcmpType),
    /// `-m mark [!] --mark V[/M]`
    Mark {
        value: u32,
        mask: Option<u32>,
        negate: bool,
    },
    /// `-m conntrack --ctstate A,B`
    CtState(Vec<CtState>),
    InInterface(InterfaceName),
    OutInterface {
        name: InterfaceName,
        negate: bool,
    },
    /// `-m limit --limit N/unit --limit-burst B`
    Limit {
        rate: Rate,
        burst: u32,
    },
    /// `-m hashlimit --hashlimit-above ... --hashlimit-mode dstip,dstport`
    HashLimitAbove {
        rate: Rate,
        burst: u32,
        name: Text,
        expire_ms: u64,
    },
    /// `-m comment --comment "..."`
    Comment(Text),
}

/// A network interface name (1-15 characters, no '/', no whitespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    pub fn new(name: &str) -> Result<InterfaceName, Invalid> {
        if name.is_empty()
            || name.len() > 15
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
        {
            return Err(Invalid(format!("invalid interface name {name:?}")));
        }
        Ok(InterfaceName(name.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectWith {
    IcmpPortUnreachable,
    IcmpHostUnreachable,
    IcmpNetUnreachable,
    IcmpAdminProhibited,
    TcpReset,
}

impl RejectWith {
    pub fn name(self) -> &'static str {
        match self {
            RejectWith::IcmpPortUnreachable => "icmp-port-unreachable",
            RejectWith::IcmpHostUnreachable => "icmp-host-unreachable",
            RejectWith::IcmpNetUnreachable => "icmp-net-unreachable",
            RejectWith::IcmpAdminProhibited => "icmp-admin-prohibited",
            RejectWith::TcpReset => "tcp-reset",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Accept,
    Drop,
    Return,
    Reject(RejectWith),
    /// `-j MARK --set-xmark value/mask`
    SetMark {
        value: u32,
        mask: u32,
    },
    /// `-j DNAT --to-destination ip[:port]`
    Dnat {
        ip: Ipv4Addr,
        port: Option<u16>,
    },
    Masquerade,
    /// `-j NFLOG --nflog-group G --nflog-prefix "P"` (LOG is silent inside namespaces)
    Nflog {
        group: u16,
        prefix: Text,
    },
    Jump(Chain),
    Goto(Chain),
}

/// A rule: matches then one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub target: Target,
}

impl Rule {
    pub fn new(target: Target) -> Rule {
        Rule {
            matches: Vec::new(),
            target,
        }
    }

    /// Adds a match (builder style).
    pub fn with(mut self, m: Match) -> Rule {
        self.matches.push(m);
        self
    }

    pub fn source(self, net: Ipv4Net) -> Rule {
        self.with(Match::Source { net, negate: false })
    }
    pub fn destination(self, net: Ipv4Net) -> Rule {
        self.with(Match::Destination { net, negate: false })
    }
    pub fn not_destination(self, net: Ipv4Net) -> Rule {
        self.with(Match::Destination { net, negate: true })
    }
    pub fn protocol(self, proto: Protocol) -> Rule {
        self.with(Match::Protocol {
            proto,
            negate: false,
        })
    }
    pub fn ctstate(self, states: &[CtState]) -> Rule {
        self.with(Match::CtState(states.to_vec()))
    }
    pub fn comment(self, text: Text) -> Rule {
        self.with(Match::Comment(text))
    }

    /// The chain this rule jumps or goes to, if any.
    pub fn jump_target(&self) -> Option<&Chain> {
        match &self.target {
            Target::Jump(c) | Target::Goto(c) => Some(c),
            _ => None,
        }
    }

    /// Checks the combinations rendering relies on: port matches follow a tcp/udp protocol match,
    /// icmp matches follow an icmp protocol match.
    pub fn check(&self) -> Result<(), Invalid> {
        let mut proto: Option<Protocol> = None;
        for m in &self.matches {
            match m {
                Match::Protocol { proto: p, negate } => {
                    proto = if *negate { None } else { Some(*p) };
                }
                Match::DestinationPort(_) | Match::SourcePort(_)
                    if !matches!(proto, Some(Protocol::Tcp) | Some(Protocol::Udp)) =>
                {
                    return Err(Invalid(
                        "a port match needs a preceding tcp or udp protocol".into(),
                    ));
                }
                Match::Icmp(_) if proto != Some(Protocol::Icmp) => {
                    return Err(Invalid(
                        "an icmp type match needs a preceding icmp protocol".into(),
                    ));
                }
                Match::CtState(states) if states.is_empty() => {
                    return Err(Invalid("a conntrack match needs at least one state".into()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `a.b.c.d/32` for one address.
pub fn host(ip: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(ip, 32).expect("/32 is a valid prefix")
}
