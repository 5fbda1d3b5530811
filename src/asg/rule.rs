//! One ASG rule as the Cloud Controller writes it (reference §6.4, next-wave §1.1):
//! `{"protocol":"tcp","destination":"10.0.0.0/24,10.1.0.1-10.1.0.9","ports":"80, 443",
//! "type":0,"code":0,"description":"","log":false}`, parsed into a [`Rule`] whose shape admits only
//! valid combinations (ports only on tcp/udp, ICMP type/code only on icmp).
//!
//! Decisions where the Cloud Controller is loose or silent:
//! - Lists are split on `,` and every item trimmed, so `"80, 443"` is two ports (the original
//!   enforced only 80, cf-networking issue 149). An empty item (`"80,,443"`, a trailing comma) is
//!   an error.
//! - Numbers are plain ASCII digits: `+80`, `0x50`, `80.0` are refused.
//! - ICMP `type`/`code` -1 mean any; 255 is read as any too, as the original's agent does.
//! - `type`/`code` on tcp/udp/all are ignored (the original serialises them as 0 on every rule).
//! - IPv4 only: the cell dataplane is IPv4; an IPv6 destination is refused by name.
//! - A CIDR with host bits set (`10.0.0.1/24`) means its network, as iptables reads it.
//! - Unknown fields are refused, as the Cloud Controller refuses them.

use serde_json::{Map, Value};
use std::fmt;
use std::net::Ipv4Addr;

/// The most rules one group may hold, and the longest list inside one rule: far above real use
/// (the field reports 13,500 groups of a few rules each), low enough that one request cannot make
/// the cells compile millions of set elements.
pub const MAX_RULES: usize = 1000;
pub const MAX_LIST_ITEMS: usize = 1000;
/// Longest `description`, in bytes.
pub const MAX_DESCRIPTION: usize = 4096;

/// An inclusive IPv4 range: one address, a CIDR, or `A-B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

/// An inclusive port range, 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// An ICMP type or code: any, or exactly one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IcmpSelector {
    Any,
    Exactly(u8),
}

/// What a rule matches besides its destinations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Traffic {
    Tcp(Vec<PortRange>),
    Udp(Vec<PortRange>),
    Icmp {
        icmp_type: IcmpSelector,
        code: IcmpSelector,
    },
    All,
}

impl Traffic {
    /// The protocol's name on the wire.
    pub fn protocol(&self) -> &'static str {
        match self {
            Traffic::Tcp(_) => "tcp",
            Traffic::Udp(_) => "udp",
            Traffic::Icmp { .. } => "icmp",
            Traffic::All => "all",
        }
    }
}

/// One allow rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub traffic: Traffic,
    pub destinations: Vec<Destination>,
    pub log: bool,
    pub description: String,
}

/// The first packet of a new connection, as far as a rule looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Tcp(u16),
    Udp(u16),
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    /// Any other IP protocol (by number).
    Other(u8),
}

impl Rule {
    /// Whether this rule allows a new connection to `dst` whose first packet is `probe`.
    /// ICMP type "any" matches every type and code (iptables' `--icmp-type any`).
    pub fn allows(&self, dst: Ipv4Addr, probe: Probe) -> bool {
        let in_ports =
            |ports: &[PortRange], p: u16| ports.iter().any(|r| r.start <= p && p <= r.end);
        self.destinations
            .iter()
            .any(|d| d.start <= dst && dst <= d.end)
            && match (&self.traffic, probe) {
                (Traffic::All, _) => true,
                (Traffic::Tcp(ports), Probe::Tcp(p)) | (Traffic::Udp(ports), Probe::Udp(p)) => {
                    in_ports(ports, p)
                }
                (
                    Traffic::Icmp { icmp_type, code },
                    Probe::Icmp {
                        icmp_type: t,
                        code: c,
                    },
                ) => match icmp_type {
                    IcmpSelector::Any => true,
                    IcmpSelector::Exactly(x) => {
                        *x == t && (*code == IcmpSelector::Any || *code == IcmpSelector::Exactly(c))
                    }
                },
                _ => false,
            }
    }
}

/// A rule refused: which rule (0-based index in the array), which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// `None`: the document itself (not JSON, not an array, too many rules).
    pub index: Option<usize>,
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "rules[{i}].{}: {}", self.field, self.message),
            None => write!(f, "rules: {}", self.message),
        }
    }
}

impl std::error::Error for RuleError {}

const FIELDS: [&str; 7] = [
    "protocol",
    "destination",
    "ports",
    "type",
    "code",
    "description",
    "log",
];

