//! The agent's dataplane: its own nftables table `ip netman_vpa`, rendered from typed values in
//! this one place and applied one transaction per change (the kernel holds the old or the new
//! complete state, never a mix, even if the agent dies mid-apply): in-process through
//! libnftables ([`super::libnft`]) when it loads, else by `nft -f -` ([`Nft`]).
//!
//! ```text
//! table ip netman_vpa {
//!   map source_tags    { type ipv4_addr : mark; }                              # local source IP -> tag
//!   set allowed        { type ipv4_addr . inet_proto . inet_service . mark; }   # single ports (hash)
//!   map allowed_ranges { type ipv4_addr . inet_proto . mark : verdict; }        # -> jump ports_<ranges>
//!   chain ports_20000_20999 { th dport 20000-20999 meta mark set meta mark | 0x01000000 }
//!   chain forward { type filter hook forward priority -10; policy accept;
//!     meta mark set ip saddr map @source_tags
//!     ct state new ip daddr . meta l4proto . th dport . meta mark @allowed meta mark set meta mark | 0x01000000
//!     ct state new meta mark & 0x01000000 == 0 ip daddr . meta l4proto . meta mark vmap @allowed_ranges
//!     [c2c logging: NFLOG of allowed new connections, UDP rate limited]
//!   }
//! }
//! ```
//! Every lookup is a hash lookup whose cost does not grow with the number of elements. Single
//! ports (and ranges of up to [`super::plan::EXPAND_RANGES_UP_TO`] ports, expanded) are elements
//! of `allowed`. Wider ranges are checked by a chain per distinct list of ranges
//! ([`PortRanges`]), reached through `allowed_ranges` keyed on (destination, protocol, tag): one
//! more hash lookup and a range check over that key's own few ranges. (One interval set for all
//! wide ranges, as first built, cost every new connection time in proportion to its size:
//! 10,000 elements cut new connections/s to a fifth.) Lookups run only for the first packet of a
//! connection (`ct state new`).

use super::plan::{Allow, Diff, Plan, PortRanges, RangeKey};
use crate::cell::marks::{ALLOWED_BIT, HIGH_MASK};
use crate::nfnetlink::{Seq, Socket};
use crate::os_error::OsError;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

pub const FAMILY: &str = "ip";
pub const TABLE: &str = "netman_vpa";
pub const CHAIN: &str = "forward";
/// Before iptables-nft's filter FORWARD (priority 0), so the marks are there when it decides.
pub const PRIORITY: i32 = -10;

/// The agent's sets and maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    SourceTags,
    Allowed,
    AllowedRanges,
}

impl Set {
    pub fn name(self) -> &'static str {
        match self {
            Set::SourceTags => "source_tags",
            Set::Allowed => "allowed",
            Set::AllowedRanges => "allowed_ranges",
        }
    }

    /// `add map|set ip netman_vpa <name> { ... }`
    fn declaration(self) -> String {
        let (kind, body) = match self {
            Set::SourceTags => ("map", "type ipv4_addr : mark;"),
            Set::Allowed => ("set", "type ipv4_addr . inet_proto . inet_service . mark;"),
            Set::AllowedRanges => ("map", "type ipv4_addr . inet_proto . mark : verdict;"),
        };
        format!("add {kind} {FAMILY} {TABLE} {} {{ {body} }}", self.name())
    }
}

/// C2C logging of allowed new connections through NFLOG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct C2cLogging {
    pub enabled: bool,
    pub group: u16,
    pub udp_per_sec: u32,
}

/// The rules of the agent's chain, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Mark packets from local policy sources with their app's tag.
    MarkSources,
    /// Set [`ALLOWED_BIT`] on the first packet of a connection whose (daddr, proto, dport, mark)
    /// is in `allowed`. Later packets need no lookup: the networker's chain accepts
    /// RELATED,ESTABLISHED before it looks at the bit.
    MarkAllowed,
    /// Not allowed by a single port: jump to the chain of the (daddr, proto, mark)'s wide port
    /// ranges, if it has any.
    JumpToRanges,
    /// In a range chain: set the bit when the destination port is in `ranges`.
    MarkPortsIn(PortRanges),
    /// NFLOG allowed new TCP (and other non-UDP) connections.
    LogAllowed { group: u16 },
    /// NFLOG allowed UDP packets, rate limited.
    LogAllowedUdp { group: u16, per_sec: u32 },
}

