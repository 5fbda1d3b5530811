//! The policy server's configuration file. Keys follow the original where it had them
//! (`listen_host`, `listen_port`, `internal_listen_port`, `ca_cert_file`, `database`, `tag_length`,
//! `uaa_url`, ...). Unknown keys and bad values fail at start with a message naming the key.

use super::auth::AuthConfig;
use super::cc::CcConfig;
use crate::config::{require_ip, require_port, require_readable_file, Validate};
use crate::db::DatabaseConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyServerConfig {
    #[serde(default = "any_host")]
    pub listen_host: String,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// Serve the external API over TLS with `external_cert_file` / `external_key_file`.
    #[serde(default)]
    pub enable_tls: bool,
    #[serde(default)]
    pub external_cert_file: String,
    #[serde(default)]
    pub external_key_file: String,

    #[serde(default = "any_host")]
    pub internal_listen_host: String,
    #[serde(default = "default_internal_port")]
    pub internal_listen_port: u16,
    /// CA that signs the agents' client certificates (internal API, mutual TLS).
    pub ca_cert_file: String,
    pub server_cert_file: String,
    pub server_key_file: String,

    #[serde(default = "loopback")]
    pub debug_server_host: String,
    #[serde(default = "default_debug_port")]
    pub debug_server_port: u16,

    pub database: DatabaseConfig,
    #[serde(default = "default_tag_length")]
    pub tag_length: u8,
    /// How long a released tag is not handed out again (docs/policy-server.md, "Tag
    /// quarantine"); 0 reuses released tags at once, as the original did.
    #[serde(default = "default_tag_quarantine")]
    pub tag_quarantine_seconds: u64,

    /// How callers of the external API are authenticated.
    pub auth: AuthConfig,

    /// Cloud Controller for space-developer checks, list filtering and stale-policy cleanup.
    /// Without it only `network.admin` callers can change policies and cleanup is off.
    #[serde(default)]
    pub cc_url: String,
    #[serde(default)]
    pub cc_ca_cert_file: String,

    /// Seconds between automatic stale-policy cleanups; 0 turns them off.
    #[serde(default = "default_cleanup_interval")]
    pub cleanup_interval_seconds: u64,
    #[serde(default = "default_max_policies")]
    pub max_policies_per_app_source: usize,
    #[serde(default)]
    pub enable_space_developer_self_service: bool,
    #[serde(default)]
    pub allowed_cors_domains: Vec<String>,
    /// Threads serving connections on each of the external and internal listeners.
    #[serde(default = "default_workers")]
    pub http_workers: usize,
    /// Open connections per listener; beyond it the oldest idle connection is closed.
    #[serde(default = "default_max_connections")]
    pub max_client_connections: usize,
    /// Client certificate names (subject CN or SAN) allowed on the internal API; empty: any
    /// certificate signed by `ca_cert_file`. When set, certificates without the clientAuth usage
    /// are refused too.
    #[serde(default)]
    pub allowed_internal_clients: Vec<String>,
    /// Copy the Cloud Controller's security groups into the store (needs `cc_url`); the admin
    /// API for security groups is then read-only.
    #[serde(default)]
    pub asg_syncer: Option<super::asg::syncer::AsgSyncConfig>,
    /// Service discovery: a cell that sent no refresh for this long is forgotten with its app
    /// instances (docs/service-discovery.md).
    #[serde(default = "default_sd_cell_expiry")]
    pub service_discovery_cell_expiry_seconds: u64,
}

fn default_sd_cell_expiry() -> u64 {
    super::sd::registry::DEFAULT_CELL_EXPIRY.as_secs()
}

fn any_host() -> String {
    "0.0.0.0".into()
}
fn loopback() -> String {
    "127.0.0.1".into()
}
fn default_listen_port() -> u16 {
    4002
}
fn default_internal_port() -> u16 {
    4003
}
fn default_debug_port() -> u16 {
    31821
}
fn default_tag_length() -> u8 {
    2
}
fn default_tag_quarantine() -> u64 {
    super::store::DEFAULT_TAG_QUARANTINE.as_secs()
}
fn default_cleanup_interval() -> u64 {
    3600
}
fn default_max_policies() -> usize {
    150
}
fn default_workers() -> usize {
    64
}
fn default_max_connections() -> usize {
    10_000
}

