//! The flow log end to end: two cells (namespaces) over VXLAN GBP, containers, the networker's
//! chains, an agent per cell with its flow log on, a real policy server, and real connections.
//! Each connection must produce exactly the expected JSON line, naming both apps and the rule
//! that decided it.

mod support;
use support::agent_lab as lab;

use lab::policy_api::PolicyApi;
use lab::{tcp_connect, Conn, Lab, TcpServer};
use netman::iptables::Table;
use netman::networker::protocol::NetOutRule;
use netman::networker::rules::{convert_netout, UpPlan};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use support::flow_lines::{lines, next_line, wait_lines};
use support::wait::{poll, wait_until};

const A: &str = "app-A";
const B: &str = "app-B";
const C: &str = "app-C";
const DEBUG: u16 = 8721;

fn flow_file(lab: &mut Lab, cell: u8) -> PathBuf {
    lab.cell(cell).dir.path().join("flows.log")
}

fn http(lab: &mut Lab, cell: u8, method: &str, path: &str, body: &str) -> (u16, String) {
    lab.cell(cell)
        .local_http(method, DEBUG, path, body)
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// a (A) on cell 1; b (B) and c (C) on cell 2; A may reach B on tcp 8080.
fn c2c_lab(api: &PolicyApi, patch: impl Fn(&mut Value)) -> Lab {
    let mut lab = Lab::new(2);
    lab.cell(1).add_container("a", A);
    lab.cell(2).add_container("b", B);
    lab.cell(2).add_container("c", C);
    api.allow(&[(A, B, "tcp", 8080, 8080)]);
    for i in 1..=2 {
        let file = flow_file(&mut lab, i);
        let cell = lab.cell(i);
        cell.relay_to(api.internal_addr());
        cell.start_agent(&api.certs, |c| {
            c["flow_log_file"] = json!(file);
            c["flow_log_cell"] = json!(format!("cell-{i}"));
            c["iptables_c2c_logging"] = json!(true);
            patch(c);
        });
    }
    for cell in &lab.cells {
        cell.wait_agent_up();
    }
    lab
}

fn ip(lab: &Lab, handle: &str) -> Ipv4Addr {
    lab.container(handle).ip
}

fn wait_connect(lab: &Lab, from: &str, to: &str, port: u16, want: Conn) {
    let (from, to) = (lab.container(from), ip(lab, to));
    let ok = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        tcp_connect(from, to, port) == want
    });
    assert!(
        ok.is_some(),
        "{} -> {to}:{port} never {want:?}",
        from.handle
    );
}

