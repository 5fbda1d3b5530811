//! Network namespaces: run code inside one (on a dedicated thread, since `setns` is per thread),
//! and named namespaces under /run/netns for tests and the lab.

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `f` on a new thread that has entered the network namespace at `path`.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = File::open(path).map_err(|e| format!("open netns {}: {e}", path.display()))?;
    let shown = path.display().to_string();
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {shown}: {e}"))?;
        Ok(f())
    })
    .join()
    .map_err(|_| "thread inside netns panicked".to_string())?
}

/// A named namespace (`ip netns add`), deleted on drop after killing the processes inside it.
#[derive(Debug)]
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
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
        PathBuf::from(format!("/run/netns/{}", self.name))
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
