//! The agent's JSON configuration: keys, defaults and checks.

use crate::config::{
    bool_default, loopback, require_nonempty, require_port, require_positive,
    require_readable_file, u16_default, u32_default, u64_default,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Base URL of the policy server's internal API, e.g.
    /// `https://policy-server.service.cf.internal:4003`.
    pub policy_server_url: String,
    /// CA that signed the policy server's certificate.
    pub ca_cert_file: String,
    /// The agent's client certificate and key for mutual TLS.
    pub client_cert_file: String,
    pub client_key_file: String,
    #[serde(default = "u64_default::<5>")]
    pub client_timeout_seconds: u64,
    /// The container metadata store (`store.json`); its version file is `<path>_version`.
    pub cni_datastore_path: String,
    /// How often `policies_last_updated` is checked when the server has no watch (and how often
    /// the local container store is looked at). The first poll comes after a random part of it.
    #[serde(default = "u64_default::<1>")]
    pub poll_interval_seconds: u64,
    /// Hold a watch on the policy version (`policies_last_updated?wait=&after=`), and with
    /// ASGs on the security-groups version, instead of polling the server; falls back to
    /// polling against a server without them.
    #[serde(default = "bool_default::<true>")]
    pub policy_watch: bool,
    /// How long one watch request waits before it is renewed.
    #[serde(default = "u64_default::<30>")]
    pub policy_watch_seconds: u64,
    /// Policies are fetched and the plan re-applied at least this often, changed or not.
    #[serde(default = "u64_default::<60>")]
    pub full_sync_interval_seconds: u64,
    /// After this long without a sync with the policy server the cell reports itself stale
    /// (`/health` 500, `vpa_policies_stale` 1) and keeps enforcing its last rules. At most the
    /// policy server's `tag_quarantine_seconds` (the same default): beyond it a tag this cell still
    /// marks may have been given to another app.
    #[serde(default = "u64_default::<3600>")]
    pub policy_stale_after_seconds: u64,
    /// Ceiling of the exponential back-off (with jitter) while the policy server fails.
    #[serde(default = "u64_default::<30>")]
    pub backoff_max_seconds: u64,
    #[serde(default = "loopback")]
    pub debug_server_host: String,
    #[serde(default = "u16_default::<8721>")]
    pub debug_server_port: u16,
    #[serde(default = "loopback")]
    pub force_policy_poll_cycle_host: String,
    #[serde(default = "u16_default::<8722>")]
    pub force_policy_poll_cycle_port: u16,
    /// Log allowed new container-to-container connections (NFLOG) from the start; toggled at
    /// runtime through the debug server's `/iptables-c2c-logging`.
    #[serde(default)]
    pub iptables_c2c_logging: bool,
    /// Rate limit of logged accepted UDP packets.
    #[serde(default = "u32_default::<100>")]
    pub iptables_accepted_udp_logs_per_sec: u32,
    /// NFLOG group of the c2c log (the kernel's LOG target is silent in namespaces).
    #[serde(default = "u16_default::<2>")]
    pub c2c_nflog_group: u16,
    /// Dynamic ASGs: the agent enforces the security groups of every container of the cell in
    /// its table `ip netman_asg`, and the networker asks it at `up` (off: 405, the networker's
    /// static `netout_rules` path).
    #[serde(default)]
    pub enable_asg_syncing: bool,
    /// Security groups are re-fetched and the ASG table rewritten at least this often (the only
    /// trigger against a policy server without the version check).
    #[serde(default = "u64_default::<60>")]
    pub asg_poll_interval_seconds: u64,
    /// The container network (required with `enable_asg_syncing`): egress is traffic from it to
    /// anywhere else.
    #[serde(default)]
    pub overlay_network: Option<ipnet::Ipv4Net>,
    /// Networks no security group can open, by lifecycle (as the networker's).
    #[serde(default)]
    pub deny_networks: super::asg::DenyNetworks,
    /// Log every allowed new egress connection, not only those of `log: true` rules.
    #[serde(default)]
    pub iptables_asg_logging: bool,
    /// Rate limit of the logs of denied egress, and of denied and audit flow-log lines (0: denied
    /// egress not logged; the flow log needs at least 1).
    #[serde(default = "u32_default::<1>")]
    pub iptables_denied_logs_per_sec: u32,
    /// NFLOG group of the ASG logs (the flow log reads it too).
    #[serde(default = "u16_default::<1>")]
    pub asg_nflog_group: u16,
    /// The flow log (docs/flows.md): one JSON line per logged connection; off when unset.
    #[serde(default)]
    pub flow_log_file: Option<String>,
    /// The file is rotated at this size; this many old files are kept.
    #[serde(default = "u64_default::<104857600>")]
    pub flow_log_max_bytes: u64,
    #[serde(default = "u64_default::<5>")]
    pub flow_log_keep_files: u64,
    /// Each flow log line also to syslog: a unix datagram socket (`/dev/log`) or `udp://IP:PORT`
    /// (`crate::flowlog::syslog`); needs `flow_log_file`.
    #[serde(default)]
    pub flow_log_syslog: Option<String>,
    /// The syslog facility of those messages (`user`, `daemon`, `local0` ... `local7`, ...).
    /// Default `user`, as `syslog(3)`; refused without `flow_log_syslog`.
    #[serde(default)]
    pub flow_log_syslog_facility: Option<String>,
    /// The cell's name in flow log lines (default: the host name).
    #[serde(default)]
    pub flow_log_cell: Option<String>,
    /// Log denied c2c connections (toggle at runtime: `/flow-logging`).
    #[serde(default = "bool_default::<true>")]
    pub flow_log_c2c_denied: bool,
    /// Write the networker's NetOut log events (toggle at runtime: `/flow-logging`).
    #[serde(default = "bool_default::<true>")]
    pub flow_log_egress: bool,
    /// The networker's NFLOG group (its `nflog_group`).
    #[serde(default = "u16_default::<1>")]
    pub egress_nflog_group: u16,
    /// Where the networker keeps each container's NetOut rules (its `cni_cache_dir`).
    #[serde(default = "default_netout_cache_dir")]
    pub netout_cache_dir: String,
    /// Audit mode from the start (toggle at runtime: `/audit`): would-be-denied c2c
    /// connections to every container of the cell, or to those of these apps, pass and are logged.
    #[serde(default)]
    pub audit_cell: bool,
    #[serde(default)]
    pub audit_apps: Vec<String>,
    /// The `nft` executable, used only when libnftables.so.1 cannot be loaded.
    #[serde(default = "default_nft")]
    pub nft_path: String,
}

