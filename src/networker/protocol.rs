//! The garden <-> networker wire format (stdin/stdout JSON).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// `up` stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpInput {
    #[serde(rename = "Pid")]
    pub pid: u32,
    #[serde(rename = "Properties", default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub netout_rules: Vec<NetOutRule>,
    #[serde(default)]
    pub netin: Vec<NetIn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetIn {
    pub host_port: u16,
    pub container_port: u16,
}

/// garden's NetOutRule (numeric protocol: 0 all, 1 tcp, 2 udp, 3 icmp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetOutRule {
    #[serde(default)]
    pub protocol: u8,
    #[serde(default)]
    pub networks: Vec<IpRangeJson>,
    #[serde(default)]
    pub ports: Vec<PortRangeJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmps: Option<IcmpJson>,
    #[serde(default)]
    pub log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRangeJson {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRangeJson {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpJson {
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

/// `up` stdout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpOutput {
    pub properties: BTreeMap<String, String>,
    pub dns_servers: Vec<String>,
    pub search_domains: Vec<String>,
}

/// One mapped port as garden reads it from `garden.network.mapped-ports`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct MappedPort {
    #[serde(rename = "HostPort")]
    pub host_port: u16,
    #[serde(rename = "ContainerPort")]
    pub container_port: u16,
}

/// Netman-era `net-in` stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetInInput {
    #[serde(rename = "HostIP", default)]
    pub host_ip: Option<String>,
    #[serde(rename = "HostPort")]
    pub host_port: u16,
    #[serde(rename = "ContainerIP", default)]
    pub container_ip: Option<String>,
    #[serde(rename = "ContainerPort")]
    pub container_port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetInOutput {
    pub host_port: u16,
    pub container_port: u16,
}

/// Netman-era `net-out` stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetOutInput {
    #[serde(default)]
    pub container_ip: Option<Ipv4Addr>,
    pub netout_rule: NetOutRule,
}

/// Netman-era `bulk-net-out` stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkNetOutInput {
    #[serde(default)]
    pub container_ip: Option<Ipv4Addr>,
    pub netout_rules: Vec<NetOutRule>,
}

/// `reconcile` stdin (optional): the handles garden still has. Without it, a handle is stale
/// when its bind-mounted network namespace is gone.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReconcileInput {
    pub handles: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ReconcileOutput {
    pub removed: Vec<String>,
}

/// Parses stdin JSON with a clear error.
pub fn parse_stdin<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("reading {what} input from stdin: {e}"))
}
