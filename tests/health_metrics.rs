//! Every long-running binary, started with a valid config inside a network namespace the test
//! creates (policy-server, overlay-controller, overlay-daemon, vxlan-policy-agent and netmon all in
//! the same one, talking to each other over its loopback), answers `/health` and `/metrics` on
//! its debug port, exposes exactly the metric names `docs/metrics.md` lists for it, changes its
//! log level at runtime, and exits 0 on SIGTERM. At the default log level each logs its start
//! with its listen addresses and its stop (RFC 3339 timestamps), and no per-request line.

mod support;
use support::proc::output_ok;
use support::{poll, unique, Proc};

use netman::lab::netns::NamedNetns;
use netman::netns;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// docs/metrics.md's metric table: binary -> metric names, and the names of labelled families
/// or of families that may be absent (Prometheus shows a labelled family only once it has a first
/// series; a binary registers some families only when a config key is on).
fn documented() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut labelled = BTreeSet::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | binary | meaning |
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`');
        assert!(
            ["gauge", "counter", "histogram"].contains(&cells[2]),
            "docs/metrics.md: {name} has type {:?}",
            cells[2]
        );
        // `binary (`key`)`: registered only when that config key is on, so it may be absent here.
        let (binary, conditional) = match cells[3].split_once(" (") {
            Some((binary, _)) => (binary, true),
            None => (cells[3], false),
        };
        assert!(
            out.entry(binary.to_string())
                .or_default()
                .insert(name.to_string()),
            "docs/metrics.md lists {name} twice"
        );
        if conditional || cells[4].contains("label") {
            labelled.insert(name.to_string());
        }
    }
    (out, labelled)
}

/// `GET path` on 127.0.0.1:port inside the namespace: (status, body).
fn http(
    ns: &Path,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    netns::run_in(ns, move || -> Result<(u16, String), String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
        let status = raw
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad response {raw:?}"))?;
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        Ok((status, body.to_string()))
    })?
}

/// A daemon under test: its binary's name (as docs/metrics.md lists it) and its process.
struct Daemon {
    name: &'static str,
    proc: Proc,
}

impl Daemon {
    fn log(&self) -> String {
        self.proc.log_text()
    }

    /// SIGTERM, then the exit status must be 0 within 10 s.
    fn stop_cleanly(&mut self) {
        let status = self.proc.terminate();
        assert!(
            status.success(),
            "{} exited with {status} on SIGTERM (killed if not within 10 s)\n{}",
            self.name,
            self.log()
        );
    }
}

fn start(
    ns: &NamedNetns,
    dir: &Path,
    name: &'static str,
    binary: &str,
    config: &serde_json::Value,
) -> Daemon {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    let mut check = Command::new(binary);
    check.arg("--config").arg(&path).arg("--check-config");
    output_ok(&mut check, name);
    let path = path.to_str().unwrap();
    let args = ["--config", path, "--log-format", "json"];
    Daemon {
        name,
        proc: Proc::spawn_in(ns, binary, &args, &dir.join(format!("{name}.log"))),
    }
}

fn wait_healthy(ns: &NamedNetns, p: &mut Daemon, port: u16) {
    let healthy = poll(Duration::from_secs(60), Duration::from_millis(100), || {
        if let Some(status) = p.proc.exited() {
            panic!("{} exited with {status}\n{}", p.name, p.log());
        }
        matches!(http(&ns.path(), port, "GET", "/health", ""), Ok((200, _)))
    });
    assert!(
        healthy.is_some(),
        "{} not healthy within 60 s\n{}",
        p.name,
        p.log()
    );
}

/// The metric family names of a /metrics answer (its `# TYPE` lines).
fn exposed(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_long_running_binary_serves_health_metrics_and_log_level() {
    let (doc, labelled) = documented();
    let ns = NamedNetns::create(&unique("nm-hm-")).unwrap();
    ns.exec(&["ip", "link", "set", "lo", "up"]).unwrap();
    ns.exec(&[
        "ip",
        "link",
        "add",
        "underlay0",
        "type",
        "veth",
        "peer",
        "name",
        "underlay1",
    ])
    .unwrap();
    ns.exec(&["ip", "link", "set", "underlay1", "up"]).unwrap();
    ns.exec(&["ip", "addr", "add", "192.0.2.10/24", "dev", "underlay0"])
        .unwrap();
    ns.exec(&["ip", "link", "set", "underlay0", "up"]).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = dir.join("certs");
    let out = Command::new(root().join("scripts/generate-certs"))
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = |f: &str| certs.join(f).display().to_string();
    let d = |f: &str| dir.join(f).display().to_string();
    std::fs::write(
        dir.join("tokens.json"),
        json!({"admin-token": {"subject": "admin", "user_name": "admin", "scopes": ["network.admin"]}})
            .to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("container-metadata")).unwrap();

    // (name, debug port, process); started in dependency order.
    let mut procs: Vec<(u16, Daemon)> = Vec::new();
    let mut p = start(
        &ns,
        dir,
        "policy-server",
        env!("CARGO_BIN_EXE_policy-server"),
        &json!({
            "listen_host": "127.0.0.1",
            "internal_listen_host": "127.0.0.1",
            "ca_cert_file": c("ca.crt"),
            "server_cert_file": c("policy-server.crt"),
            "server_key_file": c("policy-server.key"),
            "database": {"type": "sqlite", "connection_string": d("policy.db")},
            "auth": {"mode": "tokens", "tokens_file": d("tokens.json")},
        }),
    );
    wait_healthy(&ns, &mut p, 31821);
    procs.push((31821, p));
    let mut p = start(
        &ns,
        dir,
        "overlay-controller",
        env!("CARGO_BIN_EXE_overlay-controller"),
        &json!({
            "listen_host": "127.0.0.1",
            "ca_cert_file": c("ca.crt"),
            "server_cert_file": c("overlay-controller.crt"),
            "server_key_file": c("overlay-controller.key"),
            "database": {"type": "sqlite", "connection_string": d("leases.db")},
        }),
    );
    wait_healthy(&ns, &mut p, 46455);
    procs.push((46455, p));
    let mut p = start(
        &ns,
        dir,
        "overlay-daemon",
        env!("CARGO_BIN_EXE_overlay-daemon"),
        &json!({
            "underlay_ip": "192.0.2.10",
            "controller_url": "https://127.0.0.1:4103",
            "ca_cert_file": c("ca.crt"),
            "client_cert_file": c("overlay-daemon.crt"),
            "client_key_file": c("overlay-daemon.key"),
            "plugin_data_dir": d("overlay"),
        }),
    );
    wait_healthy(&ns, &mut p, 22233);
    procs.push((22233, p));
    let mut p = start(
        &ns,
        dir,
        "vxlan-policy-agent",
        env!("CARGO_BIN_EXE_vxlan-policy-agent"),
        &json!({
            "policy_server_url": "https://127.0.0.1:4003",
            "ca_cert_file": c("ca.crt"),
            "client_cert_file": c("policy-agent.crt"),
            "client_key_file": c("policy-agent.key"),
            "cni_datastore_path": d("container-metadata/store.json"),
        }),
    );
    wait_healthy(&ns, &mut p, 8721);
    procs.push((8721, p));
    let mut p = start(
        &ns,
        dir,
        "netmon",
        env!("CARGO_BIN_EXE_netmon"),
        &json!({"poll_interval_seconds": 1}),
    );
    wait_healthy(&ns, &mut p, 22234);
    procs.push((22234, p));
    let mut p = start(
        &ns,
        dir,
        "netman-dns",
        env!("CARGO_BIN_EXE_netman-dns"),
        &json!({
            "listen_address": "127.0.0.53",
            "listen_port": 5353,
            "upstreams": ["127.0.0.1:5354"],
            "policy_server_url": "https://127.0.0.1:4003",
            "ca_cert_file": c("ca.crt"),
            "client_cert_file": c("policy-agent.crt"),
            "client_key_file": c("policy-agent.key"),
            "cell_id": "cell-1",
            "container_store": d("container-metadata/store.json"),
            "snapshot_file": d("dns-table.json"),
        }),
    );
    wait_healthy(&ns, &mut p, 8065);
    procs.push((8065, p));

    // One external API call, so that the policy server's external request families have a series.
    let (status, _) = http(
        &ns.path(),
        4002,
        "GET",
        "/networking/v1/external/policies",
        "",
    )
    .unwrap();
    assert_eq!(status, 401, "external API without a token");
    let mut covered = BTreeSet::new();
    let mut labelled_seen = BTreeSet::new();
    for (port, p) in &mut procs {
        let (status, body) = http(&ns.path(), *port, "GET", "/metrics", "").unwrap();
        assert_eq!(status, 200, "{}: /metrics", p.name);
        let want = doc
            .get(p.name)
            .unwrap_or_else(|| panic!("docs/metrics.md lists no metric of {}", p.name));
        let got = exposed(&body);
        let undocumented: Vec<_> = got.difference(want).collect();
        let missing: Vec<_> = want
            .difference(&got)
            .filter(|m| !labelled.contains(*m))
            .collect();
        assert!(
            undocumented.is_empty() && missing.is_empty(),
            "{}: exposed but not in docs/metrics.md: {undocumented:?}; documented but not exposed: {missing:?}\n{body}",
            p.name
        );
        // Runtime log level.
        let (status, _) = http(&ns.path(), *port, "POST", "/log-level", "debug").unwrap();
        assert_eq!(status, 204, "{}: POST /log-level", p.name);
        let (_, level) = http(&ns.path(), *port, "GET", "/log-level", "").unwrap();
        assert!(
            level.contains("debug"),
            "{}: /log-level says {level:?}",
            p.name
        );
        labelled_seen.extend(got.intersection(&labelled).cloned());
        covered.insert(p.name.to_string());
    }
    eprintln!(
        "labelled families without a series yet: {:?}",
        labelled.difference(&labelled_seen).collect::<Vec<_>>()
    );
    // Every binary the doc lists was started here.
    assert_eq!(covered, doc.keys().cloned().collect::<BTreeSet<_>>());
    // netmon reads the overlay device the daemon made in this namespace.
    let (_, body) = http(&ns.path(), 22234, "GET", "/metrics", "").unwrap();
    assert!(
        body.lines()
            .any(|l| l.starts_with("netmon_interfaces ") && l != "netmon_interfaces 0"),
        "{body}"
    );
    // JSON logs on request: every line each process wrote is a JSON object.
    for (port, p) in procs.iter_mut().rev() {
        p.stop_cleanly();
        let lines: Vec<serde_json::Value> = p
            .log()
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: log line {line:?} is not JSON: {e}", p.name));
                assert!(v.is_object(), "{}: {line}", p.name);
                v
            })
            .collect();
        check_default_level_lines(p.name, *port, &lines);
    }
}