fn default_nft() -> String {
    "nft".into()
}

fn default_netout_cache_dir() -> String {
    "/var/vcap/data/garden-cni/cni-cache".into()
}

impl AgentConfig {
    /// What the ASG compilation needs; `None` with syncing off.
    pub fn asg_settings(&self) -> Option<super::asg::Settings> {
        let overlay = self.overlay_network.filter(|_| self.enable_asg_syncing)?;
        Some(super::asg::Settings {
            overlay,
            deny: self.deny_networks.clone(),
            log_all: self.iptables_asg_logging,
            nflog_group: self.asg_nflog_group,
            denied_logs_per_sec: self.iptables_denied_logs_per_sec,
            accepted_udp_logs_per_sec: self.iptables_accepted_udp_logs_per_sec,
        })
    }

    /// The poll loop's settings.
    pub fn cycle_settings(&self) -> super::cycle::Settings {
        use std::time::Duration;
        super::cycle::Settings {
            poll_interval: Duration::from_secs(self.poll_interval_seconds),
            full_sync_interval: Duration::from_secs(self.full_sync_interval_seconds),
            backoff_max: Duration::from_secs(self.backoff_max_seconds),
            watch: self
                .policy_watch
                .then(|| Duration::from_secs(self.policy_watch_seconds)),
            stale_after: Duration::from_secs(self.policy_stale_after_seconds),
        }
    }