#[test]
fn c2c_allowed_denied_audit_and_switched_off() {
    let api = PolicyApi::start();
    // A limit that this test's few connections never reach (the next test is about the limit).
    let mut lab = c2c_lab(&api, |c| c["iptables_denied_logs_per_sec"] = json!(100));
    let _server = TcpServer::start(lab.container("b"), 8080);
    let log = flow_file(&mut lab, 2);
    let (a, b, c) = (ip(&lab, "a"), ip(&lab, "b"), ip(&lab, "c"));

    // Allowed, across cells: the source app is named by the tag the packet carries.
    wait_connect(&lab, "a", "b", 8080, Conn::Ok);
    let line = next_line(&log, || {
        assert_eq!(tcp_connect(lab.container("a"), b, 8080), Conn::Ok)
    });
    let tag = line["src"]["tag"].clone();
    assert!(tag.as_str().is_some_and(|t| t.len() == 4), "{line}");
    assert_eq!(
        line,
        json!({
            "cell": "cell-2", "verdict": "allowed", "direction": "c2c_ingress", "protocol": "tcp",
            "src": {"ip": a, "app": A, "space": null, "tag": tag},
            "dst": {"ip": b, "port": 8080, "app": B, "space": "space-1", "handle": "b"},
            "rule": {"kind": "policy", "source": A, "destination": B, "protocol": "tcp",
                     "ports": {"start": 8080, "end": 8080}}
        })
    );

    // Denied, same cell: both apps from the container store, default deny.
    let line = next_line(&log, || {
        assert_eq!(tcp_connect(lab.container("c"), b, 8080), Conn::Refused)
    });
    assert_eq!(
        line,
        json!({
            "cell": "cell-2", "verdict": "denied", "direction": "c2c_ingress", "protocol": "tcp",
            "src": {"ip": c, "app": C, "space": "space-1", "handle": "c"},
            "dst": {"ip": b, "port": 8080, "app": B, "space": "space-1", "handle": "b"},
            "rule": {"kind": "default_deny"}
        })
    );
    // Cell 1 saw nothing to log: its container sent, it decided nothing.
    assert!(lines(&flow_file(&mut lab, 1)).is_empty());

    // C is no policy's source: its packets carry no tag, and the networker refuses them on the
    // source cell (here, the lab has no cell guard, cell 1 refuses them too). Cell 2 logs it.
    let line = next_line(&log, || {
        assert_eq!(tcp_connect(lab.container("c"), a, 8080), Conn::Refused)
    });
    assert_eq!(
        line,
        json!({
            "cell": "cell-2", "verdict": "denied", "direction": "c2c_egress", "protocol": "tcp",
            "src": {"ip": c, "app": C, "space": "space-1", "handle": "c"},
            "dst": {"ip": a, "port": 8080, "app": null, "space": null},
            "rule": {"kind": "default_deny"}
        })
    );

    // Audit mode for B: what would be denied passes and is logged as audit.
    let (status, body) = http(&mut lab, 2, "PUT", "/audit", r#"{"apps":["app-B"]}"#);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"cell":false,"apps":["app-B"]}"#)
    );
    let (status, health) = http(&mut lab, 2, "GET", "/health", "");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&health).unwrap(),
        json!({"healthy": true, "audit": {"cell": false, "apps": [B]}})
    );
    let (_, metrics) = http(&mut lab, 2, "GET", "/metrics", "");
    assert_eq!(metric(&metrics, "vpa_flow_audit_mode "), 1.0, "{metrics}");
    wait_connect(&lab, "c", "b", 8080, Conn::Ok);
    let line = next_line(&log, || {
        assert_eq!(tcp_connect(lab.container("c"), b, 8080), Conn::Ok)
    });
    assert_eq!(
        line,
        json!({
            "cell": "cell-2", "verdict": "audit", "direction": "c2c_ingress", "protocol": "tcp",
            "src": {"ip": c, "app": C, "space": "space-1", "handle": "c"},
            "dst": {"ip": b, "port": 8080, "app": B, "space": "space-1", "handle": "b"},
            "rule": {"kind": "default_deny"}
        })
    );
    // Bad input changes nothing.
    let (status, _) = http(&mut lab, 2, "PUT", "/audit", r#"{"apps":[""]}"#);
    assert_eq!(status, 400);
    let (status, _) = http(&mut lab, 2, "PUT", "/audit", r#"{"cels":true}"#);
    assert_eq!(status, 400);
    assert_eq!(
        http(&mut lab, 2, "GET", "/audit", "").1,
        r#"{"cell":false,"apps":["app-B"]}"#
    );
    // Off again: refused.
    let (status, _) = http(&mut lab, 2, "PUT", "/audit", r#"{}"#);
    assert_eq!(status, 200);
    assert_eq!(tcp_connect(lab.container("c"), b, 8080), Conn::Refused);
    let (_, health) = http(&mut lab, 2, "GET", "/health", "");
    assert_eq!(health, r#"{"healthy":true}"#);

    // Logging switched off: no more lines, and the connections behave as before.
    let (status, body) = http(
        &mut lab,
        2,
        "PUT",
        "/flow-logging",
        r#"{"c2c_allowed":false,"c2c_denied":false}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"c2c_allowed": false, "c2c_denied": false, "egress": true})
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = lines(&log).len();
    assert_eq!(tcp_connect(lab.container("a"), b, 8080), Conn::Ok);
    assert_eq!(tcp_connect(lab.container("c"), b, 8080), Conn::Refused);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&log).len(), before, "{:?}", lines(&log));
    let (status, _) = http(&mut lab, 2, "PUT", "/flow-logging", r#"{"c2c_denid":true}"#);
    assert_eq!(status, 400);
    // And on again.
    http(
        &mut lab,
        2,
        "PUT",
        "/flow-logging",
        r#"{"c2c_denied":true}"#,
    );
    let line = next_line(&log, || {
        assert_eq!(tcp_connect(lab.container("c"), b, 8080), Conn::Refused)
    });
    assert_eq!(line["verdict"], "denied");
}

#[test]
fn the_denied_log_is_rate_limited_and_counts_what_it_left_out() {
    let api = PolicyApi::start();
    let mut lab = c2c_lab(&api, |c| c["iptables_denied_logs_per_sec"] = json!(5));
    let log = flow_file(&mut lab, 2);
    let b = ip(&lab, "b");
    // The agent knows b as a local destination once a denied connection to it is logged (its
    // sets follow the container store a poll later, longer on a loaded machine).
    wait_until(
        "a denied connection logged",
        Duration::from_secs(20),
        || {
            assert_eq!(tcp_connect(lab.container("c"), b, 8080), Conn::Refused);
            !lines(&log).is_empty()
        },
    );
    // Let the limit's bucket fill, then count from here.
    std::thread::sleep(Duration::from_secs(1));
    let rejected_counter = |lab: &mut Lab| -> usize {
        let save = lab.cell(2).ns.exec(&["iptables-save", "-c"]).unwrap();
        save.lines()
            .find(|l| l.contains("-A overlay--b -d") && l.contains("REJECT"))
            .and_then(|l| l.strip_prefix('[')?.split(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no reject counter in {save}"))
    };
    let dropped_metric = |lab: &mut Lab| {
        let (_, metrics) = http(lab, 2, "GET", "/metrics", "");
        let dropped = metric(
            &metrics,
            r#"vpa_flow_rate_limited_total{kind="c2c_denied"} "#,
        ) as usize;
        (dropped, metrics)
    };
    let rejected_before = rejected_counter(&mut lab);
    let (dropped_before, _) = dropped_metric(&mut lab);
    let logged_before = lines(&log).len();
    let started = std::time::Instant::now();
    let mut refused = 0;
    for _ in 0..300 {
        if tcp_connect(lab.container("c"), b, 8080) == Conn::Refused {
            refused += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(refused, 300);
    std::thread::sleep(Duration::from_millis(300));
    let logged = lines(&log).len() - logged_before;
    // burst 5, then 5/s
    let bound = 5.0 + 5.0 * (elapsed + 0.5);
    assert!(
        logged >= 5 && (logged as f64) <= bound,
        "{logged} lines for 300 denied connections in {elapsed:.1} s (bound {bound:.0})"
    );
    // Every connection the networker's chain rejected is either a line or counted as left out
    // (a few SYNs are sent twice on a busy machine: the chain's own counter is the truth).
    let rejected = rejected_counter(&mut lab) - rejected_before;
    assert!(rejected >= 300, "{rejected} rejected");
    let (dropped, metrics) = dropped_metric(&mut lab);
    assert_eq!(dropped - dropped_before, rejected - logged, "{metrics}");
    assert_eq!(
        metric(&metrics, r#"vpa_flow_events_total{kind="c2c_denied"} "#) as usize,
        logged_before + logged
    );
}

/// The last line of a flow log file as written (not parsed).
fn raw_last_line(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().last().unwrap().to_string()
}

/// The syslog header before the line, and the line.
fn split_syslog(message: &str) -> (&str, &str) {
    let at = message
        .find('{')
        .unwrap_or_else(|| panic!("no line in {message:?}"));
    message.split_at(at)
}

/// Cell 2's agent sends its lines to a unix datagram socket (as to `/dev/log`), cell 1's to a
/// UDP collector on the cell's loopback: each message is exactly the file's line behind the
/// transport's header. A syslog that is gone costs its messages (counted), never the file's.
#[test]
fn each_line_also_goes_to_syslog_over_a_unix_socket_or_udp() {
    const COLLECTOR: u16 = 5514;
    let api = PolicyApi::start();
    // C gets a tag (it is a source), so its refused connection to a reaches cell 1.
    api.allow(&[(C, A, "tcp", 9090, 9090)]);
    let logs = tempfile::tempdir().unwrap();
    let dev_log = logs.path().join("log");
    let unix = std::os::unix::net::UnixDatagram::bind(&dev_log).unwrap();
    unix.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut lab = c2c_lab(&api, |c| {
        // A limit these few denied connections never reach.
        c["iptables_denied_logs_per_sec"] = json!(100);
        if c["flow_log_cell"] == "cell-2" {
            c["flow_log_syslog"] = json!(dev_log);
        } else {
            c["flow_log_syslog"] = json!(format!("udp://127.0.0.1:{COLLECTOR}"));
            c["flow_log_syslog_facility"] = json!("local0");
        }
    });
    let udp = netman::netns::run_in(&lab.cell(1).ns.path(), || {
        std::net::UdpSocket::bind(("127.0.0.1", COLLECTOR))
    })
    .unwrap()
    .unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _server = TcpServer::start(lab.container("b"), 8080);
    let (a, b) = (ip(&lab, "a"), ip(&lab, "b"));
    // The message that carries `line` (earlier ones, e.g. from waiting for the agents, skipped):
    // its header.
    let header_of = |from: &dyn Fn(&mut [u8]) -> std::io::Result<usize>, line: &str| loop {
        let mut buf = vec![0; 65536];
        let n = from(&mut buf).unwrap_or_else(|e| panic!("no syslog message with {line}: {e}"));
        let message = String::from_utf8(buf[..n].to_vec()).unwrap();
        let (header, body) = split_syslog(&message);
        if body == line {
            return header.to_string();
        }
    };
    let from_unix = |buf: &mut [u8]| unix.recv(buf);
    let from_udp = |buf: &mut [u8]| udp.recv(buf);

    // Allowed (severity info, facility user): the glibc format, to the unix socket.
    wait_connect(&lab, "a", "b", 8080, Conn::Ok);
    let log2 = flow_file(&mut lab, 2);
    let line = next_line(&log2, || {
        assert_eq!(tcp_connect(lab.container("a"), b, 8080), Conn::Ok)
    });
    assert_eq!(line["verdict"], "allowed");
    let header = header_of(&from_unix, &raw_last_line(&log2));
    let tag = header
        .strip_prefix("<14>")
        .unwrap_or_else(|| panic!("{header}"));
    // "Dec  6 09:05:03 netman-flow[1234]: "
    let (stamp, program) = tag.split_at("Dec  6 09:05:03".len());
    assert!(
        stamp.as_bytes()[3] == b' ' && stamp.as_bytes()[12] == b':',
        "{header}"
    );
    let pid = program
        .strip_prefix(" netman-flow[")
        .and_then(|p| p.strip_suffix("]: "))
        .unwrap_or_else(|| panic!("{header}"));
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 1), "{header}");

    // Denied on cell 1 (severity notice, facility local0): RFC 5424 over UDP. Cell 1 sees the
    // connection once cell 2 tags c's packets and cell 1 knows a.
    let log1 = flow_file(&mut lab, 1);
    wait_until(
        "a refused connection logged on cell 1",
        Duration::from_secs(20),
        || {
            assert_eq!(tcp_connect(lab.container("c"), a, 8080), Conn::Refused);
            !lines(&log1).is_empty()
        },
    );
    let line = next_line(&log1, || {
        assert_eq!(tcp_connect(lab.container("c"), a, 8080), Conn::Refused)
    });
    assert_eq!(
        (&line["verdict"], &line["rule"]["kind"]),
        (&json!("denied"), &json!("default_deny"))
    );
    let header = header_of(&from_udp, &raw_last_line(&log1));
    let fields: Vec<&str> = header.split(' ').collect();
    assert_eq!(fields.len(), 8, "{header}");
    assert_eq!(fields[0], "<133>1");
    assert!(
        fields[1].len() == 24 && fields[1].ends_with('Z'),
        "{header}"
    );
    assert_eq!(fields[2..4], ["cell-1", "netman-flow"]);
    assert!(fields[4].parse::<u32>().is_ok(), "{header}");
    assert_eq!(fields[5..], ["flow", "-", ""]);

    // The unix socket's reader is gone: the line still reaches the file, the failure is counted.
    drop(unix);
    let syslog_errors = |lab: &mut Lab| {
        let (_, metrics) = http(lab, 2, "GET", "/metrics", "");
        metric(&metrics, r#"vpa_flow_errors_total{kind="syslog"} "#)
    };
    let errors_before = syslog_errors(&mut lab);
    let line = next_line(&log2, || {
        assert_eq!(tcp_connect(lab.container("a"), b, 8080), Conn::Ok)
    });
    assert_eq!(line["verdict"], "allowed");
    assert_eq!(syslog_errors(&mut lab), errors_before + 1.0);
}

fn netout_rules() -> Vec<NetOutRule> {
    serde_json::from_value(json!([
        {"protocol": 1, "networks": [{"start": "192.168.77.2", "end": "192.168.77.2"}],
         "ports": [{"start": 9000, "end": 9000}], "log": true},
        {"protocol": 0, "networks": [{"start": "192.168.77.3", "end": "192.168.77.3"}]}
    ]))
    .unwrap()
}

/// The networker's NetOut chains for container `handle` of cell 1, rendered by the networker's
/// own rule code (only the filter table's netout chains and their jump: the lab has its own
/// c2c chain), and its CNI cache entry holding the NetOut rules, as `up` leaves them.
fn install_netout(lab: &mut Lab, handle: &str, rules: &[NetOutRule], cache: &std::path::Path) {
    let c = lab.container(handle);
    let config: netman::networker::Config = serde_json::from_value(json!({
        "cni_plugin_dir": "/p", "cni_config_dir": "/c", "bind_mount_dir": "/b",
        "state_file": "/s", "iptables_lock_file": "/l", "datastore": "/d",
        "overlay_network": "10.255.0.0/16", "instance_address": "192.168.77.1",
        "dns_servers": ["169.254.0.2"], "iptables_asg_logging": true, "nflog_group": 1,
        "deny_networks": {"always": ["192.168.77.4/32"]}
    }))
    .unwrap();
    let names = netman::networker::names::ChainNames::for_handle(handle);
    let asg = convert_netout(rules, &names.netout_log, false).unwrap();
    let plan = UpPlan {
        config: &config,
        handle,
        ip: c.ip,
        mappings: &[],
        asg,
        workload: Some("app"),
        agent_egress: false,
    };
    let text = netman::iptables::render::table_text(&plan.batch(), Table::Filter).unwrap();
    let netout: String = text
        .lines()
        .filter(|l| l.starts_with('*') || l.starts_with("COMMIT") || l.contains("netout--"))
        .map(|l| format!("{l}\n"))
        .collect();
    let cell = lab.cell(1);
    let mut restore = std::process::Command::new("ip");
    restore
        .args(["netns", "exec", &cell.ns.name])
        .args(["iptables-restore", "--noflush"])
        .env("XTABLES_LOCKFILE", cell.dir.path().join("xtables.lock"));
    let out = support::proc::run_with_stdin(restore, netout.as_bytes());
    assert!(
        out.status.success(),
        "{netout}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = json!({"runtime_config": {"netOutRules": rules}});
    std::fs::write(cache.join(format!("{handle}.json")), entry.to_string()).unwrap();
}

/// Cell 1: container "eg" (app A) with the networker's NetOut chains and CNI cache entry, its
/// agent with the flow log on (synced once); cell 2's underlay address is "outside".
fn egress_lab(api: &PolicyApi) -> (Lab, PathBuf) {
    egress_lab_with(api, "eg", &netout_rules())
}

/// As [`egress_lab`], for container `handle` with NetOut rules `rules`.
fn egress_lab_with(api: &PolicyApi, handle: &str, rules: &[NetOutRule]) -> (Lab, PathBuf) {
    let mut lab = Lab::new(2);
    lab.cell(1).add_container(handle, A);
    let cache = lab.cell(1).dir.path().join("cni-cache");
    std::fs::create_dir(&cache).unwrap();
    install_netout(&mut lab, handle, rules, &cache);
    let file = flow_file(&mut lab, 1);
    let cell = lab.cell(1);
    cell.relay_to(api.internal_addr());
    cell.start_agent(&api.certs, |c| {
        c["flow_log_file"] = json!(file);
        c["flow_log_cell"] = json!("cell-1");
        c["netout_cache_dir"] = json!(cache);
    });
    cell.wait_agent_up();
    // The agent names apps once it has synced the store.
    wait_until("the agent's first sync", Duration::from_secs(10), || {
        let (_, m) = http(&mut lab, 1, "GET", "/metrics", "");
        metric(&m, "vpa_last_success_timestamp_seconds ") > 0.0
    });
    (lab, file)
}

#[test]
fn egress_allowed_and_denied_name_the_netout_rule_or_the_deny() {
    let api = PolicyApi::start();
    let (mut lab, file) = egress_lab(&api);
    // A server outside the overlay: cell 2's underlay address.
    let listener = netman::netns::run_in(&lab.cell(2).ns.path(), || {
        std::net::TcpListener::bind(("192.168.77.2", 9000))
    })
    .unwrap()
    .unwrap();
    let eg = ip(&lab, "eg");
    let outside: Ipv4Addr = "192.168.77.2".parse().unwrap();

    assert_eq!(tcp_connect(lab.container("eg"), outside, 9000), Conn::Ok);
    drop(listener);
    let got = wait_lines(&file, 1);
    assert_eq!(
        got[0],
        json!({
            "cell": "cell-1", "verdict": "allowed", "direction": "egress", "protocol": "tcp",
            "src": {"ip": eg, "app": A, "space": "space-1", "handle": "eg"},
            "dst": {"ip": outside, "port": 9000, "app": null, "space": null},
            "rule": {"kind": "netout", "index": 0}
        })
    );

    assert_eq!(
        tcp_connect(lab.container("eg"), outside, 9001),
        Conn::Refused
    );
    let got = wait_lines(&file, 2);
    assert_eq!(
        got[1],
        json!({
            "cell": "cell-1", "verdict": "denied", "direction": "egress", "protocol": "tcp",
            "src": {"ip": eg, "app": A, "space": "space-1", "handle": "eg"},
            "dst": {"ip": outside, "port": 9001, "app": null, "space": null},
            "rule": {"kind": "default_deny"}
        })
    );
    // Limit 1/s burst 1 on the networker's deny log: wait for the next token.
    std::thread::sleep(Duration::from_millis(1100));
    let deny_net: Ipv4Addr = "192.168.77.4".parse().unwrap();
    assert_ne!(tcp_connect(lab.container("eg"), deny_net, 80), Conn::Ok);
    let got = wait_lines(&file, 3);
    assert_eq!(got[2]["rule"], json!({"kind": "deny_network"}), "{got:?}");
    assert_eq!(got[2]["verdict"], "denied");
    assert_eq!(got.len(), 3, "{got:?}");

    // Egress logging off at run time: no more lines.
    let (status, _) = http(&mut lab, 1, "PUT", "/flow-logging", r#"{"egress":false}"#);
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        tcp_connect(lab.container("eg"), outside, 9001),
        Conn::Refused
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&file).len(), 3);
}

/// The packet counter of the first rule of `iptables-save -c` output that `is_rule` picks.
fn packets(save: &str, is_rule: impl Fn(&str) -> bool) -> u64 {
    save.lines()
        .find(|l| is_rule(l))
        .and_then(|l| l.strip_prefix('[')?.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no such rule in {save}"))
}

#[test]
fn the_networkers_denied_egress_log_limit_counts_what_it_left_out() {
    let api = PolicyApi::start();
    let (mut lab, file) = egress_lab(&api);
    let outside: Ipv4Addr = "192.168.77.2".parse().unwrap();
    // The networker's deny log: 1/s, burst 1; a flood of refused connections.
    for _ in 0..50 {
        assert_eq!(
            tcp_connect(lab.container("eg"), outside, 9001),
            Conn::Refused
        );
    }
    // The chain's own counters are the truth: its limited log rule and the reject after it.
    let save = lab
        .cell(1)
        .ns
        .exec(&["iptables-save", "-c", "-t", "filter"])
        .unwrap();
    let logged = packets(&save, |l| l.contains("--nflog-prefix DENY_eg"));
    let rejected = packets(&save, |l| l.contains("-A netout--eg -j REJECT"));
    assert!(rejected >= 50 && logged >= 1 && logged < rejected, "{save}");
    // Every logged packet becomes a line; the rest is counted as left out by the limit.
    wait_until(
        "every logged packet written",
        Duration::from_secs(10),
        || lines(&file).len() as u64 == logged,
    );
    let (_, metrics) = http(&mut lab, 1, "GET", "/metrics", "");
    let dropped = metric(
        &metrics,
        r#"vpa_flow_rate_limited_total{kind="egress_denied"} "#,
    );
    assert_eq!(dropped as u64, rejected - logged, "{metrics}");
    assert_eq!(lines(&file).len() as u64, logged, "{:?}", lines(&file));
}

/// Cell 1's `/counters`: the `netout` entries of container `handle` (by rule index) and the
/// `netout_unattributed` entries.
fn netout_counters(lab: &mut Lab, handle: &str) -> (Vec<Value>, Vec<Value>) {
    let (status, body) = http(lab, 1, "GET", "/counters", "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let rules: Vec<Value> = v["netout"]
        .as_array()
        .unwrap_or_else(|| panic!("no netout in {body}"))
        .iter()
        .filter(|r| r["handle"] == handle)
        .cloned()
        .collect();
    (rules, v["netout_unattributed"].as_array().unwrap().clone())
}

#[test]
fn netout_counters_move_for_the_static_rule_that_matched_only() {
    let api = PolicyApi::start();
    let rules: Vec<NetOutRule> = serde_json::from_value(json!([
        {"protocol": 1, "networks": [{"start": "192.168.77.2", "end": "192.168.77.2"}],
         "ports": [{"start": 9000, "end": 9000}]},
        {"protocol": 1, "networks": [{"start": "192.168.77.2", "end": "192.168.77.2"}],
         "ports": [{"start": 9001, "end": 9001}, {"start": 9002, "end": 9003}], "log": true},
        {"protocol": 2, "networks": [{"start": "192.168.77.2", "end": "192.168.77.2"}],
         "ports": [{"start": 53, "end": 53}]}
    ]))
    .unwrap();
    let (mut lab, _file) = egress_lab_with(&api, "nc", &rules);
    let outside: Ipv4Addr = "192.168.77.2".parse().unwrap();
    let _listeners: Vec<std::net::TcpListener> = [9000, 9001, 9002]
        .into_iter()
        .map(|port| {
            netman::netns::run_in(&lab.cell(2).ns.path(), move || {
                std::net::TcpListener::bind((outside, port))
            })
            .unwrap()
            .unwrap()
        })
        .collect();
    let allowed_total = r#"vpa_flow_connections_total{verdict="allowed",kind="egress"} "#;
    let (_, metrics_before) = http(&mut lab, 1, "GET", "/metrics", "");
    let (before, unattributed) = netout_counters(&mut lab, "nc");
    assert_eq!(before.len(), 3, "{before:?}");
    assert_eq!(unattributed, Vec::<Value>::new());
    assert_eq!(
        before[1]["ports"],
        json!([{"start": 9001, "end": 9001}, {"start": 9002, "end": 9003}])
    );
    assert_eq!(
        (&before[1]["protocol"], &before[1]["app"]),
        (&json!("tcp"), &json!(A))
    );
    for _ in 0..3 {
        assert_eq!(tcp_connect(lab.container("nc"), outside, 9000), Conn::Ok);
    }
    // Rule 1 on both of its lines (one per port range).
    for port in [9001, 9002] {
        assert_eq!(tcp_connect(lab.container("nc"), outside, port), Conn::Ok);
    }
    // Refused by the default deny: counted by no rule.
    assert_eq!(
        tcp_connect(lab.container("nc"), outside, 9004),
        Conn::Refused
    );
    let (after, _) = netout_counters(&mut lab, "nc");
    let moved: Vec<u64> = (0..3)
        .map(|i| {
            after[i]["connections"].as_u64().unwrap() - before[i]["connections"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(moved, [3, 2, 0], "{after:?}");
    // Prometheus: only the total.
    let (_, metrics) = http(&mut lab, 1, "GET", "/metrics", "");
    assert_eq!(
        metric(&metrics, allowed_total) - metric(&metrics_before, allowed_total),
        5.0,
        "{metrics}"
    );
    for (i, r) in after.iter().enumerate() {
        assert_eq!(r["index"], i);
        let bytes = r["bytes"].as_u64().unwrap() - before[i]["bytes"].as_u64().unwrap();
        // The first packets only (SYNs, at least 40 bytes each).
        assert!(bytes >= moved[i] * 40 && bytes <= moved[i] * 100, "{r}");
    }

    // A rule added from outside: the positions no longer say which rule counted.
    let cell = lab.cell(1);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &cell.ns.name, "iptables", "-w"])
        .args(["-I", "netout--nc", "5", "-d", "10.9.9.9/32", "-j", "ACCEPT"])
        .env("XTABLES_LOCKFILE", cell.dir.path().join("xtables.lock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rules_now, unattributed) = netout_counters(&mut lab, "nc");
    assert_eq!(rules_now, Vec::<Value>::new());
    assert_eq!(unattributed.len(), 1, "{unattributed:?}");
    assert_eq!(unattributed[0]["handle"], "nc");
    assert_eq!(unattributed[0]["connections"], 5, "{unattributed:?}");
}

/// The connections one policy counted on cell 2, from the agent's `/counters`.
fn policy_count(lab: &mut Lab, src: &str, port: u64) -> u64 {
    let (status, body) = http(lab, 2, "GET", "/counters", "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source"] == src && p["ports"]["start"] == port)
        .unwrap_or_else(|| panic!("no policy {src} port {port} in {body}"))["connections"]
        .as_u64()
        .unwrap()
}

#[test]
fn counters_move_for_the_matching_policy_only() {
    let api = PolicyApi::start();
    let mut lab = c2c_lab(&api, |_| {});
    api.allow(&[(A, B, "tcp", 20000, 20999), (C, B, "tcp", 9090, 9090)]);
    let _s1 = TcpServer::start(lab.container("b"), 8080);
    let _s2 = TcpServer::start(lab.container("b"), 20500);
    let b = ip(&lab, "b");
    wait_connect(&lab, "a", "b", 8080, Conn::Ok);
    wait_connect(&lab, "a", "b", 20500, Conn::Ok);
    let (_, before_metrics) = http(&mut lab, 2, "GET", "/metrics", "");
    let allowed_total = r#"vpa_flow_connections_total{verdict="allowed",kind="c2c"} "#;
    let denied_total = r#"vpa_flow_connections_total{verdict="denied",kind="c2c"} "#;
    let before = (
        policy_count(&mut lab, A, 8080),
        policy_count(&mut lab, A, 20000),
        policy_count(&mut lab, C, 9090),
    );
    for _ in 0..3 {
        assert_eq!(tcp_connect(lab.container("a"), b, 8080), Conn::Ok);
    }
    assert_eq!(tcp_connect(lab.container("a"), b, 20500), Conn::Ok);
    assert_eq!(tcp_connect(lab.container("c"), b, 8080), Conn::Refused);
    let after = (
        policy_count(&mut lab, A, 8080),
        policy_count(&mut lab, A, 20000),
        policy_count(&mut lab, C, 9090),
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (3, 1, 0)
    );
    let (_, metrics) = http(&mut lab, 2, "GET", "/metrics", "");
    assert_eq!(
        metric(&metrics, allowed_total) - metric(&before_metrics, allowed_total),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, denied_total) - metric(&before_metrics, denied_total),
        1.0
    );
    // Cell 1 enforces none of these (its app is only a source): no policy listed.
    let (_, body) = http(&mut lab, 1, "GET", "/counters", "");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["policies"], json!([]), "{body}");
}

/// `netman` run inside cell 2 (where the agent's debug port is), the policy server's external
/// API relayed to the cell's loopback; apps by GUID (no Cloud Controller).
fn netman_in_cell(lab: &Lab, api_port: u16, args: &[&str]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.cells[1].ns.name])
        .arg(env!("CARGO_BIN_EXE_netman"))
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("NETMAN_API", format!("http://127.0.0.1:{api_port}"))
        .env("NETMAN_TOKEN", support::policy_server::ADMIN_TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_names_the_allowing_policy_or_says_no_policy_with_the_ports_allowed_instead() {
    let api = PolicyApi::start();
    let lab = c2c_lab(&api, |_| {});
    let external: std::net::SocketAddr = api
        .external_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let _relay = lab::Relay::start(&lab.cells[1].ns.path(), 4555, external);
    wait_until("cell 2's first sync", Duration::from_secs(10), || {
        let (_, body) = lab.cells[1]
            .local_http("GET", DEBUG, "/counters", "")
            .unwrap();
        body.contains(r#""source":"app-A""#)
    });
    let debug = "http://127.0.0.1:8721";

    let (code, out, err) = netman_in_cell(
        &lab,
        4555,
        &["explain", A, B, "--port", "8080", "--cell-debug", debug],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ALLOWED by policy app-A -> app-B tcp 8080\n"),
        "{out}"
    );
    let b = ip(&lab, "b");
    assert!(
        out.contains(&format!(
            "Cell enforces:\n   {b} (b): {b} . tcp . 8080 . 0x"
        )) && out.contains(" element present"),
        "{out}"
    );

    let (code, out, err) = netman_in_cell(
        &lab,
        4555,
        &["explain", A, B, "--port", "9090", "--cell-debug", debug],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("DENIED: no policy allows app-A to reach app-B on tcp 9090 (default deny)\nAllowed instead: tcp 8080\n"),
        "{out}"
    );
    assert!(
        out.contains(" . tcp . 9090 . 0x") && out.contains(" element missing"),
        "{out}"
    );

    let (code, out, _) = netman_in_cell(&lab, 4555, &["explain", C, B]);
    assert_eq!(code, 0);
    assert!(out.contains("DENIED: no policy allows app-C to reach app-B (default deny)\nNo policy from app-C to app-B at all.\n"), "{out}");

    let (code, out, _) = netman_in_cell(
        &lab,
        4555,
        &["--json", "explain", A, B, "--protocol", "udp"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], false);
    assert_eq!(v["policies"], json!([]));
    assert_eq!(
        v["allowed_instead"][0]["destination"]["ports"],
        json!({"start": 8080, "end": 8080})
    );

    // Bad input: a clear error, nothing asked.
    let (code, _, err) = netman_in_cell(&lab, 4555, &["explain", A, B, "--port", "0"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Port is not valid") || err.contains("port"),
        "{err}"
    );
    let (code, _, err) = netman_in_cell(&lab, 4555, &["explain", A]);
    assert_eq!(code, 1, "{err}");
}
