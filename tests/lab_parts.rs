//! Parts of `netman-lab` tried in namespaces of the test's own (no lab up): processes are handed
//! out only once inside their namespace, and a cell answers every REJECT at once.

use netman::lab::netns::NamedNetns;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "nmlp{tag}{}x{}",
        std::process::id() % 100000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Issue 18 item 3 (lab side): a PID the lab hands out (to the networker) is already inside the
/// container's namespace. A fresh `ip netns exec` switches namespace only after it started, so
/// without the wait most PIDs still name the machine's namespace.
#[test]
fn a_spawned_process_is_inside_its_namespace_when_spawn_returns() {
    let logs = tempfile::tempdir().unwrap();
    for round in 0..30 {
        let ns = NamedNetns::create(&unique("c")).unwrap();
        let p = netman::lab::process::spawn(
            &format!("app-{round}"),
            &ns.name,
            Path::new("/bin/sleep"),
            &["30".to_string()],
            logs.path(),
        )
        .unwrap();
        let pid_ns = netman::netns::identity(Path::new(&format!("/proc/{}/ns/net", p.pid)));
        let want = netman::netns::identity(&ns.path()).unwrap();
        p.kill(nix::sys::signal::Signal::SIGKILL);
        assert_eq!(
            pid_ns.unwrap(),
            want,
            "round {round}: pid {} is not in {}",
            p.pid,
            ns.name
        );
    }
}

fn connect(ns: &NamedNetns, to: SocketAddr) -> Result<(), ErrorKind> {
    netman::netns::run_in(&ns.path(), move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(700))
            .map(|_| ())
            .map_err(|e| e.kind())
    })
    .unwrap()
}

/// Issue 18 item 9: in a namespace set up as the lab sets up a cell, a burst of connections
/// that a REJECT rule denies is refused in full: none times out on the namespace-wide ICMP limit
/// (by default 50 errors at once). The machine's own limits do not change.
#[test]
fn a_cell_answers_every_reject_of_a_burst() {
    let host = |key: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{key}")).unwrap();
    let keys = ["icmp_ratelimit", "icmp_msgs_per_sec", "icmp_msgs_burst"];
    let before: Vec<String> = keys.iter().map(|k| host(k)).collect();

    let cell = NamedNetns::create(&unique("cell")).unwrap();
    let client = NamedNetns::create(&unique("cl")).unwrap();
    netman::lab::netns::run(&[
        "ip",
        "-n",
        &cell.name,
        "link",
        "add",
        "to-cl",
        "type",
        "veth",
        "peer",
        "name",
        "to-cell",
        "netns",
        &client.name,
    ])
    .unwrap();
    for (ns, dev, cidr) in [
        (&cell, "to-cl", "10.99.0.1/24"),
        (&client, "to-cell", "10.99.0.2/24"),
    ] {
        ns.exec(&["ip", "addr", "add", cidr, "dev", dev]).unwrap();
        ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
    }
    cell.exec(&[
        "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "REJECT",
    ])
    .unwrap();
    netman::lab::topology::answer_every_reject(&cell.name).unwrap();

    let to: SocketAddr = "10.99.0.1:9".parse().unwrap();
    // 8 clients at once, 40 connections each: far more than the default burst of 50.
    let client = &client;
    let outcomes: Vec<Result<(), ErrorKind>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(move || (0..40).map(|_| connect(client, to)).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let refused = outcomes
        .iter()
        .filter(|o| **o == Err(ErrorKind::ConnectionRefused))
        .count();
    assert_eq!(refused, outcomes.len(), "{outcomes:?}");
    let after: Vec<String> = keys.iter().map(|k| host(k)).collect();
    assert_eq!(after, before, "the machine's ICMP limits changed");
}
