//! netmon: every interval, the cell's interface count, iptables rule count (filter + nat) and the
//! overlay device's tx/rx bytes and drops, as Prometheus metrics and a log line (reference §1.3);
//! and the overlay watchdog, which stops the cell when its VTEP disagrees with its lease.

pub mod app;
pub mod watchdog;

use crate::config::{
    loopback, require_ip, require_nonempty, require_port, require_positive, u16_default,
    u64_default, Validate,
};
use crate::metrics::Registrar;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetmonConfig {
    #[serde(default = "u64_default::<30>")]
    pub poll_interval_seconds: u64,
    /// The overlay (VXLAN) device whose counters are reported.
    #[serde(default = "default_interface")]
    pub interface_name: String,
    #[serde(default = "loopback")]
    pub debug_server_host: String,
    #[serde(default = "u16_default::<22234>")]
    pub debug_server_port: u16,
    /// `iptables-save`, or the path of another binary with its output format.
    #[serde(default = "default_iptables_save")]
    pub iptables_save: String,
    /// Where interface statistics are read from (the namespace's sysfs).
    #[serde(default = "default_sys_class_net")]
    pub sys_class_net: PathBuf,
}

fn default_interface() -> String {
    crate::netmon::DEFAULT_VTEP.into()
}
fn default_iptables_save() -> String {
    "iptables-save".into()
}
fn default_sys_class_net() -> PathBuf {
    PathBuf::from("/sys/class/net")
}

/// The overlay device name netman's overlay daemon creates.
pub const DEFAULT_VTEP: &str = crate::cell::DEFAULT_VTEP;

impl Validate for NetmonConfig {
    fn validate(&self) -> Result<(), String> {
        require_positive("poll_interval_seconds", self.poll_interval_seconds)?;
        require_nonempty("interface_name", &self.interface_name)?;
        if self.interface_name.len() > 15 || self.interface_name.contains('/') {
            return Err(format!(
                "invalid 'interface_name': {:?} is not a Linux interface name",
                self.interface_name
            ));
        }
        let host = require_ip("debug_server_host", &self.debug_server_host)?;
        if !host.is_loopback() {
            return Err(format!(
                "invalid 'debug_server_host': {host} is not a loopback address"
            ));
        }
        require_port("debug_server_port", self.debug_server_port)?;
        require_nonempty("iptables_save", &self.iptables_save)?;
        Ok(())
    }
}

/// One reading of the cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub interfaces: u64,
    pub iptables_rules: u64,
    /// `None` when the overlay device does not exist (yet).
    pub overlay: Option<DeviceCounters>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_dropped: u64,
    pub rx_dropped: u64,
}

pub fn count_interfaces(sys_class_net: &Path) -> Result<u64, String> {
    let entries = std::fs::read_dir(sys_class_net)
        .map_err(|e| format!("reading {}: {e}", sys_class_net.display()))?;
    Ok(entries.filter_map(Result::ok).count() as u64)
}

pub fn device_counters(
    sys_class_net: &Path,
    device: &str,
) -> Result<Option<DeviceCounters>, String> {
    let stats = sys_class_net.join(device).join("statistics");
    if !stats.exists() {
        return Ok(None);
    }
    let read = |name: &str| -> Result<u64, String> {
        let path = stats.join(name);
        std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("parsing {}: {e}", path.display()))
    };
    Ok(Some(DeviceCounters {
        tx_bytes: read("tx_bytes")?,
        rx_bytes: read("rx_bytes")?,
        tx_dropped: read("tx_dropped")?,
        rx_dropped: read("rx_dropped")?,
    }))
}

/// Rules (`-A` lines) in the filter and nat tables, as `iptables-save` lists them.
pub fn count_iptables_rules(iptables_save: &str) -> Result<u64, String> {
    let mut total = 0;
    for table in ["filter", "nat"] {
        let out = Command::new(iptables_save)
            .args(["-t", table])
            .output()
            .map_err(|e| format!("running {iptables_save} -t {table}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{iptables_save} -t {table} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        total += count_rules_in(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(total)
}

pub fn count_rules_in(save_output: &str) -> u64 {
    save_output.lines().filter(|l| l.starts_with("-A ")).count() as u64
}

pub fn sample(config: &NetmonConfig) -> Result<Sample, String> {
    Ok(Sample {
        interfaces: count_interfaces(&config.sys_class_net)?,
        iptables_rules: count_iptables_rules(&config.iptables_save)?,
        overlay: device_counters(&config.sys_class_net, &config.interface_name)?,
    })
}

/// The gauges netmon exports (names documented in `docs/metrics.md`).
#[derive(Clone)]
pub struct NetmonMetrics {
    pub interfaces: Gauge,
    pub iptables_rules: Gauge,
    pub overlay_tx_bytes: Gauge,
    pub overlay_rx_bytes: Gauge,
    pub overlay_tx_dropped: Gauge,
    pub overlay_rx_dropped: Gauge,
    pub sample_errors: Gauge,
}

impl NetmonMetrics {
    pub fn register(registry: &mut Registry) -> NetmonMetrics {
        let mut r = Registrar::new(registry, "netmon");
        NetmonMetrics {
            interfaces: r.metric("interfaces", "Network interfaces in the cell's namespace"),
            iptables_rules: r.metric(
                "iptables_rules",
                "iptables rules in the filter and nat tables",
            ),
            overlay_tx_bytes: r.metric("overlay_tx_bytes", "Bytes sent by the overlay device"),
            overlay_rx_bytes: r.metric("overlay_rx_bytes", "Bytes received by the overlay device"),
            overlay_tx_dropped: r.metric(
                "overlay_tx_dropped",
                "Packets dropped on send by the overlay device",
            ),
            overlay_rx_dropped: r.metric(
                "overlay_rx_dropped",
                "Packets dropped on receive by the overlay device",
            ),
            sample_errors: r.metric("sample_errors", "Consecutive failed samples"),
        }
    }

    pub fn record(&self, s: &Sample) {
        self.interfaces.set(s.interfaces as i64);
        self.iptables_rules.set(s.iptables_rules as i64);
        let o = s.overlay.clone().unwrap_or_default();
        self.overlay_tx_bytes.set(o.tx_bytes as i64);
        self.overlay_rx_bytes.set(o.rx_bytes as i64);
        self.overlay_tx_dropped.set(o.tx_dropped as i64);
        self.overlay_rx_dropped.set(o.rx_dropped as i64);
        self.sample_errors.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_rules() {
        let save =
            "*filter\n:INPUT ACCEPT [0:0]\n:x - [0:0]\n-A INPUT -j x\n-A x -j ACCEPT\nCOMMIT\n";
        assert_eq!(count_rules_in(save), 2);
    }

    #[test]
    fn missing_device_is_none_and_counters_parse() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(device_counters(dir.path(), "vtep").unwrap(), None);
        let stats = dir.path().join("vtep/statistics");
        std::fs::create_dir_all(&stats).unwrap();
        for (f, v) in [
            ("tx_bytes", "10"),
            ("rx_bytes", "20\n"),
            ("tx_dropped", "1"),
            ("rx_dropped", "2"),
        ] {
            std::fs::write(stats.join(f), v).unwrap();
        }
        let c = device_counters(dir.path(), "vtep").unwrap().unwrap();
        assert_eq!(
            (c.tx_bytes, c.rx_bytes, c.tx_dropped, c.rx_dropped),
            (10, 20, 1, 2)
        );
        std::fs::write(stats.join("tx_bytes"), "x").unwrap();
        assert!(device_counters(dir.path(), "vtep")
            .unwrap_err()
            .contains("tx_bytes"));
    }
}
