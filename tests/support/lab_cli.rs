//! The whole lab driven as the README does: `netman-lab` and `netman` run as commands. The lab's
//! namespaces have fixed names (`netman-lab-*`): one such lab at a time; `Drop` takes it down.

use super::free_port;
use std::process::Command;

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub api: String,
    pub token: String,
}

pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

impl Lab {
    /// `netman-lab up` with `cells` cells and `apps` example apps, and the admin token.
    pub fn up(cells: usize, apps: usize) -> Lab {
        let port = free_port();
        let mut lab = Lab {
            dir: tempfile::tempdir().unwrap(),
            api: format!("http://127.0.0.1:{port}"),
            token: String::new(),
        };
        let (ok, out) = lab.lab(&[
            "up",
            "--cells",
            &cells.to_string(),
            "--apps",
            &apps.to_string(),
            "--api-port",
            &port.to_string(),
        ]);
        assert!(ok, "{out}");
        lab.token = lab.lab(&["token"]).1.trim().to_string();
        lab
    }

    pub fn lab(&self, args: &[&str]) -> (bool, String) {
        run(Command::new(env!("CARGO_BIN_EXE_netman-lab"))
            .arg("--dir")
            .arg(self.dir.path())
            .args(args))
    }

    pub fn netman(&self, args: &[&str]) -> (bool, String) {
        run(Command::new(env!("CARGO_BIN_EXE_netman"))
            .env("NETMAN_API", &self.api)
            .env("NETMAN_TOKEN", &self.token)
            .args(args))
    }

    /// Runs `command` inside a container, as the README does.
    pub fn exec(&self, container: &str, command: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", container, "--"];
        args.extend_from_slice(command);
        self.lab(&args)
    }

    pub fn ip(&self, app: &str) -> String {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.dir.path().join("state.json")).unwrap(),
        )
        .unwrap();
        state["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["app"] == app)
            .unwrap()["ip"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.lab(&["down"]);
    }
}
