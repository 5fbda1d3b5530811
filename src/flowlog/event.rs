//! One flow log line: what happened to a new connection, between which apps, and the rule that
//! decided it.

use serde::Serialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    Denied,
    /// Audit mode: would have been denied, passed.
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Container to container, seen on the destination's cell.
    C2cIngress,
    /// Container to container, refused on the source's cell (the source app has no tag).
    C2cEgress,
    /// A container to a destination outside the overlay.
    Egress,
}

/// The rule that decided a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    /// A c2c policy (the first of the fetched policies that matches).
    Policy {
        source: String,
        destination: String,
        protocol: String,
        ports: PortRange,
    },
    /// A static NetOut rule of the container (index into garden's `netout_rules`).
    Netout { index: usize },
    /// A rule of a security group (dynamic ASGs): `index` into the group's rule array.
    SecurityGroup {
        guid: String,
        name: String,
        index: usize,
        protocol: String,
        description: String,
    },
    /// A deny network of the container's workload.
    DenyNetwork,
    /// Refused by the ASG table: the source address is no container the agent knows.
    UnknownSource,
    /// Nothing allowed it.
    DefaultDeny,
    /// Allowed, but the rule is no longer known here (policies or rules changed since).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// Who is behind an address: the app and space GUIDs when known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub ip: Option<Ipv4Addr>,
    pub port: Option<u16>,
    pub app: Option<String>,
    pub space: Option<String>,
    /// The container handle, for a container of this cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// The source app's tag as carried by the packet mark (c2c only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowEvent {
    pub time: String,
    pub cell: String,
    pub verdict: Verdict,
    pub direction: Direction,
    pub protocol: String,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub rule: Rule,
}

/// IANA protocol numbers as the policy API names them.
pub fn protocol_name(n: u8) -> String {
    match n {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}
