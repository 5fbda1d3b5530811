//! Flow log figures: the new-connection rate on a cell with the flow log and the per-rule
//! counters on, relative to off (target: at least 0.9 with the denied-log rate limit at its
//! default), and the agent's CPU time per logged event.
//! Run as root: `cargo bench --bench flows` (creates and removes its own namespaces).
//!
//! Two cells, the real agent on the destination cell with its flow log on, the real policy
//! server; a (app A) on cell 1 connects to b (app B) on cell 2, which a policy allows.
//! Variants, interleaved round by round (each ratio against the baseline of its own round):
//! - off: no c2c logging, and the flow table's chain emptied (no counter, no log rule runs);
//! - on: the flow table's counters and the denied log (limit 1/s) on, as configured by default;
//! - on + every allowed connection logged (`iptables_c2c_logging`): one JSON line each.

#[path = "../tests/support/mod.rs"]
mod support;
use support::agent_lab as lab;

use lab::policy_api::PolicyApi;
use lab::{tcp_connect, Conn, Lab, TcpServer};
use serde_json::json;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PER_SAMPLE: usize = 1000;
const ROUNDS: usize = 9;
const DEBUG: u16 = 8721;

/// `n` sequential connect+close (closed with RST: no TIME_WAIT piles up); (successes, elapsed).
fn connect_n(to: SocketAddr, n: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..n {
        if let Ok(s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger);
            ok += 1;
        }
    }
    (ok, started.elapsed())
}

fn http(lab: &Lab, method: &str, path: &str, body: &str) -> String {
    let (status, text) = lab.cells[1].local_http(method, DEBUG, path, body).unwrap();
    assert_eq!(status, 200, "{method} {path}: {text}");
    text
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The agent process of cell 2 (found by its config file) and its CPU seconds so far.
fn agent_cpu(config: &Path) -> f64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("vxlan-policy-agent") || !cmdline.contains(&*config.to_string_lossy())
        {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime is the 14th field, stime the 15th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 13 && f[0] != "Z" {
            let (u, s): (f64, f64) = (f[11].parse().unwrap(), f[12].parse().unwrap());
            return (u + s) / tick;
        }
    }
    panic!("agent with config {} not found", config.display());
}

#[derive(Clone, Copy)]
enum Variant {
    Off,
    On,
    OnLoggingAllowed,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Off => "off (no c2c log, flow table chain empty)",
            Variant::On => "on: counters + denied log (default limit)",
            Variant::OnLoggingAllowed => "on + every allowed connection logged",
        }
    }
}

fn set(lab: &Lab, v: Variant) {
    match v {
        Variant::Off => {
            http(
                lab,
                "PUT",
                "/flow-logging",
                r#"{"c2c_allowed":false,"c2c_denied":false}"#,
            );
            lab.cells[1]
                .nft(&["flush", "chain", "ip", "netman_flows", "forward"])
                .unwrap();
        }
        Variant::On | Variant::OnLoggingAllowed => {
            let allowed = matches!(v, Variant::OnLoggingAllowed);
            // Switching denied logging off and on again writes the chain back.
            http(lab, "PUT", "/flow-logging", r#"{"c2c_denied":false}"#);
            http(
                lab,
                "PUT",
                "/flow-logging",
                &json!({"c2c_allowed": allowed, "c2c_denied": true}).to_string(),
            );
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let api = PolicyApi::start();
    let mut lab = Lab::new(2);
    lab.cell(1).add_container("a", "app-A");
    lab.cell(2).add_container("b", "app-B");
    api.allow(&[("app-A", "app-B", "tcp", 8080, 8080)]);
    let files: Vec<PathBuf> = (1..=2)
        .map(|i| lab.cell(i).dir.path().join("flows.log"))
        .collect();
    for i in 1..=2u8 {
        let file = files[usize::from(i) - 1].clone();
        let cell = lab.cell(i);
        cell.relay_to(api.internal_addr());
        cell.start_agent(&api.certs, |c| {
            c["flow_log_file"] = json!(file);
        });
    }
    for cell in &lab.cells {
        cell.wait_agent_up();
    }
    let config = lab.cells[1].dir.path().join("vpa.json");
    let _server = TcpServer::start(lab.container("b"), 8080);
    let (a, b) = (lab.container("a"), lab.container("b").ip);
    let ready = support::wait::poll(Duration::from_secs(20), Duration::from_millis(100), || {
        tcp_connect(a, b, 8080) == Conn::Ok
    });
    assert!(ready.is_some(), "the policy never took effect");
    let to = SocketAddr::from((b, 8080));
    let path = a.ns.path();

    println!(
        "== new TCP connections/s from a (cell 1) to b (cell 2), {PER_SAMPLE} sequential connect+close per sample, \
         medians of {ROUNDS} interleaved rounds; ratio to 'off' of the same round"
    );
    let variants = [Variant::Off, Variant::On, Variant::OnLoggingAllowed];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let (mut cpu_logged, mut events_logged) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        for (i, v) in variants.iter().enumerate() {
            set(&lab, *v);
            let before_events = metric(
                &http(&lab, "GET", "/metrics", ""),
                r#"vpa_flow_events_total{kind="c2c_allowed"} "#,
            );
            let cpu = agent_cpu(&config);
            let p = path.clone();
            let (ok, took) = netman::netns::run_in(&p, move || connect_n(to, PER_SAMPLE)).unwrap();
            assert_eq!(ok, PER_SAMPLE, "{}: connections failed", v.name());
            rates[i].push(ok as f64 / took.as_secs_f64());
            if matches!(v, Variant::OnLoggingAllowed) {
                // Let the reader catch up before counting what it wrote and what it cost.
                std::thread::sleep(Duration::from_millis(300));
                cpu_logged += agent_cpu(&config) - cpu;
                events_logged += metric(
                    &http(&lab, "GET", "/metrics", ""),
                    r#"vpa_flow_events_total{kind="c2c_allowed"} "#,
                ) - before_events;
            }
        }
    }
    for (i, v) in variants.iter().enumerate() {
        let ratios: Vec<f64> = rates[i].iter().zip(&rates[0]).map(|(r, b)| r / b).collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        println!(
            "{:<44} {:>7.0}/s  ratio {:.2} [{lo:.2}-{hi:.2}]",
            v.name(),
            median(rates[i].clone()),
            median(ratios),
        );
    }
    println!(
        "agent CPU per logged event: {:.1} us ({events_logged:.0} events, {:.3} CPU s, reader, JSON and file write)",
        cpu_logged / events_logged.max(1.0) * 1e6,
        cpu_logged
    );
    let lines = std::fs::read_to_string(&files[1])
        .unwrap_or_default()
        .lines()
        .count();
    println!("(cell 2's flow log: {lines} lines)");
}
