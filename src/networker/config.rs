//! `adapter.json`: the networker's configuration (the original's keys plus netman's own).

use super::ports::{ExplicitPorts, PortAllocator};
use crate::config::{require_nonempty, Validate};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub cni_plugin_dir: String,
    #[serde(default)]
    pub cni_config_dir: String,
    #[serde(default)]
    pub bind_mount_dir: String,
    /// Port allocator state (`{"acquired_ports":{...}}`).
    #[serde(default)]
    pub state_file: String,
    /// Cached CNI ADD results and runtime config per handle (replayed on DEL).
    #[serde(default = "default_cni_cache_dir")]
    pub cni_cache_dir: String,
    #[serde(default = "default_start_port")]
    pub start_port: u16,
    #[serde(default = "default_total_ports")]
    pub total_ports: u16,
    /// The host ports a container may ask for explicitly (NetIn): this range (default: the pool
    /// `start_port` .. `start_port + total_ports - 1`) ...
    #[serde(default)]
    pub netin_host_port_range: Option<PortRangeConfig>,
    /// ... and these ports.
    #[serde(default)]
    pub netin_host_port_allow_list: Vec<u16>,
    #[serde(default = "default_log_prefix")]
    pub log_prefix: String,
    #[serde(default)]
    pub search_domains: Vec<String>,
    /// DNS servers returned to garden (and allowed from the container to the cell); empty = those
    /// of the CNI result.
    #[serde(default)]
    pub dns_servers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub iptables_lock_file: String,
    /// The container network; egress to it is c2c (policy), egress elsewhere is NetOut (ASGs)
    /// and masqueraded.
    pub overlay_network: Option<Ipv4Net>,
    /// The cell's address: destination of NetIn port mappings.
    pub instance_address: Option<Ipv4Addr>,
    /// Container metadata store (the policy agent reads it).
    #[serde(default)]
    pub datastore: String,
    /// e.g. `http://127.0.0.1:8722/force-policy-poll-cycle`; none = no agent to notify.
    #[serde(default)]
    pub policy_agent_force_poll_url: Option<String>,
    #[serde(default = "default_force_poll_timeout")]
    pub policy_agent_timeout_seconds: u64,
    /// The agent's force port, e.g. `http://127.0.0.1:8722`, when it may own egress (dynamic
    /// ASGs): `up` asks `/force-asgs-for-container` (200: the agent enforces this container's
    /// ASGs and no NetOut chain is made; 405: the static `netout_rules` path; anything else fails
    /// the `up`), `down` calls `/force-orphaned-asgs-cleanup`. None: always the static path.
    #[serde(default)]
    pub policy_agent_asg_url: Option<String>,
    #[serde(default)]
    pub deny_networks: DenyNetworks,
    /// The overlay's VXLAN device: only tagged traffic may leave a container through it.
    #[serde(default = "default_vtep_name")]
    pub vtep_name: String,
    /// Mark set on NetIn traffic (hex, like silk's `ingress_tag`).
    #[serde(default = "default_ingress_tag")]
    pub ingress_tag: String,
    #[serde(default)]
    pub iptables_asg_logging: bool,
    #[serde(default)]
    pub iptables_c2c_logging: bool,
    #[serde(default = "default_denied_logs")]
    pub iptables_denied_logs_per_sec: u32,
    #[serde(default = "default_udp_logs")]
    pub iptables_accepted_udp_logs_per_sec: u32,
    /// NFLOG group of all log rules (LOG is silent inside namespaces).
    #[serde(default = "default_nflog_group")]
    pub nflog_group: u16,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default = "default_log_format")]
    pub log_format: crate::logging::LogFormat,
}

/// An inclusive port range: `{"start": 40000, "end": 40999}`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PortRangeConfig {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyNetworks {
    #[serde(default)]
    pub always: Vec<Ipv4Net>,
    #[serde(default)]
    pub running: Vec<Ipv4Net>,
    #[serde(default)]
    pub staging: Vec<Ipv4Net>,
}

fn default_vtep_name() -> String {
    crate::cell::DEFAULT_VTEP.into()
}
fn default_cni_cache_dir() -> String {
    "/var/vcap/data/garden-cni/cni-cache".into()
}
fn default_start_port() -> u16 {
    61000
}
fn default_total_ports() -> u16 {
    5000
}
fn default_log_prefix() -> String {
    "cfnetworking".into()
}
fn default_force_poll_timeout() -> u64 {
    5
}
fn default_ingress_tag() -> String {
    format!("{:08x}", crate::cell::marks::DEFAULT_INGRESS_MARK)
}
fn default_denied_logs() -> u32 {
    1
}
fn default_udp_logs() -> u32 {
    100
}
fn default_nflog_group() -> u16 {
    1
}
fn default_log_level() -> String {
    "warn".into()
}
fn default_log_format() -> crate::logging::LogFormat {
    crate::logging::LogFormat::Text
}

