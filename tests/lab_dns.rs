//! Service discovery on the lab, as the README walks through it: a route mapped with the real
//! `netman` CLI resolves inside another cell's container through that cell's `netman-dns`, the
//! name grants nothing until `allow-access`, and a cell taken out takes its instances with it.
//! Needs root; brings up and removes the whole lab (namespaces `netman-lab-*`).

mod support;
use std::process::Command;
use std::time::Duration;
use support::{free_port, wait_until};

struct Lab {
    dir: tempfile::TempDir,
    api: String,
    token: String,
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

impl Lab {
    fn lab(&self, args: &[&str]) -> (bool, String) {
        run(Command::new(env!("CARGO_BIN_EXE_netman-lab"))
            .arg("--dir")
            .arg(self.dir.path())
            .args(args))
    }

    fn netman(&self, args: &[&str]) -> (bool, String) {
        run(Command::new(env!("CARGO_BIN_EXE_netman"))
            .env("NETMAN_API", &self.api)
            .env("NETMAN_TOKEN", &self.token)
            .args(args))
    }

    /// Runs `command` inside a container, as the README does.
    fn exec(&self, container: &str, command: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", container, "--"];
        args.extend_from_slice(command);
        self.lab(&args)
    }

    fn ip(&self, app: &str) -> String {
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

    fn resolves(&self, name: &str) -> Vec<String> {
        let (_, out) = self.exec("frontend", &["getent", "ahostsv4", name]);
        let mut ips: Vec<String> = out
            .lines()
            .filter(|l| l.contains("STREAM"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.lab(&["down"]);
    }
}

#[test]
fn names_resolve_in_the_lab_and_grant_nothing() {
    let port = free_port();
    let mut lab = Lab {
        dir: tempfile::tempdir().unwrap(),
        api: format!("http://127.0.0.1:{port}"),
        token: String::new(),
    };
    let (ok, out) = lab.lab(&[
        "up",
        "--cells",
        "2",
        "--apps",
        "3",
        "--api-port",
        &port.to_string(),
    ]);
    assert!(ok, "{out}");
    lab.token = lab.lab(&["token"]).1.trim().to_string();
    let (backend, backend2) = (lab.ip("backend"), lab.ip("backend-2"));

    let (ok, out) = lab.netman(&[
        "map-route",
        "backend",
        "apps.internal",
        "--hostname",
        "backend",
    ]);
    assert!(ok, "{out}");
    // frontend is on cell 1, backend on cell 2.
    wait_until(
        "backend.apps.internal resolves in frontend",
        Duration::from_secs(10),
        || lab.resolves("backend.apps.internal") == vec![backend.clone()],
    );
    // A name is not a permission.
    let url = "http://backend.apps.internal:8080";
    let (ok, out) = lab.exec("frontend", &["curl", "-sS", "-m", "3", url]);
    assert!(!ok, "reached backend without a policy: {out}");
    assert!(
        out.contains("Failed to connect") || out.contains("refused"),
        "{out}"
    );
    let (ok, out) = lab.netman(&[
        "allow-access",
        "frontend",
        "backend",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    assert!(ok, "{out}");
    wait_until(
        "frontend reaches backend by name",
        Duration::from_secs(10),
        || {
            let (ok, out) = lab.exec("frontend", &["curl", "-sS", "-m", "3", url]);
            ok && out.contains("\"application_name\":\"backend\"")
        },
    );
    // The short name through the search domain, one instance by index, unknown names.
    assert_eq!(lab.resolves("backend"), vec![backend.clone()]);
    assert_eq!(
        lab.resolves("0.backend.apps.internal"),
        vec![backend.clone()]
    );
    assert!(lab.resolves("nothing.apps.internal").is_empty());

    // A second app under the same name (backend-2, on cell 1): both resolve.
    let (ok, out) = lab.netman(&[
        "map-route",
        "backend-2",
        "apps.internal",
        "--hostname",
        "backend",
    ]);
    assert!(ok, "{out}");
    let mut both = vec![backend.clone(), backend2.clone()];
    both.sort();
    wait_until("both apps under one name", Duration::from_secs(10), || {
        lab.resolves("backend.apps.internal") == both
    });

    // Cell 2 taken out (its containers destroyed through the networker): backend is gone from
    // the name at once, backend-2 stays.
    let (ok, out) = lab.lab(&["remove-cell", "2"]);
    assert!(ok, "{out}");
    wait_until(
        "backend gone with its cell",
        Duration::from_secs(10),
        || lab.resolves("backend.apps.internal") == vec![backend2.clone()],
    );

    let (ok, out) = lab.lab(&["down"]);
    assert!(ok, "{out}");
    let leftovers: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("netman-lab-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
