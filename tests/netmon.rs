//! netmon and the overlay watchdog on a namespace with known interfaces, rules and traffic.

#[path = "common/ports.rs"]
mod ports;
use netman::http::{Request, Response, Server, ServerOptions};
use netman::lab::netns::NamedNetns;
use ports::free_port;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn ns_name(tag: &str) -> String {
    format!(
        "nm-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A namespace holding: lo, an underlay veth pair, and a GBP VXLAN device `silk-vtep` with
/// 10.99.0.0/16 whose only remote VTEP is the other end of the veth (inside the namespace).
fn cell(tag: &str) -> NamedNetns {
    let ns = NamedNetns::create(&ns_name(tag)).unwrap();
    for cmd in [
        "ip link add ul0 type veth peer name ul1",
        "ip addr add 10.88.0.1/24 dev ul0",
        "ip addr add 10.88.0.2/24 dev ul1",
        "ip link set ul0 up",
        "ip link set ul1 up",
        "ip link add silk-vtep type vxlan id 1 dstport 4789 local 10.88.0.1 dev ul0 gbp nolearning",
        "ip addr add 10.99.0.0/16 dev silk-vtep",
        "ip link set silk-vtep up",
        "ip neigh add 10.99.1.0 lladdr ee:ee:0a:63:01:00 dev silk-vtep nud permanent",
        "bridge fdb add ee:ee:0a:63:01:00 dev silk-vtep dst 10.88.0.2 self permanent",
    ] {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        ns.exec(&args).unwrap();
    }
    ns
}

fn scrape(ns: &NamedNetns, port: u16) -> Option<String> {
    netman::netns::run_in(&ns.path(), move || {
        let agent =
            netman::http::client::agent(&Default::default(), Duration::from_secs(2)).ok()?;
        let mut r = agent
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .ok()?;
        netman::http::client::body_string(&mut r, 1 << 20).ok()
    })
    .unwrap()
}

fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[test]
fn netmon_reports_interfaces_rules_and_overlay_traffic() {
    let ns = cell("mon");
    let rules = "*filter\n:FORWARD ACCEPT [0:0]\n:t1 - [0:0]\n-A FORWARD -j t1\n-A t1 -s 10.1.0.0/16 -j ACCEPT\n-A t1 -j RETURN\nCOMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.2.0.0/16 -j MASQUERADE\n-A POSTROUTING -s 10.3.0.0/16 -j MASQUERADE\nCOMMIT\n";
    let mut restore = Command::new("ip")
        .args(["netns", "exec", &ns.name, "iptables-restore"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    restore
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(restore.wait().unwrap().success());

    // Traffic through the overlay device: pings to a remote VTEP address.
    let _ = ns.exec(&["busybox", "ping", "-c", "3", "-W", "1", "10.99.1.0"]);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("netmon.json");
    std::fs::write(
        &config,
        serde_json::json!({"poll_interval_seconds": 1, "debug_server_port": port}).to_string(),
    )
    .unwrap();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_netmon"),
            "--config",
        ])
        .arg(&config)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        if let Some(t) = scrape(&ns, port) {
            if metric(&t, "netmon_interfaces").unwrap_or(0) > 0 {
                break t;
            }
        }
        assert!(Instant::now() < deadline, "netmon never reported");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        metric(&text, "netmon_interfaces"),
        Some(4),
        "lo, ul0, ul1, silk-vtep\n{text}"
    );
    assert_eq!(metric(&text, "netmon_iptables_rules"), Some(5), "{text}");
    let tx = metric(&text, "netmon_overlay_tx_bytes").unwrap();
    // Three echo requests of 84-byte IP packets framed in Ethernet: at least 3 * 98 bytes.
    assert!(tx >= 3 * 98, "tx_bytes {tx}\n{text}");
    assert!(metric(&text, "netmon_overlay_rx_bytes").is_some());
    assert!(metric(&text, "netmon_overlay_tx_dropped").is_some());
}

fn fake_daemon(ns: &NamedNetns, subnet: Arc<Mutex<String>>) -> (Server, u16) {
    let port = free_port();
    let server = netman::netns::run_in(&ns.path(), move || {
        Server::start(
            &format!("127.0.0.1:{port}"),
            ServerOptions {
                workers: 2,
                ..ServerOptions::default()
            },
            move |_: &Request| {
                Response::json(
                    200,
                    &serde_json::json!({"overlay_subnet": *subnet.lock().unwrap(), "mtu": 1450}),
                )
            },
        )
        .unwrap()
    })
    .unwrap();
    (server, port)
}

fn watchdog_once(ns: &NamedNetns, port: u16, vtep: &str) -> (bool, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_overlay-watchdog"),
            "--once",
        ])
        .args(["--vtep-name", vtep])
        .arg("--overlay-daemon-url")
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn watchdog_accepts_a_matching_vtep_and_fails_a_mismatch() {
    let ns = cell("wd");
    let subnet = Arc::new(Mutex::new("10.99.0.0/24".to_string()));
    let (_server, port) = fake_daemon(&ns, Arc::clone(&subnet));

    let (ok, err) = watchdog_once(&ns, port, "silk-vtep");
    assert!(ok, "in sync: {err}");
    // No VTEP yet: nothing to compare, not a failure.
    let (ok, err) = watchdog_once(&ns, port, "absent0");
    assert!(ok, "missing device: {err}");

    // Checking every interval until SIGTERM, which ends it cleanly.
    let mut looping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_overlay-watchdog"),
        ])
        .args(["--vtep-name", "silk-vtep", "--interval-ms", "50"])
        .arg("--overlay-daemon-url")
        .arg(format!("http://127.0.0.1:{port}/"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        looping.try_wait().unwrap().is_none(),
        "in sync: keeps checking"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(looping.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = looping.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SIGTERM exits 0: {log}");
    // The default level shows the start (what is checked against what) and the stop, and not
    // the check every 50 ms; each line opens with an RFC 3339 UTC timestamp.
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    for (line, message) in lines.iter().zip([
        format!("started: checking silk-vtep against http://127.0.0.1:{port}/ every 50ms"),
        "SIGTERM: stopping".to_string(),
        "stopped".to_string(),
    ]) {
        let (timestamp, rest) = line.split_once(' ').unwrap();
        assert!(
            timestamp.len() == 24 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
            "{line}"
        );
        assert!(
            rest.starts_with("overlay-watchdog INFO ") && rest.ends_with(&format!(": {message}")),
            "{line}"
        );
    }

    *subnet.lock().unwrap() = "10.99.7.0/24".into();
    let (ok, err) = watchdog_once(&ns, port, "silk-vtep");
    assert!(!ok);
    assert!(err.contains("This cell must be recreated"), "{err}");

    // A VTEP without an address is out of sync too.
    *subnet.lock().unwrap() = "10.99.0.0/24".into();
    ns.exec(&["ip", "addr", "flush", "dev", "silk-vtep"])
        .unwrap();
    let (ok, err) = watchdog_once(&ns, port, "silk-vtep");
    assert!(!ok && err.contains("no IPv4 address"), "{err}");
}
