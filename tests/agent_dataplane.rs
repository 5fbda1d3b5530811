//! The agent's nftables dataplane on real namespaces, without the loop: plans applied from
//! scratch and incrementally to two cells joined by VXLAN GBP, with the networker's default-deny
//! chains, and real TCP/UDP traffic between containers.

#[path = "agent_lab/mod.rs"]
mod lab;

use lab::{tcp_connect, udp_roundtrip, Conn, Lab, TcpServer, UdpEcho};
use netman::agent::nft::{render_diff, render_full, C2cLogging};
use netman::agent::plan::{plan, Diff, Plan};
use netman::api::policy::Policy;
use netman::cell::Container as StoreContainer;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const LOG_OFF: C2cLogging = C2cLogging {
    enabled: false,
    group: 2,
    udp_per_sec: 100,
};

fn policy(src: &str, stag: &str, dst: &str, proto: &str, start: i64, end: i64) -> Policy {
    let mut p = Policy::new(src, dst, proto, start, end);
    p.source.tag = Some(stag.into());
    p
}

fn cell_plan(lab: &Lab, cell: u8, policies: &[Policy]) -> Plan {
    let containers: Vec<StoreContainer> = lab.cells[cell as usize - 1]
        .containers
        .iter()
        .map(|c| StoreContainer::for_app(&c.handle, c.ip, &c.app))
        .collect();
    let (plan, skipped) = plan(&containers, policies);
    assert!(skipped.is_empty(), "{skipped:?}");
    plan
}

/// a (A) and c (C) and b2 (B) on cell 1, b (B) on cell 2.
fn two_cells() -> Lab {
    let mut lab = Lab::new(2);
    lab.cell(1).add_container("a", "app-A");
    lab.cell(1).add_container("c", "app-C");
    lab.cell(1).add_container("b2", "app-B");
    lab.cell(2).add_container("b", "app-B");
    lab
}

fn base_policies() -> Vec<Policy> {
    vec![
        policy("app-A", "0001", "app-B", "tcp", 8080, 8080),
        policy("app-A", "0001", "app-B", "udp", 5353, 5353),
        policy("app-A", "0001", "app-B", "tcp", 9000, 9010),
        policy("app-A", "0001", "app-B", "tcp", 20000, 20999),
    ]
}

#[test]
fn policies_allow_exactly_their_traffic_same_cell_and_cross_cell() {
    let lab = two_cells();
    let (a, c, b2, b) = (
        lab.container("a"),
        lab.container("c"),
        lab.container("b2"),
        lab.container("b"),
    );
    let _servers: Vec<TcpServer> = [b, b2]
        .iter()
        .flat_map(|t| [8080, 8081, 9005, 9011, 20500, 21000].map(|p| TcpServer::start(t, p)))
        .collect();
    let _udp = [UdpEcho::start(b, 5353), UdpEcho::start(b2, 5353)];

    // Default deny before any plan: refused at once, not timed out.
    assert_eq!(tcp_connect(a, b.ip, 8080), Conn::Refused);
    assert_eq!(tcp_connect(a, b2.ip, 8080), Conn::Refused);

    let policies = base_policies();
    for cell in [1, 2] {
        let script = render_full(&cell_plan(&lab, cell, &policies), &LOG_OFF);
        lab.cells[cell as usize - 1].nft_script(&script).unwrap();
    }
    for target in [b, b2] {
        assert_eq!(
            tcp_connect(a, target.ip, 8080),
            Conn::Ok,
            "A -> {}",
            target.handle
        );
        assert_eq!(tcp_connect(a, target.ip, 8081), Conn::Refused, "other port");
        assert_eq!(tcp_connect(a, target.ip, 9005), Conn::Ok, "in the range");
        assert_eq!(
            tcp_connect(a, target.ip, 9011),
            Conn::Refused,
            "past the range"
        );
        assert_eq!(
            tcp_connect(a, target.ip, 20500),
            Conn::Ok,
            "in the wide range"
        );
        assert_eq!(
            tcp_connect(a, target.ip, 21000),
            Conn::Refused,
            "past the wide range"
        );
        assert_eq!(udp_roundtrip(a, target.ip, 5353), Conn::Ok, "udp");
        assert_eq!(
            tcp_connect(c, target.ip, 8080),
            Conn::Refused,
            "C has no policy"
        );
        assert_eq!(udp_roundtrip(c, target.ip, 5353), Conn::Refused, "C udp");
    }
    // Policies are directional.
    let _back = TcpServer::start(a, 8080);
    assert_eq!(tcp_connect(b2, a.ip, 8080), Conn::Refused);
}