/// `2026-12-06T03:50:13.123Z`: digits where the pattern has `d`, the rest as in it.
fn is_rfc3339_utc_millis(t: &str) -> bool {
    let pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
    t.len() == pattern.len()
        && t.chars()
            .zip(pattern.chars())
            .all(|(c, p)| if p == 'd' { c.is_ascii_digit() } else { c == p })
}

/// Until the test switched it to debug, a process at the default level logged its start with
/// the debug address, nothing at debug and no request; then its stop.
fn check_default_level_lines(name: &str, debug_port: u16, lines: &[serde_json::Value]) {
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
    for v in lines {
        let t = text(v, "timestamp");
        assert!(is_rfc3339_utc_millis(&t), "{name}: timestamp {t:?}");
    }
    let switched = lines
        .iter()
        .position(|v| text(v, "message") == "log level set to DEBUG")
        .unwrap_or_else(|| panic!("{name}: no line of the level change: {lines:?}"));
    let before = &lines[..switched];
    let started = before
        .iter()
        .find(|v| text(v, "message").starts_with("started: "))
        .unwrap_or_else(|| panic!("{name}: no start line at the default level: {before:?}"));
    assert_eq!(text(started, "level"), "info", "{name}: {started}");
    assert!(
        text(started, "message").contains(&format!("127.0.0.1:{debug_port}")),
        "{name}: the start line names the debug address: {started}"
    );
    for v in before {
        assert_ne!(text(v, "level"), "debug", "{name}: {v}");
        assert!(
            !text(v, "message").contains("/networking/"),
            "{name}: a request logged at the default level: {v}"
        );
    }
    let messages: Vec<String> = lines.iter().map(|v| text(v, "message")).collect();
    let n = messages.len();
    assert!(
        n >= 2
            && messages[n - 1] == "stopped"
            && messages[..n - 1].contains(&"SIGTERM: stopping".to_string()),
        "{name}: the stop is logged: {messages:?}"
    );
}
