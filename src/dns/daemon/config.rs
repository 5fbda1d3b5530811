//! `netman-dns`'s configuration file: where it listens, its upstreams, the registry (the policy
//! server's internal API, mutual TLS) it reports to and follows, the cell's container store, and
//! the snapshot. Unknown keys and bad values fail at start, naming the key.

use crate::config::{
    loopback, require_ip, require_nonempty, require_port, require_readable_file, u16_default,
    u64_default, Validate,
};
use crate::dns::server::ServerConfig;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The address containers ask (the networker's `dns_servers`): link-local, on a device of its
    /// own (`listen_device`) so nothing else owns it.
    #[serde(default = "default_listen_address")]
    pub listen_address: String,
    #[serde(default = "u16_default::<53>")]
    pub listen_port: u16,
    /// A dummy device the daemon creates (if missing) with `listen_address`/32, so that the
    /// address exists on the cell; empty: the address is expected to exist already.
    #[serde(default)]
    pub listen_device: String,

    /// Upstream resolvers (`ip` or `ip:port`); empty: the nameservers of `resolv_conf`.
    #[serde(default)]
    pub upstreams: Vec<String>,
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: String,
    #[serde(default = "u64_default::<2000>")]
    pub upstream_timeout_ms: u64,

    /// The policy server's internal API, e.g. `https://policy-server.service.cf.internal:4003`.
    pub policy_server_url: String,
    pub ca_cert_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    /// This cell's name in the registry (unique per cell; e.g. the BOSH instance id).
    pub cell_id: String,
    /// The cell's container store, as the networker writes it.
    pub container_store: String,
    /// Full reports of the cell's containers, also when nothing changed (the registry forgets a
    /// cell that stops reporting, after its `service_discovery_cell_expiry_seconds`).
    #[serde(default = "u64_default::<10>")]
    pub refresh_interval_seconds: u64,
    /// How long one table watch is held by the registry.
    #[serde(default = "u64_default::<30>")]
    pub watch_seconds: u64,
    /// The last table received, served at start before the registry answers.
    pub snapshot_file: String,

    #[serde(default = "loopback")]
    pub debug_server_host: String,
    #[serde(default = "u16_default::<8065>")]
    pub debug_server_port: u16,

    #[serde(default = "default_udp_workers")]
    pub udp_workers: usize,
    #[serde(default = "default_forward_workers")]
    pub forward_workers: usize,
    #[serde(default = "default_tcp_connections")]
    pub tcp_connections: usize,
}

fn default_listen_address() -> String {
    "169.254.0.2".into()
}
fn default_resolv_conf() -> String {
    "/etc/resolv.conf".into()
}
fn default_udp_workers() -> usize {
    ServerConfig::default().udp_workers
}
fn default_forward_workers() -> usize {
    ServerConfig::default().forward_workers
}
fn default_tcp_connections() -> usize {
    ServerConfig::default().tcp_connections
}

impl DnsConfig {
    pub fn listen(&self) -> Result<SocketAddr, String> {
        let ip = require_ip("listen_address", &self.listen_address)?;
        Ok(SocketAddr::new(ip, self.listen_port))
    }

    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            udp_workers: self.udp_workers,
            forward_workers: self.forward_workers,
            tcp_connections: self.tcp_connections,
            ..ServerConfig::default()
        }
    }

    /// The configured upstreams; empty when they come from `resolv_conf`.
    pub fn upstream_list(&self) -> Result<Vec<SocketAddr>, String> {
        self.upstreams
            .iter()
            .map(|u| {
                u.parse::<SocketAddr>()
                    .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("invalid 'upstreams': {u:?} is not ip or ip:port"))
            })
            .collect()
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }
}

impl Validate for DnsConfig {
    fn validate(&self) -> Result<(), String> {
        self.listen()?;
        require_port("listen_port", self.listen_port)?;
        if !self.listen_device.is_empty()
            && (self.listen_device.len() > 15 || self.listen_device.contains(['/', ' ']))
        {
            return Err(format!(
                "invalid 'listen_device': {:?} is not an interface name",
                self.listen_device
            ));
        }
        if self.upstream_list()?.is_empty() {
            require_readable_file("resolv_conf", &self.resolv_conf)?;
        }
        if !(1..=30_000).contains(&self.upstream_timeout_ms) {
            return Err("invalid 'upstream_timeout_ms': must be in 1-30000".into());
        }
        require_nonempty("policy_server_url", &self.policy_server_url)?;
        if !self.policy_server_url.starts_with("https://") {
            return Err(format!(
                "invalid 'policy_server_url': {:?} must be an https:// URL (mutual TLS)",
                self.policy_server_url
            ));
        }
        require_readable_file("ca_cert_file", &self.ca_cert_file)?;
        require_readable_file("client_cert_file", &self.client_cert_file)?;
        require_readable_file("client_key_file", &self.client_key_file)?;
        crate::policy::sd::internal::check_cell_id(&self.cell_id)
            .map_err(|e| format!("invalid 'cell_id': {e}"))?;
        require_nonempty("container_store", &self.container_store)?;
        require_nonempty("snapshot_file", &self.snapshot_file)?;
        for (key, path) in [
            ("container_store", &self.container_store),
            ("snapshot_file", &self.snapshot_file),
        ] {
            let dir = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                return Err(format!(
                    "invalid '{key}': directory {} does not exist",
                    dir.display()
                ));
            }
        }
        if !(1..=3600).contains(&self.refresh_interval_seconds) {
            return Err("invalid 'refresh_interval_seconds': must be in 1-3600".into());
        }
        if !(1..=300).contains(&self.watch_seconds) {
            return Err("invalid 'watch_seconds': must be in 1-300".into());
        }
        let debug = require_ip("debug_server_host", &self.debug_server_host)?;
        if !debug.is_loopback() {
            return Err(format!(
                "invalid 'debug_server_host': {debug} is not a loopback address"
            ));
        }
        require_port("debug_server_port", self.debug_server_port)?;
        self.server()
            .validate()
            .map_err(|e| format!("invalid server setting: {e}"))
    }
}