/// Parses a rule array (`[...]`) as text; the first bad rule is the error.
pub fn parse_rules(json: &str) -> Result<Vec<Rule>, RuleError> {
    let (rules, errors) = parse_rules_lenient(json)?;
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(rules),
    }
}

/// Parses a rule array, keeping the good rules and reporting each bad one (a cell enforces what
/// it can of a group stored by an older or looser writer). `Err` only when the document itself is
/// not a rule array.
pub fn parse_rules_lenient(json: &str) -> Result<(Vec<Rule>, Vec<RuleError>), RuleError> {
    let document = |message: String| RuleError {
        index: None,
        field: "rules",
        message,
    };
    let value: Value =
        serde_json::from_str(json).map_err(|e| document(format!("not valid JSON: {e}")))?;
    parse_rule_values(&value).map_err(|m| document(m.to_string()))
}

/// Parses an already decoded rule array (the admin API's body holds it as JSON, not as text).
pub fn parse_rule_values(value: &Value) -> Result<(Vec<Rule>, Vec<RuleError>), &'static str> {
    let items = value
        .as_array()
        .ok_or("must be a JSON array of rule objects")?;
    if items.len() > MAX_RULES {
        return Err("too many rules in one group (at most 1000)");
    }
    let mut rules = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse_rule(item) {
            Ok(r) => rules.push(r),
            Err((field, message)) => errors.push(RuleError {
                index: Some(i),
                field,
                message,
            }),
        }
    }
    Ok((rules, errors))
}

type FieldError = (&'static str, String);

fn parse_rule(value: &Value) -> Result<Rule, FieldError> {
    let obj = value
        .as_object()
        .ok_or(("rule", "must be a JSON object".to_string()))?;
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err((
            "rule",
            format!("unknown field {unknown:?} (known: {})", FIELDS.join(", ")),
        ));
    }
    let protocol = string_field(obj, "protocol")?.ok_or(("protocol", "is required".into()))?;
    let destination =
        string_field(obj, "destination")?.ok_or(("destination", "is required".into()))?;
    let destinations = parse_destinations(destination).map_err(|m| ("destination", m))?;
    let ports = string_field(obj, "ports")?;
    let log = match obj.get("log") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(("log", "must be true or false".into())),
    };
    let description = string_field(obj, "description")?.unwrap_or("").to_string();
    if description.len() > MAX_DESCRIPTION {
        return Err((
            "description",
            format!("longer than {MAX_DESCRIPTION} bytes"),
        ));
    }
    let no_ports = |p: &str| -> Result<(), FieldError> {
        match ports {
            Some(s) if !s.trim().is_empty() => {
                Err(("ports", format!("not allowed with protocol {p}")))
            }
            _ => Ok(()),
        }
    };
    let traffic = match protocol {
        "tcp" | "udp" => {
            let ports = ports.ok_or(("ports", format!("is required with protocol {protocol}")))?;
            let ports = parse_ports(ports).map_err(|m| ("ports", m))?;
            if protocol == "tcp" {
                Traffic::Tcp(ports)
            } else {
                Traffic::Udp(ports)
            }
        }
        "icmp" => {
            no_ports("icmp")?;
            Traffic::Icmp {
                icmp_type: icmp_field(obj, "type")?,
                code: icmp_field(obj, "code")?,
            }
        }
        "all" => {
            no_ports("all")?;
            Traffic::All
        }
        other => {
            return Err((
                "protocol",
                format!("{other:?} is not one of tcp, udp, icmp, all"),
            ))
        }
    };
    Ok(Rule {
        traffic,
        destinations,
        log,
        description,
    })
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err((field, "must be a string".into())),
    }
}

/// ICMP `type` or `code`: required with icmp, an integer -1..=255 (-1 and 255: any).
fn icmp_field(obj: &Map<String, Value>, field: &'static str) -> Result<IcmpSelector, FieldError> {
    let value = obj.get(field).filter(|v| !v.is_null()).ok_or((
        field,
        "is required with protocol icmp (-1 for any)".to_string(),
    ))?;
    match value.as_i64() {
        Some(-1) | Some(255) => Ok(IcmpSelector::Any),
        Some(n @ 0..=254) => Ok(IcmpSelector::Exactly(n as u8)),
        _ => Err((field, format!("{value} is not an integer from -1 to 255"))),
    }
}

