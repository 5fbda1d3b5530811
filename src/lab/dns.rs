//! Service discovery in the lab: `netman-dns` on every cell (on 169.254.0.2, the networker's
//! `dns_servers`), reporting the cell's containers to the policy server and answering
//! `*.apps.internal` from its table; and each container's resolver pointed at it through
//! `/etc/netns/<namespace>/resolv.conf`, which `ip netns exec` (how the lab runs everything in a
//! container) mounts over `/etc/resolv.conf`.

use super::components::{Lab, POLICY_INTERNAL_PORT};
use super::topology::{cell_name, CONTROL_IP, INTERNET_HOSTS, PREFIX};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Where containers send every DNS query.
pub const RESOLVER_IP: &str = "169.254.0.2";
/// Where the cells' resolvers forward names outside the internal domains: the "internet" host,
/// which runs no DNS server, so those names fail (SERVFAIL) in the lab.
pub fn upstream() -> String {
    format!("{}:53", INTERNET_HOSTS[0])
}

fn resolv_dir(namespace: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(namespace)
}

/// Points the container namespace's resolver at its cell's `netman-dns`. Must exist before the
/// first process is started in the namespace with `ip netns exec`.
pub fn write_resolv_conf(namespace: &str) -> Result<(), String> {
    let dir = resolv_dir(namespace);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("resolv.conf");
    std::fs::write(
        &path,
        format!("nameserver {RESOLVER_IP}\nsearch apps.internal\noptions timeout:2 attempts:2\n"),
    )
    .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Removes the lab's `/etc/netns/netman-lab-*` directories.
pub fn remove_resolv_confs() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/etc/netns") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .filter_map(|e| {
            std::fs::remove_dir_all(e.path())
                .err()
                .map(|err| format!("removing {}: {err}", e.path().display()))
        })
        .collect()
}

impl Lab {
    /// Starts the cell's `netman-dns` and waits until it answers on 169.254.0.2:53.
    pub fn start_dns(&mut self, cell: usize) -> Result<(), String> {
        let dir = self.dir.join(format!("cell-{cell}"));
        let certs = self.dir.join("certs");
        let s = |p: PathBuf| p.display().to_string();
        let config = dir.join("netman-dns.json");
        let value = json!({
            "listen_address": RESOLVER_IP,
            // The loopback device: a dummy device needs a kernel module the lab cannot count on.
            "listen_device": "lo",
            "upstreams": [upstream()],
            "upstream_timeout_ms": 500,
            "policy_server_url": format!("https://{CONTROL_IP}:{POLICY_INTERNAL_PORT}"),
            "ca_cert_file": s(certs.join("ca.crt")),
            "client_cert_file": s(certs.join("policy-agent.crt")),
            "client_key_file": s(certs.join("policy-agent.key")),
            "cell_id": format!("lab-cell-{cell}"),
            "container_store": s(dir.join("container-metadata/store.json")),
            "snapshot_file": s(dir.join("dns-snapshot")),
            "refresh_interval_seconds": 5,
        });
        std::fs::write(&config, serde_json::to_string_pretty(&value).unwrap())
            .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let ns = cell_name(cell);
        let p = self.start_process(&format!("netman-dns-{cell}"), &ns, "netman-dns", &config)?;
        super::process::wait_until(&p, Duration::from_secs(30), || {
            super::components::tcp_open(&ns, &format!("{RESOLVER_IP}:53"))
        })
    }
}