impl PolicyServerConfig {
    /// The tag pool the store allocates from.
    pub fn tag_pool(&self) -> super::store::TagPool {
        super::store::TagPool::new(
            self.tag_length,
            std::time::Duration::from_secs(self.tag_quarantine_seconds),
        )
    }

    pub fn http_settings(&self) -> super::app::HttpSettings {
        super::app::HttpSettings {
            max_connections: self.max_client_connections,
            allowed_internal_clients: self.allowed_internal_clients.clone(),
        }
    }

    /// The Cloud Controller client's settings, when `cc_url` is set.
    pub fn cc_config(&self) -> Option<CcConfig> {
        if self.cc_url.is_empty() {
            return None;
        }
        let mut cc = CcConfig::new(&self.cc_url);
        if !self.cc_ca_cert_file.is_empty() {
            cc.cc_ca_cert_file = Some(self.cc_ca_cert_file.clone());
        }
        Some(cc)
    }
}

impl Validate for PolicyServerConfig {
    fn validate(&self) -> Result<(), String> {
        require_ip("listen_host", &self.listen_host)?;
        require_port("listen_port", self.listen_port)?;
        require_ip("internal_listen_host", &self.internal_listen_host)?;
        require_port("internal_listen_port", self.internal_listen_port)?;
        let debug = require_ip("debug_server_host", &self.debug_server_host)?;
        if !debug.is_loopback() {
            return Err(format!(
                "invalid 'debug_server_host': {debug} is not a loopback address (the debug server has no authentication)"
            ));
        }
        require_port("debug_server_port", self.debug_server_port)?;
        if self.enable_tls {
            require_readable_file("external_cert_file", &self.external_cert_file)?;
            require_readable_file("external_key_file", &self.external_key_file)?;
        } else if !self.external_cert_file.is_empty() || !self.external_key_file.is_empty() {
            return Err(
                "'external_cert_file'/'external_key_file' are set but 'enable_tls' is false".into(),
            );
        }
        require_readable_file("ca_cert_file", &self.ca_cert_file)?;
        require_readable_file("server_cert_file", &self.server_cert_file)?;
        require_readable_file("server_key_file", &self.server_key_file)?;
        self.database
            .validate()
            .map_err(|e| format!("database: {e}"))?;
        if !(1..=2).contains(&self.tag_length) {
            return Err(format!(
                "invalid 'tag_length': {} (1 or 2 bytes: VXLAN GBP carries 16 bits)",
                self.tag_length
            ));
        }
        // Far beyond any real need (a year); keeps the millisecond arithmetic in range.
        if self.tag_quarantine_seconds > 366 * 24 * 3600 {
            return Err(format!(
                "invalid 'tag_quarantine_seconds': {} (at most one year)",
                self.tag_quarantine_seconds
            ));
        }
        self.auth.validate()?;
        self.auth.check_listen_host(&self.listen_host)?;
        if let Some(cc) = self.cc_config() {
            cc.validate()?;
            if self.auth.uaa_client_config().is_none() {
                return Err("'cc_url' needs the Cloud Controller client's UAA credentials: set 'auth.uaa_url', 'auth.uaa_client' and 'auth.uaa_client_secret'".into());
            }
        } else if !self.cc_ca_cert_file.is_empty() {
            return Err("'cc_ca_cert_file' is set but 'cc_url' is not".into());
        }
        if let Some(syncer) = &self.asg_syncer {
            if self.cc_url.is_empty() {
                return Err(
                    "'asg_syncer' needs 'cc_url' (the Cloud Controller to copy from)".into(),
                );
            }
            syncer.validate()?;
        }
        if self.max_policies_per_app_source == 0 {
            return Err("invalid 'max_policies_per_app_source': must be greater than 0".into());
        }
        if self.http_workers == 0 || self.http_workers > 4096 {
            return Err("invalid 'http_workers': must be in 1-4096".into());
        }
        if self.max_client_connections == 0 || self.max_client_connections > 1_000_000 {
            return Err("invalid 'max_client_connections': must be in 1-1000000".into());
        }
        if !(1..=86_400).contains(&self.service_discovery_cell_expiry_seconds) {
            return Err(format!(
                "invalid 'service_discovery_cell_expiry_seconds': {} (1 to 86400)",
                self.service_discovery_cell_expiry_seconds
            ));
        }
        crate::config::require_cert_names(
            "allowed_internal_clients",
            &self.allowed_internal_clients,
        )?;
        Ok(())
    }
}