pub const LOG_PREFIX: &str = "OK_C2C ";

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Allowed by a policy: the bit and nothing else in the high half (the networker's
        // ingress mark 0xffff0000 also has bit 24; router traffic is not c2c).
        let allowed = format!("meta mark & 0x{HIGH_MASK:08x} == 0x{ALLOWED_BIT:08x}");
        match self {
            Rule::MarkSources => write!(
                f,
                "meta mark set ip saddr map @{}",
                Set::SourceTags.name()
            ),
            Rule::MarkAllowed => write!(
                f,
                "ct state new ip daddr . meta l4proto . th dport . meta mark @{} meta mark set meta mark | 0x{ALLOWED_BIT:08x}",
                Set::Allowed.name()
            ),
            Rule::JumpToRanges => write!(
                f,
                "ct state new meta mark & 0x{ALLOWED_BIT:08x} == 0 ip daddr . meta l4proto . meta mark vmap @{}",
                Set::AllowedRanges.name()
            ),
            Rule::MarkPortsIn(ports) => {
                let list: Vec<String> = ports.ranges().iter().map(|(s, e)| format!("{s}-{e}")).collect();
                match list.as_slice() {
                    [one] => write!(f, "th dport {one}")?,
                    _ => write!(f, "th dport {{ {} }}", list.join(", "))?,
                }
                write!(f, " meta mark set meta mark | 0x{ALLOWED_BIT:08x}")
            }
            Rule::LogAllowed { group } => write!(
                f,
                "{allowed} meta l4proto != udp ct state new log prefix \"{LOG_PREFIX}\" group {group}"
            ),
            Rule::LogAllowedUdp { group, per_sec } => write!(
                f,
                "{allowed} meta l4proto udp limit rate {per_sec}/second burst {per_sec} packets log prefix \"{LOG_PREFIX}\" group {group}"
            ),
        }
    }
}

pub fn rules(log: &C2cLogging) -> Vec<Rule> {
    let mut r = vec![Rule::MarkSources, Rule::MarkAllowed, Rule::JumpToRanges];
    if log.enabled {
        r.push(Rule::LogAllowed { group: log.group });
        r.push(Rule::LogAllowedUdp {
            group: log.group,
            per_sec: log.udp_per_sec,
        });
    }
    r
}

/// One element of `allowed` in nft syntax.
struct AllowElement<'a>(&'a Allow);

impl fmt::Display for AllowElement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(
            f,
            "{} . {} . {} . 0x{:08x}",
            a.daddr, a.proto, a.port, a.mark
        )
    }
}

/// One element of `allowed_ranges`: with its verdict to add, without to delete.
struct RangeElement<'a>(&'a RangeKey, Option<&'a PortRanges>);

impl fmt::Display for RangeElement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.0;
        write!(f, "{} . {} . 0x{:08x}", k.daddr, k.proto, k.mark)?;
        match self.1 {
            Some(ports) => write!(f, " : jump {}", ports.chain_name()),
            None => Ok(()),
        }
    }
}

struct SourceElement(Ipv4Addr, Option<u32>);

impl fmt::Display for SourceElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(tag) => write!(f, "{} : 0x{tag:08x}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

const CHUNK: usize = 2000;

fn elements<I, T>(out: &mut String, verb: &str, set: Set, items: I)
where
    I: IntoIterator<Item = T>,
    T: fmt::Display,
{
    let items: Vec<T> = items.into_iter().collect();
    for chunk in items.chunks(CHUNK) {
        let _ = write!(out, "{verb} element {FAMILY} {TABLE} {} {{ ", set.name());
        for (i, e) in chunk.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{e}");
        }
        out.push_str(" }\n");
    }
}

fn chain_rules(out: &mut String, log: &C2cLogging) {
    for rule in rules(log) {
        let _ = writeln!(out, "add rule {FAMILY} {TABLE} {CHAIN} {rule}");
    }
}

