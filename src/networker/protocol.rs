//! The garden <-> networker wire format (stdin/stdout JSON).

use super::Error;
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
    /// Requested mappings: host port 0 = allocate one, container port 0 = the host port.
    #[serde(default)]
    pub netin: Vec<PortMapping>,
}

/// One NetIn port mapping: TCP to the cell's address on `host_port` goes to the container's
/// `container_port`. As garden writes it in `up`'s `netin` and reads it from `net-in`:
/// `{"host_port", "container_port"}`; the other wire shapes are [`mapped_ports_property`]
/// (garden's `garden.network.mapped-ports`) and [`cni_port_mappings`] (CNI's `portMappings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
}

impl PortMapping {
    /// The mapping of a requested one once its host port is known (container port 0 = the same
    /// as the host port).
    pub fn resolved(requested: PortMapping, host_port: u16) -> PortMapping {
        PortMapping {
            host_port,
            container_port: match requested.container_port {
                0 => host_port,
                p => p,
            },
        }
    }
}

/// `garden.network.mapped-ports`: `[{"HostPort":61000,"ContainerPort":8080}]`.
pub fn mapped_ports_property(mappings: &[PortMapping]) -> String {
    struct Garden<'a>(&'a PortMapping);
    impl Serialize for Garden<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut m = s.serialize_struct("MappedPort", 2)?;
            m.serialize_field("HostPort", &self.0.host_port)?;
            m.serialize_field("ContainerPort", &self.0.container_port)?;
            m.end()
        }
    }
    let list: Vec<Garden> = mappings.iter().map(Garden).collect();
    serde_json::to_string(&list).expect("serialisable")
}

/// CNI's `portMappings` capability: `[{"hostPort":61000,"containerPort":8080,"protocol":"tcp"}]`
/// (for `#[serde(with)]`).
pub mod cni_port_mappings {
    use super::PortMapping;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Cni {
        host_port: u16,
        container_port: u16,
        protocol: String,
    }

    pub fn serialize<S: Serializer>(list: &[PortMapping], s: S) -> Result<S::Ok, S::Error> {
        let cni: Vec<Cni> = list
            .iter()
            .map(|m| Cni {
                host_port: m.host_port,
                container_port: m.container_port,
                protocol: "tcp".into(),
            })
            .collect();
        cni.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PortMapping>, D::Error> {
        let cni = Vec::<Cni>::deserialize(d)?;
        Ok(cni
            .into_iter()
            .map(|m| PortMapping {
                host_port: m.host_port,
                container_port: m.container_port,
            })
            .collect())
    }
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
pub fn parse_stdin<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::Input(format!("reading {what} input from stdin: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_port_mapping_in_every_wire_shape() {
        let up: UpInput = parse_stdin(
            "up",
            r#"{"Pid":1,"netin":[{"host_port":0,"container_port":8080},{"host_port":0,"container_port":0}]}"#,
        )
        .unwrap();
        let m: Vec<PortMapping> = up
            .netin
            .iter()
            .zip([61000, 61001])
            .map(|(r, h)| PortMapping::resolved(*r, h))
            .collect();
        assert_eq!(
            mapped_ports_property(&m),
            r#"[{"HostPort":61000,"ContainerPort":8080},{"HostPort":61001,"ContainerPort":61001}]"#
        );
        assert_eq!(
            serde_json::to_string(&m[0]).unwrap(),
            r#"{"host_port":61000,"container_port":8080}"#
        );
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Rc(#[serde(with = "cni_port_mappings")] Vec<PortMapping>);
        let text = serde_json::to_string(&Rc(m.clone())).unwrap();
        assert_eq!(
            text,
            r#"[{"hostPort":61000,"containerPort":8080,"protocol":"tcp"},{"hostPort":61001,"containerPort":61001,"protocol":"tcp"}]"#
        );
        assert_eq!(serde_json::from_str::<Rc>(&text).unwrap(), Rc(m));
        assert!(
            parse_stdin::<UpInput>("up", r#"{"Pid":1,"netin":[{"host_port":1,"x":2}]}"#).is_err()
        );
    }
}