/// Items of a comma list, trimmed; an empty item or too many is an error.
fn items(list: &str) -> Result<Vec<&str>, String> {
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.len() > MAX_LIST_ITEMS {
        return Err(format!("more than {MAX_LIST_ITEMS} items"));
    }
    if items.iter().any(|i| i.is_empty()) {
        return Err(format!("{list:?} has an empty item"));
    }
    Ok(items)
}

/// `10.0.0.1`, `10.0.0.0/24`, `10.0.0.1-10.0.0.9`, or a comma list of these.
pub fn parse_destinations(list: &str) -> Result<Vec<Destination>, String> {
    items(list)?.into_iter().map(parse_destination).collect()
}

fn parse_destination(item: &str) -> Result<Destination, String> {
    if let Some((start, end)) = item.split_once('-') {
        let (start, end) = (address(start.trim())?, address(end.trim())?);
        if start > end {
            return Err(format!("{item:?}: the range starts after it ends"));
        }
        return Ok(Destination { start, end });
    }
    if let Some((addr, prefix)) = item.split_once('/') {
        let addr = address(addr)?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{item:?}: the prefix length must be 0 to 32"));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{item:?}: bad prefix"))?;
        let net = ipnet::Ipv4Net::new(addr, prefix)
            .map_err(|_| format!("{item:?}: the prefix length must be 0 to 32"))?;
        return Ok(Destination {
            start: net.network(),
            end: net.broadcast(),
        });
    }
    let addr = address(item)?;
    Ok(Destination {
        start: addr,
        end: addr,
    })
}

fn address(text: &str) -> Result<Ipv4Addr, String> {
    text.parse::<Ipv4Addr>().map_err(|_| {
        if text.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("{text:?} is IPv6; only IPv4 destinations are supported")
        } else {
            format!("{text:?} is not an IPv4 address, CIDR or A-B range")
        }
    })
}

/// `80`, `8080-8090`, or a comma list of these (`"80, 443"` is two ports).
pub fn parse_ports(list: &str) -> Result<Vec<PortRange>, String> {
    items(list)?
        .into_iter()
        .map(|item| {
            let (start, end) = match item.split_once('-') {
                Some((s, e)) => (port(s.trim(), item)?, port(e.trim(), item)?),
                None => {
                    let p = port(item, item)?;
                    (p, p)
                }
            };
            if start > end {
                return Err(format!("{item:?}: the range starts after it ends"));
            }
            Ok(PortRange { start, end })
        })
        .collect()
}

