//! Starts the real `policy-server` binary with certificates generated for the test, a config
//! written for it, and free loopback ports.

pub use super::certs::{certs, Certs, POLICY_SERVER};
pub use super::ports::free_port;
use super::proc::Proc;
use super::wait::poll;

use netman::http::client::{agent, body_string, ClientTls};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "admin-token";
pub const WRITE_TOKEN: &str = "write-token";
pub const READ_TOKEN: &str = "no-scope-token";

/// A response body as JSON (the body in the panic message otherwise).
pub fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// One listed policy: source, destination, protocol, start port, end port.
pub type Row = (String, String, String, i64, i64);

/// The policies of a list answer, sorted; `total_policies` must count them.
pub fn policy_rows(body: &str) -> Vec<Row> {
    let v = parse(body);
    let list = v["policies"].as_array().unwrap();
    assert_eq!(v["total_policies"].as_u64().unwrap() as usize, list.len());
    let mut out: Vec<Row> = list
        .iter()
        .map(|p| {
            let d = &p["destination"];
            (
                p["source"]["id"].as_str().unwrap().to_string(),
                d["id"].as_str().unwrap().to_string(),
                d["protocol"].as_str().unwrap().to_string(),
                d["ports"]["start"].as_i64().unwrap(),
                d["ports"]["end"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A static tokens file: admin, writer (network.write) and a token without network scopes.
pub fn write_tokens_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.json");
    let tokens = json!({
        ADMIN_TOKEN: {"subject": "admin-id", "user_name": "admin", "scopes": ["network.admin"]},
        WRITE_TOKEN: {"subject": "dev-id", "user_name": "dev", "scopes": ["network.write"]},
        READ_TOKEN: {"subject": "reader-id", "user_name": "reader", "scopes": ["openid"]},
    });
    std::fs::write(&path, tokens.to_string()).unwrap();
    path
}

/// A config on free loopback ports with static-token auth and the given `database` section.
pub fn base_config(certs: &Certs, tokens: &Path, database: &Value) -> Value {
    let (listen, internal, debug) = (free_port(), free_port(), free_port());
    json!({
        "listen_host": "127.0.0.1",
        "listen_port": listen,
        "internal_listen_host": "127.0.0.1",
        "internal_listen_port": internal,
        "debug_server_port": debug,
        "ca_cert_file": certs.ca,
        "server_cert_file": certs.server.0,
        "server_key_file": certs.server.1,
        "database": database,
        "auth": {"mode": "tokens", "tokens_file": tokens},
    })
}

pub struct PolicyServer {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub config_path: PathBuf,
    pub config: Value,
    pub external: String,
    pub internal: String,
    pub debug: String,
    child: Option<Proc>,
}

impl PolicyServer {
    /// A server on SQLite with static-token auth; `patch` edits the config before start.
    pub fn start_with(patch: impl FnOnce(&mut Value, &Path)) -> PolicyServer {
        let mut server = Self::configure(patch);
        server.spawn();
        server
    }

    /// Like [`PolicyServer::start_with`], without starting it: [`PolicyServer::spawn`] starts it,
    /// [`PolicyServer::command`] runs one of its subcommands on the same config.
    pub fn configure(patch: impl FnOnce(&mut Value, &Path)) -> PolicyServer {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs(dir.path(), &POLICY_SERVER);
        let tokens = write_tokens_file(dir.path());
        let database =
            json!({"type": "sqlite", "connection_string": dir.path().join("policies.db")});
        let mut config = base_config(&certs, &tokens, &database);
        patch(&mut config, dir.path());
        let config_path = dir.path().join("policy-server.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let scheme = if config["enable_tls"] == json!(true) {
            "https"
        } else {
            "http"
        };
        PolicyServer {
            external: format!("{scheme}://127.0.0.1:{}", config["listen_port"]),
            internal: format!("https://127.0.0.1:{}", config["internal_listen_port"]),
            debug: format!("http://127.0.0.1:{}", config["debug_server_port"]),
            config_path,
            config,
            certs,
            dir,
            child: None,
        }
    }

    /// Runs `policy-server <args> --config <its config>` to the end: (success, stdout, stderr).
    pub fn command(&self, args: &[&str]) -> (bool, String, String) {
        self.command_with_input(args, None)
    }

    /// [`PolicyServer::command`] with `input` on standard input.
    pub fn command_with_input(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> (bool, String, String) {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_policy-server"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(bytes) = input {
            stdin.write_all(bytes).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts the server expecting it to refuse: it must exit with a failure within 60 s;
    /// returns what it wrote on standard error.
    pub fn start_refused(&self) -> String {
        let mut child = Command::new(env!("CARGO_BIN_EXE_policy-server"))
            .arg("--config")
            .arg(&self.config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(
                    !status.success(),
                    "policy-server exited successfully: {err}"
                );
                return err;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("policy-server did not refuse to start within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn start() -> PolicyServer {
        Self::start_with(|_, _| {})
    }

    pub fn spawn(&mut self) {
        let mut server = Command::new(env!("CARGO_BIN_EXE_policy-server"));
        server
            .arg("--config")
            .arg(&self.config_path)
            .args(["--log-level", "info"]);
        let log = self.dir.path().join("policy-server.log");
        self.child = Some(Proc::spawn_appending(server, &log));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let (client, health) = (self.client(), format!("{}/health", self.debug));
        let log = self.dir.path().join("policy-server.log");
        let child = self.child.as_mut().unwrap();
        let ready = poll(Duration::from_secs(30), Duration::from_millis(50), || {
            if let Ok(resp) = client.get(&health).call() {
                if resp.status() == 200 {
                    return true;
                }
            }
            if let Some(status) = child.exited() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("policy-server exited with {status}: {log}");
            }
            false
        });
        assert!(ready.is_some(), "policy-server not ready: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("policy-server.log")).unwrap_or_default()
    }

    /// The running server's process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").pid()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.child.take();
    }

    /// SIGTERM (SIGKILL after 10 s), and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.child.take().unwrap().terminate()
    }

    /// The debug server's Prometheus text.
    pub fn metrics(&self) -> String {
        metrics_text(&self.client(), &self.debug)
    }

    /// Requests parked on the internal API (watches), from the debug server's metrics.
    pub fn parked_watches(&self) -> u64 {
        parked_in(&self.metrics())
    }

    /// [`PolicyServer::parked_watches`] as a function another thread can call.
    pub fn parked_watches_probe(&self) -> impl Fn() -> u64 + Send + 'static {
        let (client, debug) = (self.client(), self.debug.clone());
        move || parked_in(&metrics_text(&client, &debug))
    }

    pub fn client(&self) -> ureq::Agent {
        agent(
            &ClientTls {
                ca_cert_file: Some(self.certs.ca.to_string_lossy().into()),
                ..ClientTls::default()
            },
            Duration::from_secs(30),
        )
        .unwrap()
    }

    /// A client presenting the agents' certificate to the internal API.
    pub fn internal_client(&self) -> ureq::Agent {
        self.internal_client_with(&self.certs.client)
    }

    pub fn internal_client_with(&self, cert: &(PathBuf, PathBuf)) -> ureq::Agent {
        agent(
            &ClientTls {
                ca_cert_file: Some(self.certs.ca.to_string_lossy().into()),
                client_cert_file: Some(cert.0.to_string_lossy().into()),
                client_key_file: Some(cert.1.to_string_lossy().into()),
                skip_verification: false,
            },
            Duration::from_secs(30),
        )
        .unwrap()
    }

    /// GET on the external API with a token; (status, body).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.client().get(format!("{}{path}", self.external));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut resp = req.call().unwrap();
        let status = resp.status().as_u16();
        (status, body_string(&mut resp, 64 << 20).unwrap())
    }

    /// POST on the external API with a token; (status, body).
    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let mut req = self.client().post(format!("{}{path}", self.external));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut resp = req
            .header("content-type", "application/json")
            .send(body.as_bytes())
            .unwrap();
        let status = resp.status().as_u16();
        (status, body_string(&mut resp, 64 << 20).unwrap())
    }

    pub fn internal_get(&self, path: &str) -> (u16, String) {
        let mut resp = self
            .internal_client()
            .get(format!("{}{path}", self.internal))
            .call()
            .unwrap();
        let status = resp.status().as_u16();
        (status, body_string(&mut resp, 64 << 20).unwrap())
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A v1 create/delete body.
pub fn v1_body(policies: &[(&str, &str, &str, i64, i64)]) -> String {
    let list: Vec<Value> = policies
        .iter()
        .map(|(s, d, proto, start, end)| {
            json!({"source": {"id": s}, "destination": {"id": d, "protocol": proto, "ports": {"start": start, "end": end}}})
        })
        .collect();
    json!({ "policies": list }).to_string()
}

fn metrics_text(client: &ureq::Agent, debug: &str) -> String {
    let mut resp = client.get(format!("{debug}/metrics")).call().unwrap();
    body_string(&mut resp, 1 << 20).unwrap()
}

/// `policy_server_internal_http_parked_requests` in a Prometheus text.
fn parked_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("policy_server_internal_http_parked_requests "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
