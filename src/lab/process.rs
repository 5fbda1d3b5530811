//! Processes the lab starts inside its namespaces, each with its log file, recorded by name and
//! PID so `status` and `down` find them.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabProcess {
    pub name: String,
    pub namespace: String,
    pub pid: u32,
    pub log: PathBuf,
    pub command: Vec<String>,
}

impl LabProcess {
    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    }

    pub fn kill(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&self, grace: Duration) {
        self.kill(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.alive() {
            self.kill(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Starts `program args...` inside `namespace`, detached, logging to `<log_dir>/<name>.log`.
pub fn spawn(
    name: &str,
    namespace: &str,
    program: &Path,
    args: &[String],
    log_dir: &Path,
) -> Result<LabProcess, String> {
    std::fs::create_dir_all(log_dir).map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
    let log = log_dir.join(format!("{name}.log"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut command = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        namespace.into(),
        program.display().to_string(),
    ];
    command.extend(args.iter().cloned());
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    // `ip netns exec` execs the program, so the child's PID is the program's.
    let p = LabProcess {
        name: name.to_string(),
        namespace: namespace.to_string(),
        pid: child.id(),
        log,
        command,
    };
    wait_in_namespace(&p, &mut child)?;
    Ok(p)
}

/// Waits until the process is inside its namespace. `ip netns exec` switches namespace only
/// after it started: until then the PID's namespace is the machine's, and whoever is handed the
/// PID (the networker, CNI) would act on the machine's own network.
fn wait_in_namespace(p: &LabProcess, child: &mut std::process::Child) -> Result<(), String> {
    let target = crate::netns::identity(&super::netns::path(&p.namespace))
        .map_err(|e| format!("{}: {e}", p.name))?;
    let own = Path::new("/proc").join(p.pid.to_string()).join("ns/net");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if crate::netns::identity(&own).ok() == Some(target) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before it entered namespace {}; last log lines:\n{}",
                p.name,
                p.namespace,
                tail(&p.log, 15)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} (pid {}) not in namespace {} after 10 s",
                p.name, p.pid, p.namespace
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `check` passes, the process exits (error with its log's tail), or `timeout`.
pub fn wait_until(
    process: &LabProcess,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        if !process.alive() {
            return Err(format!(
                "{} exited; last log lines:\n{}",
                process.name,
                tail(&process.log, 15)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} not ready after {timeout:?}; last log lines:\n{}",
                process.name,
                tail(&process.log, 15)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts a recorded process again with the same command line and log file.
pub fn respawn(p: &LabProcess) -> Result<LabProcess, String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .map_err(|e| format!("opening {}: {e}", p.log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(&p.command[0])
        .args(&p.command[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", p.name))?;
    let again = LabProcess {
        pid: child.id(),
        ..p.clone()
    };
    wait_in_namespace(&again, &mut child)?;
    Ok(again)
}
