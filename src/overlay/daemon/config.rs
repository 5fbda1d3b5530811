//! `overlay-daemon` configuration: keys, defaults and checks.

use super::vtep::VtepConfig;
use crate::config::{self, loopback, u16_default, u32_default, u64_default, u8_default, Validate};
use crate::overlay::{parse_network, DEFAULT_NETWORK};
use serde::Deserialize;

use crate::overlay::defaults::{
    DAEMON_PORT as DEFAULT_LISTEN_PORT, DATA_DIR as DEFAULT_PLUGIN_DATA_DIR,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub underlay_ip: String,
    /// Parent device of the VTEP; by default the interface holding `underlay_ip`.
    #[serde(default)]
    pub underlay_interface: Option<String>,
    #[serde(default = "default_vtep_name")]
    pub vtep_name: String,
    #[serde(default = "u32_default::<1>")]
    pub vni: u32,
    #[serde(default = "u16_default::<4789>")]
    pub vtep_port: u16,
    #[serde(default = "default_network")]
    pub overlay_network: String,
    #[serde(default = "u8_default::<24>")]
    pub subnet_prefix_length: u8,
    pub controller_url: String,
    pub ca_cert_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    #[serde(default = "u64_default::<5>")]
    pub client_timeout_seconds: u64,
    #[serde(default = "u64_default::<30>")]
    pub poll_interval_seconds: u64,
    /// One week.
    #[serde(default = "u64_default::<{ 168 * 3600 }>")]
    pub partition_tolerance_seconds: u64,
    #[serde(default = "loopback")]
    pub listen_host: String,
    #[serde(default = "u16_default::<DEFAULT_LISTEN_PORT>")]
    pub listen_port: u16,
    /// On 127.0.0.1.
    #[serde(default = "u16_default::<22233>")]
    pub debug_server_port: u16,
    /// The overlay CNI plugin's `dataDir`: allocations there mean containers exist.
    #[serde(default = "default_data_dir")]
    pub plugin_data_dir: String,
    #[serde(default)]
    pub single_ip_only: bool,
}

fn default_vtep_name() -> String {
    crate::cell::DEFAULT_VTEP.into()
}
fn default_network() -> String {
    DEFAULT_NETWORK.into()
}
fn default_data_dir() -> String {
    DEFAULT_PLUGIN_DATA_DIR.into()
}

impl Validate for DaemonConfig {
    fn validate(&self) -> Result<(), String> {
        match config::require_ip("underlay_ip", &self.underlay_ip)? {
            std::net::IpAddr::V4(_) => {}
            _ => return Err("invalid 'underlay_ip': must be IPv4".into()),
        }
        if self.vtep_name.is_empty() || self.vtep_name.len() > 15 || self.vtep_name.contains('/') {
            return Err(format!(
                "invalid 'vtep_name': {:?} must be 1-15 characters without '/'",
                self.vtep_name
            ));
        }
        if self.vni == 0 || self.vni >= 1 << 24 {
            return Err(format!("invalid 'vni': {} must be in 1-16777215", self.vni));
        }
        config::require_port("vtep_port", self.vtep_port)?;
        let network = parse_network("overlay_network", &self.overlay_network)?;
        if !(1..=30).contains(&self.subnet_prefix_length)
            || self.subnet_prefix_length <= network.prefix_len()
        {
            return Err(format!(
                "invalid 'subnet_prefix_length': {} must be in 1-30 and longer than /{}",
                self.subnet_prefix_length,
                network.prefix_len()
            ));
        }
        if !(self.controller_url.starts_with("https://")) {
            return Err(format!(
                "invalid 'controller_url': {:?} must be https://",
                self.controller_url
            ));
        }
        config::require_readable_file("ca_cert_file", &self.ca_cert_file)?;
        config::require_readable_file("client_cert_file", &self.client_cert_file)?;
        config::require_readable_file("client_key_file", &self.client_key_file)?;
        config::require_positive("client_timeout_seconds", self.client_timeout_seconds)?;
        config::require_positive("poll_interval_seconds", self.poll_interval_seconds)?;
        config::require_positive(
            "partition_tolerance_seconds",
            self.partition_tolerance_seconds,
        )?;
        config::require_ip("listen_host", &self.listen_host)?;
        config::require_port("listen_port", self.listen_port)?;
        config::require_port("debug_server_port", self.debug_server_port)?;
        config::require_nonempty("plugin_data_dir", &self.plugin_data_dir)
    }
}

impl DaemonConfig {
    pub fn vtep(&self) -> Result<VtepConfig, String> {
        Ok(VtepConfig {
            name: self.vtep_name.clone(),
            vni: self.vni,
            port: self.vtep_port,
            underlay_ip: self
                .underlay_ip
                .parse()
                .map_err(|_| "invalid 'underlay_ip'".to_string())?,
            underlay_interface: self.underlay_interface.clone().filter(|s| !s.is_empty()),
            overlay_network: parse_network("overlay_network", &self.overlay_network)?,
            subnet_prefix_length: self.subnet_prefix_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals() {
        let c: DaemonConfig = serde_json::from_value(serde_json::json!({
            "underlay_ip": "10.0.0.1", "controller_url": "https://c:4103",
            "ca_cert_file": "ca", "client_cert_file": "c", "client_key_file": "k",
        }))
        .unwrap();
        assert_eq!(
            (c.vtep_name.as_str(), c.vni, c.vtep_port),
            ("silk-vtep", 1, 4789)
        );
        assert_eq!(
            (c.overlay_network.as_str(), c.subnet_prefix_length),
            ("10.255.0.0/16", 24)
        );
        assert_eq!(
            (
                c.client_timeout_seconds,
                c.poll_interval_seconds,
                c.partition_tolerance_seconds
            ),
            (5, 30, 604_800)
        );
        assert_eq!(
            (c.listen_host.as_str(), c.listen_port, c.debug_server_port),
            ("127.0.0.1", 23954, 22233)
        );
        assert_eq!(c.plugin_data_dir, "/var/vcap/data/overlay");
        assert!(!c.single_ip_only && c.underlay_interface.is_none());
    }
}
