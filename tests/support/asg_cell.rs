//! A cell for dynamic-ASG tests and benches: the networker's fixture (CNI `bridge` +
//! `host-local` unless another chain is asked for), a relay to the policy server's internal
//! API, and the real vxlan-policy-agent in the cell namespace; groups in the internal API's
//! shape for the fake original server.

use super::agent_lab::Relay;
use super::networker_fixture::{tcp_probe, Cell, Container, Plugin, NET_C};
use super::original_wire::{FakeOriginalServer, RsaPki};

/// The agent's trust and identity towards the internal API.
pub struct AgentTls {
    pub ca: PathBuf,
    pub client: (PathBuf, PathBuf),
}

impl From<&RsaPki> for AgentTls {
    fn from(p: &RsaPki) -> AgentTls {
        AgentTls {
            ca: p.ca.clone(),
            client: p.client.clone(),
        }
    }
}

impl From<&super::Certs> for AgentTls {
    fn from(c: &super::Certs) -> AgentTls {
        AgentTls {
            ca: c.ca.clone(),
            client: c.client.clone(),
        }
    }
}
use super::{wait_for, Proc};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FORCE_PORT: u16 = 8722;
pub const RELAY_PORT: u16 = 4003;
/// `nft` arguments that make the ASG table dormant (its base chain unhooked), as a first apply
/// cut short between its two transactions leaves it.
pub const MAKE_DORMANT: [&str; 9] = [
    "add",
    "table",
    "ip",
    "netman_asg",
    "{",
    "flags",
    "dormant",
    ";",
    "}",
];

/// One cell: the networker's fixture, a relay to the policy server and the agent.
pub struct AsgCell {
    pub net: Cell,
    _relay: Relay,
    pub agent: Option<Proc>,
    agent_config: PathBuf,
}

impl AsgCell {
    /// A cell whose agent has `enable_asg_syncing` as given; `patch` edits the agent config.
    pub fn new(
        tls: impl Into<AgentTls>,
        server: std::net::SocketAddr,
        syncing: bool,
        patch: impl FnOnce(&mut Value),
    ) -> AsgCell {
        AsgCell::with_plugin(Plugin::Bridge, tls, server, syncing, patch)
    }

    /// [`AsgCell::new`] with the CNI plugin chain given.
    pub fn with_plugin(
        plugin: Plugin,
        tls: impl Into<AgentTls>,
        server: std::net::SocketAddr,
        syncing: bool,
        patch: impl FnOnce(&mut Value),
    ) -> AsgCell {
        let tls: AgentTls = tls.into();
        let net = Cell::with_config(plugin, |c| {
            c["policy_agent_asg_url"] = json!(format!("http://127.0.0.1:{FORCE_PORT}"));
            c["policy_agent_timeout_seconds"] = json!(10);
        });
        let relay = Relay::start(&net.cell.path(), RELAY_PORT, server);
        let mut config = json!({
            "policy_server_url": format!("https://127.0.0.1:{RELAY_PORT}"),
            "ca_cert_file": tls.ca,
            "client_cert_file": tls.client.0,
            "client_key_file": tls.client.1,
            "cni_datastore_path": net.path("store.json"),
            "client_timeout_seconds": 2,
            "poll_interval_seconds": 1,
            "enable_asg_syncing": syncing,
            "asg_poll_interval_seconds": 1,
            "overlay_network": plugin.overlay_network(),
            "deny_networks": {"always": [format!("{NET_C}/32")]},
        });
        patch(&mut config);
        let agent_config = net.path("vpa.json");
        std::fs::write(&agent_config, config.to_string()).unwrap();
        let mut cell = AsgCell {
            net,
            _relay: relay,
            agent: None,
            agent_config,
        };
        cell.start_agent();
        cell
    }

    pub fn start_agent(&mut self) {
        let log = self.net.path("vpa.log");
        let args = [
            "--config",
            self.agent_config.to_str().unwrap(),
            "--log-level",
            "info",
        ];
        self.agent = Some(Proc::spawn_in(
            &self.net.cell,
            env!("CARGO_BIN_EXE_vxlan-policy-agent"),
            &args,
            &log,
        ));
        let up = super::poll(Duration::from_secs(20), Duration::from_millis(50), || {
            self.net
                .cell
                .exec(&[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "http://127.0.0.1:8721/metrics",
                ])
                .is_ok()
        });
        assert!(up.is_some(), "agent did not come up: {}", self.agent_log());
    }

