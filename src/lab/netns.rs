//! Named network namespaces for the lab and the tests, made and removed with `ip netns` (under
//! `/run/netns`), and the command runner they use. Not for the daemons: they never create
//! namespaces.

use crate::netns::run_in;
use std::path::PathBuf;
use std::process::Command;

/// A named namespace (`ip netns add`), deleted on drop after killing the processes inside it.
#[derive(Debug)]
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    /// `ip netns add NAME` (a leftover of that name is removed first), with `lo` up.
    pub fn create(name: &str) -> Result<NamedNetns, String> {
        // A leftover from a crashed run is removed first.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(&["ip", "netns", "add", name])?;
        let ns = NamedNetns {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        path(&self.name)
    }

    /// Runs a command inside the namespace; stdout on success, stderr in the error.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        run_in(&self.path(), move || {
            std::fs::write(&path, value).map_err(|e| format!("sysctl {path}: {e}"))
        })?
    }

    /// PIDs of processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The file of the named namespace `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{name}"))
}

/// Runs `args[0]` with the rest as arguments; stdout on success, stderr in the error.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("running {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