impl Config {
    pub fn overlay(&self) -> Ipv4Net {
        self.overlay_network.expect("validated")
    }
    pub fn instance(&self) -> Ipv4Addr {
        self.instance_address.expect("validated")
    }
    /// The host ports a container may ask for explicitly.
    pub fn explicit_ports(&self) -> ExplicitPorts {
        let range = match self.netin_host_port_range {
            Some(r) => (r.start, r.end),
            None => (
                self.start_port,
                PortAllocator::pool_last(self.start_port, self.total_ports),
            ),
        };
        ExplicitPorts {
            range,
            allow: self.netin_host_port_allow_list.iter().copied().collect(),
        }
    }
    pub fn ingress_mark(&self) -> u32 {
        u32::from_str_radix(self.ingress_tag.trim_start_matches("0x"), 16).expect("validated")
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), String> {
        crate::iptables::types::InterfaceName::new(&self.vtep_name)
            .map_err(|e| format!("invalid 'vtep_name': {e}"))?;
        for (key, value) in [
            ("cni_plugin_dir", &self.cni_plugin_dir),
            ("cni_config_dir", &self.cni_config_dir),
            ("bind_mount_dir", &self.bind_mount_dir),
            ("state_file", &self.state_file),
            ("cni_cache_dir", &self.cni_cache_dir),
            ("iptables_lock_file", &self.iptables_lock_file),
            ("datastore", &self.datastore),
            ("log_prefix", &self.log_prefix),
        ] {
            require_nonempty(key, value)?;
        }
        if self.overlay_network.is_none() {
            return Err("missing required config 'overlay_network'".into());
        }
        if self.instance_address.is_none() {
            return Err("missing required config 'instance_address'".into());
        }
        if self.start_port == 0 {
            return Err("invalid 'start_port': must be in 1-65535".into());
        }
        if self.total_ports == 0 {
            return Err("invalid 'total_ports': must be greater than 0".into());
        }
        // The original's defaults (61000 + 5000) reach past 65535: the pool simply ends there.
        if let Some(r) = self.netin_host_port_range {
            if r.start == 0 || r.start > r.end {
                return Err(format!(
                    "invalid 'netin_host_port_range': {}-{} must be a range within 1-65535",
                    r.start, r.end
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for &p in &self.netin_host_port_allow_list {
            if p == 0 || !seen.insert(p) {
                return Err(format!(
                    "invalid 'netin_host_port_allow_list': port {p} is 0 or listed twice"
                ));
            }
        }
        match u32::from_str_radix(self.ingress_tag.trim_start_matches("0x"), 16) {
            Ok(v) if v != 0 => {}
            _ => {
                return Err(format!(
                    "invalid 'ingress_tag': {:?} is not a non-zero hex mark",
                    self.ingress_tag
                ))
            }
        }
        if self.iptables_denied_logs_per_sec == 0 {
            return Err("invalid 'iptables_denied_logs_per_sec': must be greater than 0".into());
        }
        if self.iptables_accepted_udp_logs_per_sec == 0 {
            return Err(
                "invalid 'iptables_accepted_udp_logs_per_sec': must be greater than 0".into(),
            );
        }
        if let Some(url) = &self.policy_agent_force_poll_url {
            if !url.starts_with("http://") {
                return Err(format!(
                    "invalid 'policy_agent_force_poll_url': {url:?} must be an http:// URL"
                ));
            }
        }
        if let Some(url) = &self.policy_agent_asg_url {
            if !url.starts_with("http://") {
                return Err(format!(
                    "invalid 'policy_agent_asg_url': {url:?} must be an http:// URL"
                ));
            }
        }
        if self.policy_agent_timeout_seconds == 0 {
            return Err("invalid 'policy_agent_timeout_seconds': must be greater than 0".into());
        }
        crate::logging::parse_level(&self.log_level)
            .map_err(|e| format!("invalid 'log_level': {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "cni_plugin_dir": "/p", "cni_config_dir": "/c", "bind_mount_dir": "/b",
            "state_file": "/s", "iptables_lock_file": "/l", "datastore": "/d",
            "overlay_network": "10.255.0.0/16", "instance_address": "192.0.2.1"
        })
    }

    fn check(v: serde_json::Value) -> Result<Config, String> {
        let c: Config = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let c = check(base()).unwrap();
        assert_eq!((c.start_port, c.total_ports), (61000, 5000));
        assert_eq!(c.ingress_mark(), 0xffff0000);
        for key in [
            "cni_plugin_dir",
            "datastore",
            "overlay_network",
            "instance_address",
        ] {
            let mut v = base();
            v.as_object_mut().unwrap().remove(key);
            let e = check(v).unwrap_err();
            assert!(e.contains(&format!("'{key}'")), "{e}");
        }
        let mut v = base();
        v["bogus_key"] = 1.into();
        assert!(check(v).unwrap_err().contains("bogus_key"));
        let mut v = base();
        v["total_ports"] = 0.into();
        assert!(check(v).unwrap_err().contains("'total_ports'"));
        let mut v = base();
        v["ingress_tag"] = "zz".into();
        assert!(check(v).unwrap_err().contains("'ingress_tag'"));
    }
}
