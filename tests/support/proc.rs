//! A daemon a test starts: its child process and log file, killed on drop.

use super::wait::poll;
use netman::lab::netns::NamedNetns;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `command` with stdout and stderr written to `log` (made anew).
    pub fn spawn(command: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        Proc::start(command, out, log)
    }

    /// Like [`Proc::spawn`], appending to `log`: a restarted daemon's log keeps the earlier runs.
    pub fn spawn_appending(command: Command, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        Proc::start(command, out, log)
    }

    fn start(mut command: Command, out: std::fs::File, log: &Path) -> Proc {
        let err = out.try_clone().unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Starts `bin args...` inside `ns` (`ip netns exec`, which execs: the child is the daemon).
    pub fn spawn_in(ns: &NamedNetns, bin: &str, args: &[&str], log: &Path) -> Proc {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &ns.name, bin]).args(args);
        Proc::spawn(command, log)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s; the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let mut status = None;
        poll(Duration::from_secs(10), Duration::from_millis(20), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap_or_else(|| {
            let _ = self.child.kill();
            self.child.wait().unwrap()
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to its end with `input` on its stdin; its status, stdout and stderr.
pub fn run_with_stdin(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `command` to its end; it must exit 0 (else a panic naming `what`, with its stderr).
pub fn output_ok(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: starting {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `bin args...` inside `ns`, logging to `log`.
pub fn spawn_in(ns: &NamedNetns, bin: &str, args: &[&str], log: &Path) -> Proc {
    Proc::spawn_in(ns, bin, args, log)
}
