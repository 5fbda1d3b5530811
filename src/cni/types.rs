//! CNI wire types (spec 1.1.0 section "Result Types", "Error", "Network configuration").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A network configuration as a plugin receives it on stdin. Plugin-specific keys stay in
/// `extra`; a plugin decodes them again into its own type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A network configuration list (`.conflist`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetConfList {
    pub cni_version: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_check: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_gc: Option<bool>,
    pub plugins: Vec<Map<String, Value>>,
}

// Every result type keeps the keys it does not know in `extra`, so that a runtime passes any
// plugin's result on (as `prevResult`, to DEL) as the plugin wrote it.

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The container's netns path; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct IpConfig {
    /// 0.4.0 only: "4" or "6".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation: the IP and its prefix.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RouteEntry {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The 0.2.0 result's `ip4` (older plugins a runtime may chain).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct LegacyIp {
    /// CIDR notation.
    pub ip: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The result of ADD (and the `prevResult` of later plugins).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteEntry>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip4: Option<LegacyIp>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CniResult {
    /// The first IPv4 address (1.0: `ips[].address`; 0.2: `ip4.ip`) and the name of its
    /// interface when the result tells it.
    pub fn first_ipv4(&self) -> Option<(std::net::Ipv4Addr, Option<&str>)> {
        let host = |cidr: &str| cidr.split('/').next()?.parse().ok();
        for ip in &self.ips {
            if let Some(v4) = host(&ip.address) {
                let iface = ip
                    .interface
                    .and_then(|i| self.interfaces.get(i))
                    .map(|i| i.name.as_str());
                return Some((v4, iface));
            }
        }
        Some((host(&self.ip4.as_ref()?.ip)?, None))
    }

    /// Renders the result in the shape of `version`: 0.4.0 carries `"version": "4"` per IP.
    pub fn for_version(mut self, version: &str) -> CniResult {
        let old = super::Version::parse(version)
            .map(|v| v < super::Version(1, 0, 0))
            .unwrap_or(false);
        for ip in &mut self.ips {
            ip.version = if old {
                Some(if ip.address.contains(':') { "6" } else { "4" }.to_string())
            } else {
                None
            };
        }
        self.cni_version = version.to_string();
        self
    }
}

/// The error a plugin prints on stdout (exit status 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Error {
    #[serde(default)]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl Error {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Error {
        Error {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// The commands of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub path: Vec<String>,
}

impl Env {
    /// Reads and checks the environment: which variables each command needs is in the spec.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Env, Error> {
        let command_text = get("CNI_COMMAND").unwrap_or_default();
        let command = Command::parse(&command_text).ok_or_else(|| {
            Error::new(
                super::code::INVALID_ENV,
                format!("unknown CNI_COMMAND {command_text:?}"),
                "",
            )
        })?;
        let require = |key: &str, needed: bool| -> Result<String, Error> {
            match get(key).filter(|v| !v.is_empty()) {
                Some(v) => Ok(v),
                None if needed => Err(Error::new(
                    super::code::INVALID_ENV,
                    format!("required env variable {key} missing"),
                    "",
                )),
                None => Ok(String::new()),
            }
        };
        let with_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = require("CNI_CONTAINERID", with_container)?;
        let netns = require(
            "CNI_NETNS",
            matches!(command, Command::Add | Command::Check),
        )?;
        let ifname = require("CNI_IFNAME", with_container)?;
        let args = get("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(Error::new(
                    super::code::INVALID_ENV,
                    format!("invalid CNI_ARGS pair {p:?}"),
                    "",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let path = get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_parsing_checks_required_variables() {
        let e = Env::parse(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=a"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ]))
        .unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.args[1], ("K8S_POD_NAME".into(), "a".into()));
        assert_eq!(e.path.len(), 2);
        let err =
            Env::parse(env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")])).unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("CNI_NETNS"), "{err}");
        // DEL needs no netns; VERSION needs nothing.
        assert!(Env::parse(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0")
        ]))
        .is_ok());
        assert!(Env::parse(env(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert_eq!(
            Env::parse(env(&[("CNI_COMMAND", "NOPE")]))
                .unwrap_err()
                .code,
            4
        );
    }

    #[test]
    fn result_shapes_per_version() {
        let r = CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "ee:ee:0a:ff:01:02".into(),
                sandbox: "/run/netns/x".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "10.255.1.2/32".into(),
                gateway: Some("169.254.0.1".into()),
                interface: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        };
        let old = serde_json::to_value(r.clone().for_version("0.4.0")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        let new = serde_json::to_value(r.for_version("1.0.0")).unwrap();
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["cniVersion"], "1.0.0");
        let conf: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"n","type":"overlay","dataDir":"/x"}"#,
        )
        .unwrap();
        assert_eq!(conf.extra["dataDir"], "/x");
    }

    #[test]
    fn results_of_any_plugin_round_trip_and_give_their_first_ipv4() {
        let text = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","sandbox":"/x","pciID":"0000:01"}],"ips":[{"address":"fd00::5/64","interface":1},{"address":"10.1.0.5/24","gateway":"10.1.0.1","interface":1}],"routes":[{"dst":"0.0.0.0/0","mtu":1400}],"dns":{"nameservers":["10.1.0.1"],"x":1},"custom":{"a":[1,2]}}"#;
        let r: CniResult = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(
            r.first_ipv4(),
            Some(("10.1.0.5".parse().unwrap(), Some("eth0")))
        );
        let old: CniResult =
            serde_json::from_str(r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.6/24"}}"#).unwrap();
        assert_eq!(old.first_ipv4(), Some(("10.1.0.6".parse().unwrap(), None)));
        let v6: CniResult = serde_json::from_str(r#"{"ips":[{"address":"fd00::1/64"}]}"#).unwrap();
        assert_eq!(v6.first_ipv4(), None);
    }
}