    /// A GET of the agent's debug port (`/metrics`, `/counters`, ...), as a client on the cell.
    pub fn debug(&self, path: &str) -> String {
        self.net
            .cell
            .exec(&["curl", "-s", &format!("http://127.0.0.1:8721{path}")])
            .unwrap()
    }

    /// The sum of the agent's samples named `name` whose labels contain `labels`.
    pub fn metric_sum(&self, name: &str, labels: &str) -> u64 {
        self.debug("/metrics")
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
            .filter_map(|l| l.split_whitespace().last())
            .map(|v| v.parse::<f64>().unwrap() as u64)
            .sum()
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.net.path("vpa.log")).unwrap_or_default()
    }

    /// A container of `space` with `workload` (`app`, `task`, `staging`) brought up by the
    /// networker; `netout` = garden's static rules.
    pub fn up(&self, handle: &str, space: &str, workload: &str, netout: Value) -> Container {
        self.up_with_ip(handle, space, workload, netout).0
    }

    /// `up`, and the container's IP.
    pub fn up_with_ip(
        &self,
        handle: &str,
        space: &str,
        workload: &str,
        netout: Value,
    ) -> (Container, String) {
        let c = Container::start();
        let input = json!({
            "Pid": c.pid(),
            "Properties": {"app_id": "app-1", "space_id": space, "policy_group_id": "app-1",
                           "container_workload": workload},
            "netin": [],
            "netout_rules": netout,
        });
        let out = self
            .net
            .up(handle, &input)
            .unwrap_or_else(|e| panic!("up {handle}: {e}\nagent: {}", self.agent_log()));
        let ip = out["properties"]["garden.network.container-ip"]
            .as_str()
            .unwrap()
            .to_string();
        (c, ip)
    }

    pub fn http(&self, path: &str) -> (u16, String) {
        let out = self
            .net
            .cell
            .exec(&[
                "curl",
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("http://127.0.0.1:{FORCE_PORT}{path}"),
            ])
            .unwrap();
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        (code.parse().unwrap(), body.to_string())
    }

    pub fn asg_table(&self) -> String {
        self.net
            .cell
            .exec(&["nft", "list", "table", "ip", "netman_asg"])
            .unwrap_or_default()
    }
}

/// A group in the internal API's shape.
pub fn group(guid: &str, rules: Value, running: &[&str], staging: &[&str]) -> Value {
    json!({"guid": guid, "name": format!("name-{guid}"), "rules": rules.to_string(),
           "staging_default": false, "running_default": false,
           "running_space_guids": running, "staging_space_guids": staging})
}

pub fn global(guid: &str, rules: Value, running: bool, staging: bool) -> Value {
    let mut g = group(guid, rules, &[], &[]);
    g["running_default"] = json!(running);
    g["staging_default"] = json!(staging);
    g
}

pub fn set_groups(server: &FakeOriginalServer, groups: &[Value]) {
    server.state.lock().unwrap().security_groups = groups.to_vec();
}

pub fn tcp(ns: &Path, host: &str, port: u16) -> bool {
    tcp_probe(ns, &format!("{host}:{port}")).is_ok()
}

/// Waits until `probe` gives `want` (within 10 s), naming `what`.
pub fn eventually(what: &str, want: bool, probe: impl FnMut() -> bool, cell: &AsgCell) -> Duration {
    wait_for(Duration::from_secs(10), want, probe).unwrap_or_else(|_| {
        panic!(
            "{what}: never {want}\nagent log:\n{}\ntable:\n{}",
            cell.agent_log(),
            cell.asg_table()
        )
    })
}

/// `nft list table` output without what traffic changes: the counted connections' elements
/// and every counter's values.
pub fn without_counts(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    let mut in_elements = false;
    for line in listing.lines() {
        let t = line.trim_start();
        if t.starts_with("elements = {") && t.contains(" counter packets ") {
            in_elements = true;
        }
        if in_elements {
            in_elements = !t.ends_with('}');
            continue;
        }
        let words: Vec<&str> = line.split(' ').collect();
        let mut kept = Vec::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            let after = i.checked_sub(1).map(|j| words[j]);
            let is_count = matches!(after, Some(a) if a.ends_with("packets") || a == "bytes");
            kept.push(if is_count && w.parse::<u64>().is_ok() {
                "_"
            } else {
                w
            });
        }
        out.push_str(&kept.join(" "));
        out.push('\n');
    }
    out
}