/// The whole table from scratch: whatever `ip netman_vpa` held before (a previous run's, or an
/// older layout) is replaced in the same transaction, so there is no moment without rules.
pub fn render_full(plan: &Plan, log: &C2cLogging) -> String {
    let mut out = String::with_capacity(64 + plan.element_count() * 48);
    let _ = writeln!(out, "add table {FAMILY} {TABLE}");
    let _ = writeln!(out, "delete table {FAMILY} {TABLE}");
    let _ = writeln!(out, "add table {FAMILY} {TABLE}");
    for set in [Set::SourceTags, Set::Allowed, Set::AllowedRanges] {
        let _ = writeln!(out, "{}", set.declaration());
    }
    for ports in plan.range_chains() {
        add_range_chain(&mut out, ports);
    }
    let _ = writeln!(
        out,
        "add chain {FAMILY} {TABLE} {CHAIN} {{ type filter hook forward priority {PRIORITY}; policy accept; }}"
    );
    chain_rules(&mut out, log);
    let sources = plan.source_tags.iter();
    let sources = sources.map(|(ip, tag)| SourceElement(*ip, Some(*tag)));
    elements(&mut out, "add", Set::SourceTags, sources);
    elements(
        &mut out,
        "add",
        Set::Allowed,
        plan.allowed.iter().map(AllowElement),
    );
    let ranges = plan.ranges.iter().map(|(k, p)| RangeElement(k, Some(p)));
    elements(&mut out, "add", Set::AllowedRanges, ranges);
    out
}

fn add_range_chain(out: &mut String, ports: &PortRanges) {
    let name = ports.chain_name();
    let _ = writeln!(out, "add chain {FAMILY} {TABLE} {name}");
    let rule = Rule::MarkPortsIn(ports.clone());
    let _ = writeln!(out, "add rule {FAMILY} {TABLE} {name} {rule}");
}

/// Only the difference; `None` when there is nothing to do. New range chains come first,
/// then removals, so an element that changes (a range that grew) is deleted and re-added in the
/// same transaction; chains no element points at any more go last.
pub fn render_diff(diff: &Diff) -> Option<String> {
    if diff.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(diff.len() * 56);
    for ports in &diff.add_chains {
        add_range_chain(&mut out, ports);
    }
    let gone = diff.remove_sources.iter();
    elements(
        &mut out,
        "delete",
        Set::SourceTags,
        gone.map(|ip| SourceElement(*ip, None)),
    );
    let gone = diff.remove_allowed.iter().map(AllowElement);
    elements(&mut out, "delete", Set::Allowed, gone);
    let gone = diff.remove_ranges.iter().map(|k| RangeElement(k, None));
    elements(&mut out, "delete", Set::AllowedRanges, gone);
    let new = diff.add_sources.iter();
    let new = new.map(|(ip, tag)| SourceElement(*ip, Some(*tag)));
    elements(&mut out, "add", Set::SourceTags, new);
    elements(
        &mut out,
        "add",
        Set::Allowed,
        diff.add_allowed.iter().map(AllowElement),
    );
    let new = diff
        .add_ranges
        .iter()
        .map(|(k, p)| RangeElement(k, Some(p)));
    elements(&mut out, "add", Set::AllowedRanges, new);
    for ports in &diff.remove_chains {
        let name = ports.chain_name();
        let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {name}");
        let _ = writeln!(out, "delete chain {FAMILY} {TABLE} {name}");
    }
    Some(out)
}

/// Rewrites the chain's rules (c2c logging on or off); the sets stay as they are.
pub fn render_chain(log: &C2cLogging) -> String {
    let mut out = format!("flush chain {FAMILY} {TABLE} {CHAIN}\n");
    chain_rules(&mut out, log);
    out
}

