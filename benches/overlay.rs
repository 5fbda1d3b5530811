//! Overlay figures: CNI ADD/DEL latency of the overlay plugin beside the reference `ptp` +
//! `host-local` plugins doing the same veth point-to-point job (interleaved, one run), and the
//! daemon's converge time for 1,000 leases. Run with `cargo bench --bench overlay`.

#[path = "../tests/overlay_common/mod.rs"]
mod overlay_common;

use netman::lab::netns::NamedNetns;
use netman::netlink::Handle;
use netman::netns::run_in;
use netman::overlay::vtep::{self, VtepConfig};
use netman::overlay::{Lease, ParsedLease};
use overlay_common::*;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONTAINERS: usize = 200;

/// Runs a plugin inside the cell namespace (setns before exec, no `ip netns exec` overhead).
fn exec_plugin(
    cell: &NamedNetns,
    bin: &str,
    cmd: &str,
    id: &str,
    netns: &str,
    conf: &str,
) -> Duration {
    let ns_file = std::fs::File::open(cell.path()).unwrap();
    let mut c = Command::new(bin);
    c.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        c.pre_exec(move || {
            nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
    let started = Instant::now();
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{bin} {cmd}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = ((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1);
    (ms(v[v.len() / 2]), ms(v[p99.min(v.len() - 1)]))
}

fn cni_latency() {
    let lab = Lab::new(LabOptions {
        cells: 1,
        ..Default::default()
    });
    let cell = &lab.cells[0];
    let mtu = cell.info().mtu;
    let overlay_conf = lab.net_conf(0, "1.0.0").to_string();
    let ref_conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "reference",
        "type": "ptp",
        "ipMasq": false,
        "mtu": mtu,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.254.1.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": lab.dir.path().join("host-local"),
        }
    })
    .to_string();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..CONTAINERS {
        ours.push(NamedNetns::create(&unique(&format!("bo{i}"))).unwrap());
        theirs.push(NamedNetns::create(&unique(&format!("br{i}"))).unwrap());
    }
    let (mut add_o, mut add_r, mut del_o, mut del_r) = (vec![], vec![], vec![], vec![]);
    for i in 0..CONTAINERS {
        let (o, r) = (ours[i].path(), theirs[i].path());
        add_o.push(exec_plugin(
            &cell.ns,
            PLUGIN,
            "ADD",
            &format!("o{i}"),
            o.to_str().unwrap(),
            &overlay_conf,
        ));
        add_r.push(exec_plugin(
            &cell.ns,
            "/usr/lib/cni/ptp",
            "ADD",
            &format!("r{i}"),
            r.to_str().unwrap(),
            &ref_conf,
        ));
    }
    // Both did real work: a container of each can reach its host side.
    assert!(ping(&ours[0], "169.254.0.1"));
    for i in 0..CONTAINERS {
        let (o, r) = (ours[i].path(), theirs[i].path());
        del_o.push(exec_plugin(
            &cell.ns,
            PLUGIN,
            "DEL",
            &format!("o{i}"),
            o.to_str().unwrap(),
            &overlay_conf,
        ));
        del_r.push(exec_plugin(
            &cell.ns,
            "/usr/lib/cni/ptp",
            "DEL",
            &format!("r{i}"),
            r.to_str().unwrap(),
            &ref_conf,
        ));
    }
    let report = |what: &str, o: Vec<Duration>, r: Vec<Duration>| {
        let (om, op) = stats(o);
        let (rm, rp) = stats(r);
        println!(
            "CNI {what} over {CONTAINERS} containers: overlay median {om:.2} ms p99 {op:.2} ms | ptp+host-local median {rm:.2} ms p99 {rp:.2} ms | ratio median {:.2} p99 {:.2}",
            om / rm,
            op / rp
        );
    };
    report("ADD", add_o, add_r);
    report("DEL", del_o, del_r);
}

fn converge_time() {
    let ns = NamedNetns::create(&unique("bc")).unwrap();
    ns.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .unwrap();
    ns.exec(&["ip", "addr", "add", "192.168.60.1/24", "dev", "eth0"])
        .unwrap();
    ns.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
    let out = run_in(&ns.path(), || {
        let network: ipnet::Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let cfg = VtepConfig {
            name: "silk-vtep".into(),
            vni: 1,
            port: 4789,
            underlay_ip: "192.168.60.1".parse().unwrap(),
            underlay_interface: None,
            overlay_network: network,
            subnet_prefix_length: 24,
        };
        let lease = |i: u32| -> ParsedLease {
            let subnet =
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap();
            let underlay = std::net::Ipv4Addr::from(0xac10_0000 + i);
            Lease::new(underlay, subnet).parse().unwrap()
        };
        let local = lease(1);
        let mut h = Handle::new().unwrap();
        let (index, _) = vtep::create(&mut h, &cfg, &local).unwrap();
        let mut leases: Vec<ParsedLease> = (1..=1001).map(lease).collect();
        let mut timed = |label: &str, leases: &[ParsedLease]| {
            let started = Instant::now();
            let s = vtep::converge(&mut h, index, &local, network, leases).unwrap();
            format!(
                "{label}: {:.1} ms ({} added, {} removed)",
                started.elapsed().as_secs_f64() * 1000.0,
                s.added,
                s.removed
            )
        };
        let mut lines = vec![timed("first converge, 1,000 remote leases", &leases)];
        lines.push(timed("steady-state converge, nothing changed", &leases));
        // Ten cells leave, ten join.
        leases.drain(1..11);
        leases.extend((2001..2011).map(lease));
        lines.push(timed("converge with 10 cells replaced", &leases));
        lines
    })
    .unwrap();
    for l in out {
        println!("daemon {l}");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    cni_latency();
    converge_time();
}