    /// The ASG loop's settings: the container store looked at every poll interval, the
    /// security-groups version watched as the policy version is (`policy_watch`), the first
    /// cycle at once (the table is installed at start).
    pub fn asg_loop_settings(&self) -> super::watch_loop::LoopSettings {
        let cycle = self.cycle_settings();
        super::watch_loop::LoopSettings {
            interval: cycle.poll_interval,
            backoff_max: cycle.backoff_max,
            watch: cycle.watch,
            first: std::time::Duration::ZERO,
        }
    }
}

impl crate::config::Validate for AgentConfig {
    fn validate(&self) -> Result<(), String> {
        require_nonempty("policy_server_url", &self.policy_server_url)?;
        if !self.policy_server_url.starts_with("https://") {
            return Err(format!(
                "invalid 'policy_server_url': {:?} must be an https:// URL (the internal API is mutual TLS)",
                self.policy_server_url
            ));
        }
        require_readable_file("ca_cert_file", &self.ca_cert_file)?;
        require_readable_file("client_cert_file", &self.client_cert_file)?;
        require_readable_file("client_key_file", &self.client_key_file)?;
        require_positive("client_timeout_seconds", self.client_timeout_seconds)?;
        require_nonempty("cni_datastore_path", &self.cni_datastore_path)?;
        let dir = std::path::Path::new(&self.cni_datastore_path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "invalid 'cni_datastore_path': directory {} does not exist",
                dir.display()
            ));
        }
        require_positive("poll_interval_seconds", self.poll_interval_seconds)?;
        if self.policy_watch && !(1..=300).contains(&self.policy_watch_seconds) {
            return Err(format!(
                "invalid 'policy_watch_seconds': {} (1-300; the server holds a watch at most 300 s)",
                self.policy_watch_seconds
            ));
        }
        require_positive(
            "full_sync_interval_seconds",
            self.full_sync_interval_seconds,
        )?;
        require_positive("backoff_max_seconds", self.backoff_max_seconds)?;
        require_positive(
            "policy_stale_after_seconds",
            self.policy_stale_after_seconds,
        )?;
        for (key, host) in [
            ("debug_server_host", &self.debug_server_host),
            (
                "force_policy_poll_cycle_host",
                &self.force_policy_poll_cycle_host,
            ),
        ] {
            // Both servers are unauthenticated: loopback only.
            if !crate::config::require_ip(key, host)?.is_loopback() {
                return Err(format!("invalid '{key}': {host} is not a loopback address"));
            }
        }
        require_port("debug_server_port", self.debug_server_port)?;
        require_port(
            "force_policy_poll_cycle_port",
            self.force_policy_poll_cycle_port,
        )?;
        require_positive(
            "iptables_accepted_udp_logs_per_sec",
            self.iptables_accepted_udp_logs_per_sec as u64,
        )?;
        require_nonempty("nft_path", &self.nft_path)?;
        if self.enable_asg_syncing {
            if self.overlay_network.is_none() {
                return Err(
                    "missing required config 'overlay_network' (needed with 'enable_asg_syncing')"
                        .into(),
                );
            }
            require_positive("asg_poll_interval_seconds", self.asg_poll_interval_seconds)?;
        }
        self.validate_flow_log()
    }
}

