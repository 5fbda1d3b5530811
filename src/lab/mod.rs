//! netman-lab: the whole system on one machine. An underlay of network namespaces, a control host
//! (policy server on SQLite, overlay controller), N cells (overlay daemon, policy agent, netmon,
//! netman-dns, containers created through the garden-external-networker exactly as garden would), and an
//! "internet" host. Everything lives in namespaces the lab creates; `down` removes it all.

pub mod cli;
pub mod commands;
pub mod components;
pub mod dns;
pub mod flows;
pub mod forward;
pub mod netns;
pub mod process;
pub mod topology;

use process::LabProcess;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the lab keeps configs, certificates, databases and logs.
pub fn default_dir() -> PathBuf {
    std::env::var_os("NETMAN_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/netman-lab"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub app: String,
    pub index: usize,
    pub handle: String,
    pub cell: usize,
    pub namespace: String,
    pub ip: String,
    /// (host port on the cell, container port)
    pub mapped_ports: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub cells: usize,
    pub api_port: u16,
    pub admin_token: String,
    pub processes: Vec<LabProcess>,
    pub containers: Vec<Container>,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<State, String> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("no lab state at {} ({e}); is the lab up?", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("lab state {}: {e}", path.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = Self::path(dir);
        std::fs::write(&path, serde_json::to_string_pretty(self).unwrap())
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// `APP` or `APP/INDEX` (default index 0).
    pub fn container(&self, spec: &str) -> Result<&Container, String> {
        let (app, index) = match spec.split_once('/') {
            Some((a, i)) => (
                a,
                i.parse::<usize>()
                    .map_err(|_| format!("bad instance index in {spec:?}"))?,
            ),
            None => (spec, 0),
        };
        self.containers
            .iter()
            .find(|c| c.app == app && c.index == index)
            .ok_or_else(|| {
                let known: Vec<String> = self
                    .containers
                    .iter()
                    .map(|c| format!("{}/{}", c.app, c.index))
                    .collect();
                format!("no container {spec:?}; the lab has {}", known.join(", "))
            })
    }

    pub fn process(&self, name: &str) -> Option<&LabProcess> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// Stops everything the lab started and removes its namespaces and files. Safe to call when
/// nothing (or only part of a crashed lab) exists.
pub fn down(dir: &Path) -> Vec<String> {
    if let Ok(state) = State::load(dir) {
        for p in state.processes.iter().rev() {
            if p.alive() {
                p.stop(Duration::from_secs(3));
            }
        }
    }
    let mut problems = topology::destroy();
    problems.extend(dns::remove_resolv_confs());
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            return [problems, vec![format!("removing {}: {e}", dir.display())]].concat();
        }
    }
    problems
}

pub fn require_root() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("netman-lab needs root: it creates network namespaces, veth pairs and VXLAN devices (inside namespaces only)".into());
    }
    Ok(())
}