/// A refused or failed transaction: nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `nft` could not be run or talked to.
    Exec(OsError),
    /// nftables rejected the script (`status`: the `nft` process's exit status).
    Rejected {
        status: Option<String>,
        message: String,
    },
    /// The script holds a NUL byte (libnftables takes a C string).
    NulInScript,
    /// libnftables cannot be used.
    Library(String),
    /// A `list` command failed (nothing is changed by one).
    Listing(String),
    /// An nfnetlink exchange failed (a refused batch changed nothing).
    Netlink(OsError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Exec(e) => write!(f, "{e}"),
            Error::Rejected {
                status: Some(status),
                message,
            } => write!(
                f,
                "nft transaction failed ({status}), nothing changed: {message}"
            ),
            Error::Rejected { message, .. } => {
                write!(f, "nft transaction failed, nothing changed: {message}")
            }
            Error::NulInScript => write!(f, "nft script contains a NUL byte"),
            Error::Library(m) => write!(f, "{m}"),
            Error::Listing(m) => write!(f, "nft listing failed: {m}"),
            Error::Netlink(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

/// Where plans go. The real one is [`Table`]; tests of the loop use a recording one.
pub trait Dataplane: Send + Sync {
    /// Replaces the whole table with `plan` (start-up and recovery).
    fn replace(&self, plan: &Plan, log: &C2cLogging) -> Result<(), Error>;
    /// Applies a difference to the installed table.
    fn update(&self, diff: &Diff) -> Result<(), Error>;
    /// Rewrites the chain for a logging change.
    fn set_logging(&self, log: &C2cLogging) -> Result<(), Error>;
}

/// Applies scripts with `nft -f -` in the namespace of the calling thread.
#[derive(Debug, Clone)]
pub struct Nft {
    pub path: String,
}

impl Nft {
    pub fn new(path: impl Into<String>) -> Nft {
        Nft { path: path.into() }
    }

    /// Runs one script as one transaction.
    pub fn run(&self, script: &str) -> Result<(), Error> {
        let exec = |what: String, e: std::io::Error| Error::Exec(OsError::io(what, &e));
        let mut child = Command::new(&self.path)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| exec(format!("running {} -f -", self.path), e))?;
        let write = child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes());
        let out = child
            .wait_with_output()
            .map_err(|e| exec(format!("waiting for {}", self.path), e))?;
        if !out.status.success() {
            return Err(Error::Rejected {
                status: Some(out.status.to_string()),
                message: nft_message(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        write.map_err(|e| exec("writing to nft".into(), e))
    }

    /// `nft -j [-t] <command>`: nftables' JSON answer.
    pub fn list_json(&self, command: &str, terse: bool) -> Result<String, Error> {
        let mut cmd = Command::new(&self.path);
        cmd.arg("-j");
        if terse {
            cmd.arg("-t");
        }
        let out = cmd
            .args(command.split_whitespace())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                Error::Exec(OsError::io(
                    format!("running {} -j {command}", self.path),
                    &e,
                ))
            })?;
        if !out.status.success() {
            return Err(Error::Listing(format!(
                "{} ({}): {}",
                command,
                out.status,
                nft_message(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// nft's error text, bounded (a rejected script of thousands of elements echoes them).
pub fn nft_message(text: &str) -> String {
    text.trim().chars().take(2000).collect()
}

/// Runs scripts one transaction at a time: in-process through libnftables, or by `nft -f -`.
pub trait Runner: Send + Sync {
    fn run(&self, script: &str) -> Result<(), Error>;

    /// nftables' JSON answer to one `list ...` command; `terse` leaves out the elements of sets
    /// and maps.
    fn list_json(&self, command: &str, _terse: bool) -> Result<String, Error> {
        Err(Error::Library(format!(
            "this runner cannot list ({command})"
        )))
    }

    /// Runs `exchange` on an nfnetlink socket of the runner's network namespace, for what
    /// libnftables does slowly (hundreds of thousands of set elements).
    fn with_netlink(&self, _exchange: &mut Exchange) -> Result<(), Error> {
        Err(Error::Library("this runner has no nfnetlink socket".into()))
    }
}

/// Requests and answers on one nfnetlink socket, numbered by its [`Seq`].
pub type Exchange<'a> = dyn FnMut(&mut Socket, &mut Seq) -> Result<(), OsError> + 'a;

impl Runner for Nft {
    fn run(&self, script: &str) -> Result<(), Error> {
        Nft::run(self, script)
    }

    fn list_json(&self, command: &str, terse: bool) -> Result<String, Error> {
        Nft::list_json(self, command, terse)
    }

    /// A socket of the calling thread's namespace, where `nft` runs too; handed off after
    /// (closing one that just committed would wait for the kernel, see [`Socket::hand_off`]).
    fn with_netlink(&self, exchange: &mut Exchange) -> Result<(), Error> {
        let mut socket = Socket::open().map_err(Error::Netlink)?;
        let done = exchange(&mut socket, &mut Seq::default()).map_err(Error::Netlink);
        socket.hand_off(std::time::Duration::from_secs(1));
        done
    }
}

impl Runner for super::libnft::LibNft {
    fn run(&self, script: &str) -> Result<(), Error> {
        super::libnft::LibNft::run(self, script)
    }

    fn list_json(&self, command: &str, terse: bool) -> Result<String, Error> {
        super::libnft::LibNft::list_json(self, command, terse)
    }

    fn with_netlink(&self, exchange: &mut Exchange) -> Result<(), Error> {
        super::libnft::LibNft::with_netlink(self, exchange)
    }
}

/// libnftables when it loads, else the `nft` executable at `nft_path`.
pub fn runner(nft_path: &str) -> Box<dyn Runner> {
    match super::libnft::LibNft::open() {
        Ok(lib) => Box::new(lib),
        Err(e) => {
            log::warn!("{e}; applying with {nft_path} -f - instead");
            Box::new(Nft::new(nft_path))
        }
    }
}

/// The agent's table through any [`Runner`].
pub struct Table {
    pub runner: Box<dyn Runner>,
}

impl Dataplane for Table {
    fn replace(&self, plan: &Plan, log: &C2cLogging) -> Result<(), Error> {
        self.runner.run(&render_full(plan, log))
    }

    fn update(&self, diff: &Diff) -> Result<(), Error> {
        match render_diff(diff) {
            Some(script) => self.runner.run(&script),
            None => Ok(()),
        }
    }

    fn set_logging(&self, log: &C2cLogging) -> Result<(), Error> {
        self.runner.run(&render_chain(log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::plan::Proto;
    use std::collections::{BTreeMap, BTreeSet};

    fn allow(ip: &str, proto: Proto, port: u16, mark: u32) -> Allow {
        Allow {
            daddr: ip.parse().unwrap(),
            proto,
            port,
            mark,
        }
    }

    fn key(ip: &str, proto: Proto, mark: u32) -> RangeKey {
        RangeKey {
            daddr: ip.parse().unwrap(),
            proto,
            mark,
        }
    }

    fn sample() -> Plan {
        Plan {
            source_tags: BTreeMap::from([("10.255.1.2".parse().unwrap(), 1)]),
            allowed: BTreeSet::from([allow("10.255.1.3", Proto::Tcp, 8080, 1)]),
            ranges: BTreeMap::from([
                (
                    key("10.255.1.3", Proto::Udp, 2),
                    PortRanges::new(vec![(5000, 5100)]).unwrap(),
                ),
                (
                    key("10.255.1.4", Proto::Tcp, 1),
                    PortRanges::new(vec![(5000, 5100), (6000, 6999)]).unwrap(),
                ),
            ]),
        }
    }

    const OFF: C2cLogging = C2cLogging {
        enabled: false,
        group: 2,
        udp_per_sec: 100,
    };

    #[test]
    fn full_script_replaces_the_table_in_one_go() {
        let script = render_full(&sample(), &OFF);
        assert_eq!(
            script,
            "add table ip netman_vpa\n\
             delete table ip netman_vpa\n\
             add table ip netman_vpa\n\
             add map ip netman_vpa source_tags { type ipv4_addr : mark; }\n\
             add set ip netman_vpa allowed { type ipv4_addr . inet_proto . inet_service . mark; }\n\
             add map ip netman_vpa allowed_ranges { type ipv4_addr . inet_proto . mark : verdict; }\n\
             add chain ip netman_vpa ports_5000_5100\n\
             add rule ip netman_vpa ports_5000_5100 th dport 5000-5100 meta mark set meta mark | 0x01000000\n\
             add chain ip netman_vpa ports_5000_5100_6000_6999\n\
             add rule ip netman_vpa ports_5000_5100_6000_6999 th dport { 5000-5100, 6000-6999 } meta mark set meta mark | 0x01000000\n\
             add chain ip netman_vpa forward { type filter hook forward priority -10; policy accept; }\n\
             add rule ip netman_vpa forward meta mark set ip saddr map @source_tags\n\
             add rule ip netman_vpa forward ct state new ip daddr . meta l4proto . th dport . meta mark @allowed meta mark set meta mark | 0x01000000\n\
             add rule ip netman_vpa forward ct state new meta mark & 0x01000000 == 0 ip daddr . meta l4proto . meta mark vmap @allowed_ranges\n\
             add element ip netman_vpa source_tags { 10.255.1.2 : 0x00000001 }\n\
             add element ip netman_vpa allowed { 10.255.1.3 . tcp . 8080 . 0x00000001 }\n\
             add element ip netman_vpa allowed_ranges { 10.255.1.3 . udp . 0x00000002 : jump ports_5000_5100, 10.255.1.4 . tcp . 0x00000001 : jump ports_5000_5100_6000_6999 }\n"
        );
    }

    #[test]
    fn diff_script_adds_chains_first_swaps_elements_and_drops_unused_chains_last() {
        let old = sample();
        assert_eq!(render_diff(&Diff::between(&old, &old)), None);
        let mut new = old.clone();
        new.source_tags.insert("10.255.1.2".parse().unwrap(), 7);
        new.ranges.insert(
            key("10.255.1.3", Proto::Udp, 2),
            PortRanges::new(vec![(5000, 5200)]).unwrap(),
        );
        assert_eq!(
            render_diff(&Diff::between(&old, &new)).unwrap(),
            "add chain ip netman_vpa ports_5000_5200\n\
             add rule ip netman_vpa ports_5000_5200 th dport 5000-5200 meta mark set meta mark | 0x01000000\n\
             delete element ip netman_vpa source_tags { 10.255.1.2 }\n\
             delete element ip netman_vpa allowed_ranges { 10.255.1.3 . udp . 0x00000002 }\n\
             add element ip netman_vpa source_tags { 10.255.1.2 : 0x00000007 }\n\
             add element ip netman_vpa allowed_ranges { 10.255.1.3 . udp . 0x00000002 : jump ports_5000_5200 }\n\
             flush chain ip netman_vpa ports_5000_5100\n\
             delete chain ip netman_vpa ports_5000_5100\n"
        );
        // A chain still used by another key stays.
        let mut shared = old.clone();
        shared.ranges.insert(
            key("10.255.1.5", Proto::Udp, 2),
            PortRanges::new(vec![(5000, 5100)]).unwrap(),
        );
        shared.ranges.remove(&key("10.255.1.3", Proto::Udp, 2));
        assert_eq!(
            render_diff(&Diff::between(&old, &shared)).unwrap(),
            "delete element ip netman_vpa allowed_ranges { 10.255.1.3 . udp . 0x00000002 }\n\
             add element ip netman_vpa allowed_ranges { 10.255.1.5 . udp . 0x00000002 : jump ports_5000_5100 }\n"
        );
    }

    #[test]
    fn logging_rules_use_nflog_and_rate_limit_udp() {
        let on = C2cLogging {
            enabled: true,
            ..OFF
        };
        let script = render_chain(&on);
        assert!(script.starts_with("flush chain ip netman_vpa forward\n"));
        assert!(script.contains(
            "meta mark & 0xffff0000 == 0x01000000 meta l4proto != udp ct state new log prefix \"OK_C2C \" group 2"
        ));
        assert!(script.contains("meta l4proto udp limit rate 100/second burst 100 packets log"));
        assert_eq!(render_chain(&OFF).lines().count(), 4);
    }

    #[test]
    fn large_element_lists_are_split_into_statements() {
        let mut plan = Plan::default();
        for i in 0..4500u32 {
            plan.allowed
                .insert(allow("10.255.1.3", Proto::Tcp, 1 + i as u16, 1));
        }
        let script = render_full(&plan, &OFF);
        assert_eq!(
            script
                .matches("add element ip netman_vpa allowed {")
                .count(),
            3
        );
    }
}