impl AgentConfig {
    fn validate_flow_log(&self) -> Result<(), String> {
        if self.flow_log_syslog_facility.is_some() && self.flow_log_syslog.is_none() {
            return Err("invalid 'flow_log_syslog_facility': it needs 'flow_log_syslog'".into());
        }
        let Some(file) = &self.flow_log_file else {
            if self.audit_cell || !self.audit_apps.is_empty() {
                return Err("invalid 'audit_cell'/'audit_apps': audit mode needs 'flow_log_file' (it logs what it lets pass)".into());
            }
            if self.flow_log_syslog.is_some() {
                return Err("invalid 'flow_log_syslog': it needs 'flow_log_file' (syslog is a second output of the flow log, which 'flow_log_file' turns on)".into());
            }
            return Ok(());
        };
        self.syslog_settings()?;
        require_nonempty("flow_log_file", file)?;
        let dir = std::path::Path::new(file)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "invalid 'flow_log_file': directory {} does not exist",
                dir.display()
            ));
        }
        if self.flow_log_max_bytes < 4096 {
            return Err(format!(
                "invalid 'flow_log_max_bytes': {} (at least 4096)",
                self.flow_log_max_bytes
            ));
        }
        if self.flow_log_keep_files > 1000 {
            return Err(format!(
                "invalid 'flow_log_keep_files': {} (at most 1000)",
                self.flow_log_keep_files
            ));
        }
        require_positive(
            "iptables_denied_logs_per_sec",
            self.iptables_denied_logs_per_sec as u64,
        )?;
        if let Some(cell) = &self.flow_log_cell {
            require_nonempty("flow_log_cell", cell)?;
        }
        if let Some(bad) = self
            .audit_apps
            .iter()
            .find(|a| a.is_empty() || a.len() > 255)
        {
            return Err(format!("invalid 'audit_apps': {bad:?} is not an app guid"));
        }
        Ok(())
    }

    /// Where and as what the flow log's lines also go to syslog (`None`: nowhere), checked.
    fn syslog_settings(&self) -> Result<Option<super::flows::SyslogSettings>, String> {
        let Some(target) = &self.flow_log_syslog else {
            return Ok(None);
        };
        let target = crate::flowlog::syslog::Target::parse(target)
            .map_err(|e| format!("invalid 'flow_log_syslog': {e}"))?;
        let facility = crate::flowlog::syslog::parse_facility(
            self.flow_log_syslog_facility.as_deref().unwrap_or("user"),
        )
        .map_err(|e| format!("invalid 'flow_log_syslog_facility': {e}"))?;
        Ok(Some(super::flows::SyslogSettings { target, facility }))
    }

    /// The flow log's settings; `None` when it is off. A config that [`validate`] would refuse
    /// gives the same message here.
    ///
    /// [`validate`]: crate::config::Validate::validate
    pub fn flow_settings(&self) -> Result<Option<super::flows::FlowSettings>, String> {
        let Some(file) = self.flow_log_file.as_ref() else {
            return Ok(None);
        };
        let cell = self.flow_log_cell.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        });
        let mut groups = vec![self.c2c_nflog_group, self.egress_nflog_group];
        if self.enable_asg_syncing {
            groups.push(self.asg_nflog_group);
        }
        groups.sort_unstable();
        groups.dedup();
        Ok(Some(super::flows::FlowSettings {
            file: file.into(),
            max_bytes: self.flow_log_max_bytes,
            keep: self.flow_log_keep_files as usize,
            cell,
            groups,
            rules: super::flow_table::FlowRules {
                denied: self.flow_log_c2c_denied,
                group: self.c2c_nflog_group,
                per_sec: self.iptables_denied_logs_per_sec,
            },
            egress: self.flow_log_egress,
            netout_limits: !self.enable_asg_syncing,
            netout_cache_dir: self.netout_cache_dir.clone().into(),
            syslog: self.syslog_settings()?,
            audit: super::flows::Audit {
                cell: self.audit_cell,
                apps: self.audit_apps.iter().cloned().collect(),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Validate;

    fn write(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
        for f in ["ca.pem", "c.pem", "k.pem"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let d = dir.display();
        let p = dir.join("vpa.json");
        std::fs::write(
            &p,
            format!(
                r#"{{"policy_server_url":"https://ps:4003","ca_cert_file":"{d}/ca.pem",
                "client_cert_file":"{d}/c.pem","client_key_file":"{d}/k.pem",
                "cni_datastore_path":"{d}/store.json"{extra}}}"#
            ),
        )
        .unwrap();
        p
    }

    #[test]
    fn defaults_apply_and_bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let c: AgentConfig = crate::config::load(&write(dir.path(), "")).unwrap();
        assert_eq!(c.poll_interval_seconds, 1);
        assert_eq!(c.full_sync_interval_seconds, 60);
        assert_eq!(c.force_policy_poll_cycle_port, 8722);
        assert_eq!(c.debug_server_port, 8721);
        assert!(!c.iptables_c2c_logging);
        let err =
            crate::config::load::<AgentConfig>(&write(dir.path(), r#","poll_interval_seconds":0"#))
                .unwrap_err();
        assert!(err.contains("'poll_interval_seconds'"), "{err}");
        let err = crate::config::load::<AgentConfig>(&write(dir.path(), r#","pol_interval":3"#))
            .unwrap_err();
        assert!(err.contains("pol_interval"), "{err}");
        let mut bad = c.clone();
        bad.policy_server_url = "http://ps:4003".into();
        assert!(bad.validate().unwrap_err().contains("policy_server_url"));
        bad = c.clone();
        bad.debug_server_host = "0.0.0.0".into();
        assert!(bad.validate().unwrap_err().contains("'debug_server_host'"));
        bad = c.clone();
        bad.cni_datastore_path = "/nonexistent-dir-xyz/store.json".into();
        assert!(bad.validate().unwrap_err().contains("cni_datastore_path"));
    }

    #[test]
    fn the_syslog_output_is_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let load = |extra: &str| crate::config::load::<AgentConfig>(&write(dir.path(), extra));
        let file = format!(r#","flow_log_file":"{d}/flows.log""#);
        let c = load(&format!(r#"{file},"flow_log_syslog":"/dev/log""#)).unwrap();
        let s = c.flow_settings().unwrap().unwrap().syslog.unwrap();
        assert_eq!(
            s.target,
            crate::flowlog::syslog::Target::Unix("/dev/log".into())
        );
        assert_eq!(s.facility, 1, "user by default");
        let c = load(&format!(
            r#"{file},"flow_log_syslog":"udp://127.0.0.1:514","flow_log_syslog_facility":"local3""#
        ))
        .unwrap();
        let s = c.flow_settings().unwrap().unwrap().syslog.unwrap();
        assert_eq!(
            s.target,
            crate::flowlog::syslog::Target::Udp("127.0.0.1:514".parse().unwrap())
        );
        assert_eq!(s.facility, 19);
        assert!(load(&file)
            .unwrap()
            .flow_settings()
            .unwrap()
            .unwrap()
            .syslog
            .is_none());
        for (extra, key) in [
            (
                format!(r#"{file},"flow_log_syslog":"localhost:514""#),
                "'flow_log_syslog'",
            ),
            (
                format!(r#"{file},"flow_log_syslog":"udp://127.0.0.1""#),
                "'flow_log_syslog'",
            ),
            (
                r#","flow_log_syslog":"/dev/log""#.to_string(),
                "needs 'flow_log_file'",
            ),
            (
                format!(
                    r#"{file},"flow_log_syslog":"/dev/log","flow_log_syslog_facility":"locl0""#
                ),
                "'flow_log_syslog_facility'",
            ),
            (
                format!(
                    r#"{file},"flow_log_syslog":"/dev/log","flow_log_syslog_facility":"security""#
                ),
                "'flow_log_syslog_facility'",
            ),
            (
                format!(r#"{file},"flow_log_syslog_facility":"local3""#),
                "needs 'flow_log_syslog'",
            ),
        ] {
            let err = load(&extra).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }
}