fn port(text: &str, item: &str) -> Result<u16, String> {
    let bad = || format!("{item:?}: ports are whole numbers from 1 to 65535");
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> Result<Rule, RuleError> {
        parse_rules(&format!("[{json}]")).map(|mut r| r.remove(0))
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ports_with_spaces_are_each_a_port() {
        let r = one(r#"{"protocol":"tcp","destination":"10.0.0.1","ports":"80, 443"}"#).unwrap();
        assert_eq!(
            r.traffic,
            Traffic::Tcp(vec![
                PortRange { start: 80, end: 80 },
                PortRange {
                    start: 443,
                    end: 443
                }
            ])
        );
        let r = one(r#"{"protocol":"udp","destination":"10.0.0.1","ports":" 1000 - 2000 ,53"}"#)
            .unwrap();
        assert_eq!(
            r.traffic,
            Traffic::Udp(vec![
                PortRange {
                    start: 1000,
                    end: 2000
                },
                PortRange { start: 53, end: 53 }
            ])
        );
    }

    #[test]
    fn destinations_take_every_form() {
        let r =
            one(r#"{"protocol":"all","destination":"10.0.0.1, 10.1.0.7/24,10.2.0.1-10.2.0.9"}"#)
                .unwrap();
        assert_eq!(
            r.destinations,
            vec![
                Destination {
                    start: ip("10.0.0.1"),
                    end: ip("10.0.0.1")
                },
                Destination {
                    start: ip("10.1.0.0"),
                    end: ip("10.1.0.255")
                },
                Destination {
                    start: ip("10.2.0.1"),
                    end: ip("10.2.0.9")
                },
            ]
        );
        let all = one(r#"{"protocol":"all","destination":"0.0.0.0/0"}"#).unwrap();
        assert_eq!(all.destinations[0].end, ip("255.255.255.255"));
    }

    #[test]
    fn icmp_minus_one_and_255_are_any() {
        let r =
            one(r#"{"protocol":"icmp","destination":"0.0.0.0/0","type":-1,"code":-1}"#).unwrap();
        assert_eq!(
            r.traffic,
            Traffic::Icmp {
                icmp_type: IcmpSelector::Any,
                code: IcmpSelector::Any
            }
        );
        let r =
            one(r#"{"protocol":"icmp","destination":"0.0.0.0/0","type":8,"code":255}"#).unwrap();
        assert_eq!(
            r.traffic,
            Traffic::Icmp {
                icmp_type: IcmpSelector::Exactly(8),
                code: IcmpSelector::Any
            }
        );
    }

    #[test]
    fn the_originals_serialised_rule_is_read() {
        let r = one(
            r#"{"protocol":"tcp","destination":"0.0.0.0/0","ports":"53","type":0,"code":0,"description":"dns","log":true}"#,
        )
        .unwrap();
        assert!(r.log);
        assert_eq!(r.description, "dns");
    }

    #[test]
    fn errors_name_the_rule_and_the_field() {
        let cases = [
            (r#"{"protocol":"sctp","destination":"1.2.3.4"}"#, "protocol"),
            (r#"{"destination":"1.2.3.4"}"#, "protocol"),
            (r#"{"protocol":"tcp","ports":"80"}"#, "destination"),
            (r#"{"protocol":"tcp","destination":"1.2.3.4"}"#, "ports"),
            (
                r#"{"protocol":"tcp","destination":"1.2.3.4","ports":"0"}"#,
                "ports",
            ),
            (
                r#"{"protocol":"tcp","destination":"1.2.3.4","ports":"65536"}"#,
                "ports",
            ),
            (
                r#"{"protocol":"tcp","destination":"1.2.3.4","ports":"+80"}"#,
                "ports",
            ),
            (
                r#"{"protocol":"tcp","destination":"1.2.3.4","ports":"90-80"}"#,
                "ports",
            ),
            (
                r#"{"protocol":"tcp","destination":"1.2.3.4","ports":"80,"}"#,
                "ports",
            ),
            (
                r#"{"protocol":"tcp","destination":"1.2.3.4","ports":80}"#,
                "ports",
            ),
            (
                r#"{"protocol":"all","destination":"1.2.3.4","ports":"80"}"#,
                "ports",
            ),
            (
                r#"{"protocol":"icmp","destination":"1.2.3.4","code":0}"#,
                "type",
            ),
            (
                r#"{"protocol":"icmp","destination":"1.2.3.4","type":0}"#,
                "code",
            ),
            (
                r#"{"protocol":"icmp","destination":"1.2.3.4","type":256,"code":0}"#,
                "type",
            ),
            (
                r#"{"protocol":"icmp","destination":"1.2.3.4","type":"8","code":0}"#,
                "type",
            ),
            (
                r#"{"protocol":"all","destination":"1.2.3.4/33"}"#,
                "destination",
            ),
            (
                r#"{"protocol":"all","destination":"1.2.3.9-1.2.3.1"}"#,
                "destination",
            ),
            (r#"{"protocol":"all","destination":"::1"}"#, "destination"),
            (
                r#"{"protocol":"all","destination":"example.com"}"#,
                "destination",
            ),
            (
                r#"{"protocol":"all","destination":"1.2.3.4","log":"yes"}"#,
                "log",
            ),
            (
                r#"{"protocol":"all","destination":"1.2.3.4","extra":1}"#,
                "rule",
            ),
            (r#""tcp""#, "rule"),
        ];
        for (rule, field) in cases {
            let json = format!(r#"[{{"protocol":"all","destination":"1.1.1.1"}},{rule}]"#);
            let err = parse_rules(&json).expect_err(rule);
            assert_eq!((err.index, err.field), (Some(1), field), "{rule}: {err}");
            assert!(
                err.to_string().starts_with(&format!("rules[1].{field}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_document_that_is_not_a_rule_array_is_refused() {
        for doc in ["", "{}", "null", "[", "\"[]\""] {
            let err = parse_rules(doc).expect_err(doc);
            assert_eq!(err.index, None, "{doc}");
        }
        let many = format!(
            "[{}]",
            vec![r#"{"protocol":"all","destination":"1.1.1.1"}"#; 1001].join(",")
        );
        assert_eq!(parse_rules(&many).unwrap_err().index, None);
    }

    #[test]
    fn lenient_parsing_keeps_the_good_rules() {
        let (rules, errors) = parse_rules_lenient(
            r#"[{"protocol":"all","destination":"1.1.1.1"},{"protocol":"x"},{"protocol":"udp","destination":"8.8.8.8","ports":"53"}]"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].index, Some(1));
    }
}