#[test]
fn incremental_changes_take_effect_and_an_unchanged_plan_renders_nothing() {
    let lab = two_cells();
    let (a, b) = (lab.container("a"), lab.container("b"));
    let _s = [TcpServer::start(b, 8080), TcpServer::start(b, 7000)];
    let old_policies = base_policies();
    let old = cell_plan(&lab, 2, &old_policies);
    for cell in [1, 2] {
        let p = cell_plan(&lab, cell, &old_policies);
        lab.cells[cell as usize - 1]
            .nft_script(&render_full(&p, &LOG_OFF))
            .unwrap();
    }
    assert_eq!(render_diff(&Diff::between(&old, &old)), None);
    let mut new_policies = old_policies.clone();
    new_policies.remove(0);
    new_policies.push(policy("app-A", "0001", "app-B", "tcp", 7000, 7000));
    let new = cell_plan(&lab, 2, &new_policies);
    let script = render_diff(&Diff::between(&old, &new)).unwrap();
    lab.cells[1].nft_script(&script).unwrap();
    assert_eq!(tcp_connect(a, b.ip, 8080), Conn::Refused);
    assert_eq!(tcp_connect(a, b.ip, 7000), Conn::Ok);
    // A diff against a state the kernel does not hold fails as a whole and changes nothing.
    let bogus = render_diff(&Diff::between(&old, &new)).unwrap();
    assert!(lab.cells[1].nft_script(&bogus).is_err());
    assert_eq!(tcp_connect(a, b.ip, 7000), Conn::Ok);
}

#[test]
fn rebuilding_from_scratch_never_drops_allowed_traffic_and_spares_other_tables() {
    let lab = two_cells();
    let (a, b) = (lab.container("a"), lab.container("b"));
    let _s = TcpServer::start(b, 8080);
    let policies = base_policies();
    let plans: Vec<Plan> = [1, 2].map(|c| cell_plan(&lab, c, &policies)).to_vec();
    for (i, p) in plans.iter().enumerate() {
        lab.cells[i].nft_script(&render_full(p, &LOG_OFF)).unwrap();
    }
    lab.cells[1]
        .nft_script("add table ip someone_else\nadd set ip someone_else keep { type ipv4_addr; }\n")
        .unwrap();

    // Connect in a loop while both cells rebuild their tables from scratch again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let path = a.ns.path();
    let addr = std::net::SocketAddr::from((b.ip, 8080));
    let loop_thread = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            netman::netns::run_in(&path, move || {
                while !stop.load(Ordering::SeqCst) {
                    // A rule gap shows as "refused" at once (REJECT). The long timeout lets
                    // the kernel retransmit a SYN dropped by a full accept queue on a loaded
                    // machine, which says nothing about the rules.
                    match std::net::TcpStream::connect_timeout(
                        &addr,
                        std::time::Duration::from_secs(5),
                    ) {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("connect failed: {e}");
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            })
            .unwrap()
        })
    };
    for _ in 0..10 {
        for (i, p) in plans.iter().enumerate() {
            lab.cells[i].nft_script(&render_full(p, &LOG_OFF)).unwrap();
        }
    }
    stop.store(true, Ordering::SeqCst);
    loop_thread.join().unwrap();
    assert!(ok.load(Ordering::SeqCst) > 10);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "a connect failed during a rebuild"
    );
    let tables = lab.cells[1].nft(&["list", "tables"]).unwrap();
    assert!(tables.contains("table ip someone_else"), "{tables}");
    assert!(tables.contains("table ip netman_vpa"), "{tables}");
}

#[test]
fn libnftables_applies_the_same_table_as_nft_and_fails_atomically() {
    let lab = two_cells();
    let policies = base_policies();
    let full = render_full(&cell_plan(&lab, 2, &policies), &LOG_OFF);
    let cell = &lab.cells[1];
    cell.nft_script(&full).unwrap();
    let by_exec = cell.nft(&["list", "table", "ip", "netman_vpa"]).unwrap();
    cell.nft(&["delete", "table", "ip", "netman_vpa"]).unwrap();
    let old = cell_plan(&lab, 2, &policies);
    let mut fewer = policies.clone();
    fewer.remove(0);
    let new = cell_plan(&lab, 2, &fewer);
    let results = netman::netns::run_in(&cell.ns.path(), move || {
        let lib = netman::agent::libnft::LibNft::open().unwrap();
        let first = lib.run(&full);
        let bad = lib.run("add element ip netman_vpa allowed { 10.0.0.1 . tcp . 1 . 0x1 }\nadd element ip netman_vpa nosuchset { 10.0.0.1 }\n");
        let diff = lib.run(&render_diff(&Diff::between(&old, &new)).unwrap());
        (first, bad, diff)
    })
    .unwrap();
    results.0.unwrap();
    let err = results.1.unwrap_err();
    assert!(
        matches!(&err, netman::agent::nft::Error::Rejected { status: None, message }
            if message.contains("No such file or directory")),
        "{err}"
    );
    results.2.unwrap();
    let mut expected = by_exec.replace("10.255.2.2 . tcp . 8080 . 0x00000001", "");
    expected.retain(|c| !c.is_whitespace() && c != ',');
    let mut got = cell.nft(&["list", "table", "ip", "netman_vpa"]).unwrap();
    got.retain(|c| !c.is_whitespace() && c != ',');
    assert_eq!(
        got, expected,
        "the failed transaction left nothing behind; the diff removed one element"
    );
}
