//! `overlay-controller` configuration: keys, defaults and checks.

use crate::config::{self, any_host, u16_default, u64_default, u8_default, Validate};
use crate::overlay::{parse_network, DEFAULT_NETWORK};
use serde::Deserialize;

/// Where leases are stored: the project's one `database` section (the policy server's keys):
/// `type` sqlite (default build), postgres or mysql, `connection_string` or
/// user/password/host/port/database_name, timeouts, pool limits, TLS.
pub use crate::db::DatabaseConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    #[serde(default = "any_host")]
    pub listen_host: String,
    #[serde(default = "u16_default::<4103>")]
    pub listen_port: u16,
    /// On 127.0.0.1.
    #[serde(default = "u16_default::<46455>")]
    pub debug_server_port: u16,
    pub ca_cert_file: String,
    pub server_cert_file: String,
    pub server_key_file: String,
    #[serde(default = "default_network")]
    pub network: String,
    #[serde(default = "u8_default::<24>")]
    pub subnet_prefix_length: u8,
    pub database: DatabaseConfig,
    /// One week.
    #[serde(default = "u64_default::<{ 168 * 3600 }>")]
    pub lease_expiration_seconds: u64,
    #[serde(default = "u64_default::<3600>")]
    pub staleness_threshold_seconds: u64,
    /// Client certificate names (CN or SAN) allowed on the lease API; empty: any certificate of
    /// `ca_cert_file`. When set, certificates without the clientAuth usage are refused too.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
}

fn default_network() -> String {
    DEFAULT_NETWORK.into()
}

impl Validate for ControllerConfig {
    fn validate(&self) -> Result<(), String> {
        config::require_ip("listen_host", &self.listen_host)?;
        config::require_port("listen_port", self.listen_port)?;
        config::require_port("debug_server_port", self.debug_server_port)?;
        config::require_readable_file("ca_cert_file", &self.ca_cert_file)?;
        config::require_readable_file("server_cert_file", &self.server_cert_file)?;
        config::require_readable_file("server_key_file", &self.server_key_file)?;
        let network = parse_network("network", &self.network)?;
        if !(1..=30).contains(&self.subnet_prefix_length)
            || self.subnet_prefix_length <= network.prefix_len()
        {
            return Err(format!(
                "invalid 'subnet_prefix_length': {} must be in 1-30 and longer than the network's /{}",
                self.subnet_prefix_length,
                network.prefix_len()
            ));
        }
        config::require_positive("lease_expiration_seconds", self.lease_expiration_seconds)?;
        config::require_positive(
            "staleness_threshold_seconds",
            self.staleness_threshold_seconds,
        )?;
        config::require_cert_names("allowed_clients", &self.allowed_clients)?;
        self.database.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals() {
        let c: ControllerConfig = serde_json::from_value(serde_json::json!({
            "ca_cert_file": "ca", "server_cert_file": "c", "server_key_file": "k",
            "database": {"type": "sqlite", "connection_string": "leases.db"},
        }))
        .unwrap();
        assert_eq!(
            (c.listen_host.as_str(), c.listen_port, c.debug_server_port),
            ("0.0.0.0", 4103, 46455)
        );
        assert_eq!(
            (c.network.as_str(), c.subnet_prefix_length),
            ("10.255.0.0/16", 24)
        );
        assert_eq!(
            (c.lease_expiration_seconds, c.staleness_threshold_seconds),
            (604_800, 3600)
        );
    }
}
