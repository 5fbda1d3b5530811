//! The vxlan-policy-agent binary end to end: two cells (namespaces) over VXLAN GBP, containers,
//! the networker's default-deny chains, one agent per cell inside the cell's namespace, and a
//! policy server reached over mutual TLS.

mod support;
use support::agent_lab as lab;

use lab::policy_api::PolicyApi;
use lab::{tcp_connect, udp_roundtrip, wait_for, Conn, Lab, TcpServer, UdpEcho};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const A: &str = "app-A";
const B: &str = "app-B";
const C: &str = "app-C";

/// a (A), c (C), b2 (B) on cell 1; b (B) on cell 2; an agent in each cell.
fn setup(api: &PolicyApi, patch: impl Fn(&mut serde_json::Value)) -> Lab {
    setup_with(
        api,
        &[(1, "a", A), (1, "c", C), (1, "b2", B), (2, "b", B)],
        patch,
    )
}

/// Two cells with these containers (cell, handle, app) and an agent in each.
fn setup_with(
    api: &PolicyApi,
    containers: &[(u8, &str, &str)],
    patch: impl Fn(&mut serde_json::Value),
) -> Lab {
    let mut lab = Lab::new(2);
    for (cell, handle, app) in containers {
        lab.cell(*cell).add_container(handle, app);
    }
    for i in 1..=2 {
        let cell = lab.cell(i);
        cell.relay_to(api.internal_addr());
        cell.start_agent(&api.certs, &patch);
    }
    for cell in &lab.cells {
        cell.wait_agent_up();
    }
    lab
}

fn conn_loop(
    from: &lab::Container,
    to: std::net::Ipv4Addr,
    port: u16,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let path = from.ns.path();
    let addr = std::net::SocketAddr::from((to, port));
    let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
    let t = std::thread::spawn(move || {
        netman::netns::run_in(&path, move || {
            while !s.load(Ordering::SeqCst) {
                // A rule gap shows as "refused" at once; the long timeout covers a SYN
                // retransmitted on a loaded machine.
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                    Ok(_) => o.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("connect failed: {e}");
                        f.fetch_add(1, Ordering::SeqCst)
                    }
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .unwrap()
    });
    (stop, ok, failed, t)
}

#[test]
fn policies_converge_and_enforce_tcp_udp_ranges_same_cell_and_cross_cell() {
    let api = PolicyApi::start();
    let lab = setup(&api, |_| {});
    let (a, c, b2, b) = (
        lab.container("a"),
        lab.container("c"),
        lab.container("b2"),
        lab.container("b"),
    );
    let _tcp: Vec<TcpServer> = [b, b2]
        .iter()
        .flat_map(|t| [8080, 9005, 9011, 20500, 21000].map(|p| TcpServer::start(t, p)))
        .collect();
    let _udp = [UdpEcho::start(b, 5353), UdpEcho::start(b2, 5353)];

    // Default deny.
    assert_eq!(tcp_connect(a, b.ip, 8080), Conn::Refused);
    assert_eq!(tcp_connect(a, b2.ip, 8080), Conn::Refused);

    api.allow(&[
        (A, B, "tcp", 8080, 8080),
        (A, B, "udp", 5353, 5353),
        (A, B, "tcp", 9000, 9010),
        (A, B, "tcp", 20000, 20999),
    ]);
    for target in [b, b2] {
        wait_for(Duration::from_secs(5), Conn::Ok, || {
            tcp_connect(a, target.ip, 8080)
        })
        .unwrap_or_else(|got| {
            panic!(
                "A -> {} not allowed: {got:?}\n{}",
                target.handle,
                lab.cells[0].agent_log()
            )
        });
        assert_eq!(udp_roundtrip(a, target.ip, 5353), Conn::Ok, "udp");
        assert_eq!(tcp_connect(a, target.ip, 9005), Conn::Ok, "in range");
        assert_eq!(tcp_connect(a, target.ip, 9011), Conn::Refused, "past range");
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
        assert_eq!(
            tcp_connect(c, target.ip, 8080),
            Conn::Refused,
            "C has no policy"
        );
        assert_eq!(udp_roundtrip(c, target.ip, 5353), Conn::Refused, "C udp");
    }

    // Delete: refused within two poll intervals (1 s each by default).
    api.disallow(&[(A, B, "tcp", 8080, 8080)]);
    for target in [b, b2] {
        wait_for(Duration::from_secs(2), Conn::Refused, || {
            tcp_connect(a, target.ip, 8080)
        })
        .unwrap_or_else(|got| panic!("still {got:?} to {}", target.handle));
    }
    assert_eq!(tcp_connect(a, b.ip, 9005), Conn::Ok, "other policies stay");
}

#[test]
fn force_poll_enforces_a_new_container_at_once() {
    let api = PolicyApi::start();
    // A long poll interval: only the force-poll can explain the new container's rules.
    let mut lab = setup(&api, |c| c["poll_interval_seconds"] = 600.into());
    api.allow(&[(A, B, "tcp", 8080, 8080)]);
    for i in 0..2 {
        let (status, body) = lab.cells[i]
            .local_http("GET", 8722, "/force-policy-poll-cycle", "")
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    lab.cell(1).add_container("b3", B);
    let (status, body) = lab.cells[0]
        .local_http("GET", 8722, "/force-policy-poll-cycle", "")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (a, b3) = (lab.container("a"), lab.container("b3"));
    let _s = TcpServer::start(b3, 8080);
    assert_eq!(tcp_connect(a, b3.ip, 8080), Conn::Ok);
    assert_eq!(tcp_connect(lab.container("c"), b3.ip, 8080), Conn::Refused);
}

#[test]
fn agent_restart_and_kill_keep_allowed_connections_working() {
    let api = PolicyApi::start();
    let mut lab = setup(&api, |_| {});
    api.allow(&[(A, B, "tcp", 8080, 8080)]);
    let (a_ip, b_ip) = (lab.container("a").ip, lab.container("b").ip);
    let _s = TcpServer::start(lab.container("b"), 8080);
    wait_for(Duration::from_secs(5), Conn::Ok, || {
        tcp_connect(lab.container("a"), b_ip, 8080)
    })
    .unwrap();
    let (stop, ok, failed, t) = conn_loop(lab.container("a"), b_ip, 8080);
    for i in 1..=2u8 {
        let status = lab.cell(i).stop_agent();
        assert!(status.success(), "SIGTERM exit: {status}");
        std::thread::sleep(Duration::from_millis(300));
        let certs = &api.certs;
        lab.cell(i).start_agent(certs, |_| {});
        lab.cells[i as usize - 1].wait_agent_up();
        std::thread::sleep(Duration::from_millis(1500));
        // Killed at any moment, including mid-apply.
        lab.cell(i).kill_agent();
        lab.cell(i).start_agent(certs, |_| {});
        lab.cells[i as usize - 1].wait_agent_up();
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    assert!(ok.load(Ordering::SeqCst) > 50, "too few attempts");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "connections failed during restarts"
    );
    let _ = a_ip;
    // The restarted agents still follow changes.
    api.disallow(&[(A, B, "tcp", 8080, 8080)]);
    wait_for(Duration::from_secs(3), Conn::Refused, || {
        tcp_connect(lab.container("a"), b_ip, 8080)
    })
    .unwrap();
}

#[test]
fn a_table_removed_behind_the_agents_back_is_back_after_the_next_full_sync() {
    let api = PolicyApi::start();
    let mut lab = setup(&api, |c| c["full_sync_interval_seconds"] = 2.into());
    api.allow(&[(A, B, "tcp", 8080, 8080)]);
    let _s = TcpServer::start(lab.container("b"), 8080);
    let a_to_b = |lab: &Lab| tcp_connect(lab.container("a"), lab.container("b").ip, 8080);
    wait_for(Duration::from_secs(5), Conn::Ok, || a_to_b(&lab)).unwrap();
    // Someone deletes the agent's table on the destination cell: the flow is refused...
    lab.cell(2)
        .nft(&["delete", "table", "ip", "netman_vpa"])
        .unwrap();
    assert_eq!(a_to_b(&lab), Conn::Refused);
    // ...until the agent's next full sync rewrites the table, without any policy change.
    wait_for(Duration::from_secs(6), Conn::Ok, || a_to_b(&lab)).unwrap();
    assert!(lab
        .cell(2)
        .nft(&["list", "table", "ip", "netman_vpa"])
        .is_ok());
}

#[test]
fn policy_server_down_keeps_the_last_rules_and_recovers() {
    let mut api = PolicyApi::start();
    let lab = setup(&api, |c| c["backoff_max_seconds"] = 2.into());
    api.allow(&[(A, B, "tcp", 8080, 8080)]);
    let (a, b, c) = (lab.container("a"), lab.container("b"), lab.container("c"));
    let _s = TcpServer::start(b, 8080);
    wait_for(Duration::from_secs(5), Conn::Ok, || {
        tcp_connect(a, b.ip, 8080)
    })
    .unwrap();
    api.stop();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        tcp_connect(a, b.ip, 8080),
        Conn::Ok,
        "rules kept while the server is down"
    );
    assert_eq!(tcp_connect(c, b.ip, 8080), Conn::Refused);
    let (_, metrics) = lab.cells[1]
        .local_http("GET", 8721, "/metrics", "")
        .unwrap();
    assert!(
        metrics.contains("vpa_errors_total{kind=\"policy_server\"}"),
        "{metrics}"
    );
    // An agent started while the server is down keeps the previous run's rules too.
    let mut lab = lab;
    lab.cell(2).kill_agent();
    lab.cell(2)
        .start_agent(&api.certs, |c| c["backoff_max_seconds"] = 2.into());
    lab.cells[1].wait_agent_up();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        tcp_connect(lab.container("a"), lab.container("b").ip, 8080),
        Conn::Ok
    );
    // Back: new policies flow again (within the back-off cap).
    api.restart();
    api.allow(&[(C, B, "tcp", 8080, 8080)]);
    wait_for(Duration::from_secs(6), Conn::Ok, || {
        tcp_connect(lab.container("c"), lab.container("b").ip, 8080)
    })
    .unwrap();
}

#[test]
fn debug_endpoints_toggle_logging_report_metrics_and_a_broken_store() {
    let api = PolicyApi::start();
    let lab = setup(&api, |_| {});
    api.allow(&[(A, B, "tcp", 8080, 8080)]);
    let (a, b) = (lab.container("a"), lab.container("b"));
    let _s = TcpServer::start(b, 8080);
    wait_for(Duration::from_secs(5), Conn::Ok, || {
        tcp_connect(a, b.ip, 8080)
    })
    .unwrap();
    let cell = &lab.cells[1];
    let get = || {
        cell.local_http("GET", 8721, "/iptables-c2c-logging", "")
            .unwrap()
    };
    assert_eq!(get(), (200, r#"{"enabled":false}"#.to_string()));
    let put = |body: &str| {
        cell.local_http("PUT", 8721, "/iptables-c2c-logging", body)
            .unwrap()
    };
    assert_eq!(
        put("nope"),
        (
            400,
            r#"{"error":"decoding request body as json"}"#.to_string()
        )
    );
    assert_eq!(
        put("{}"),
        (
            400,
            r#"{"error":"missing required key 'enabled'"}"#.to_string()
        )
    );
    assert_eq!(put(r#"{"enabled":true}"#).0, 200);
    assert_eq!(get(), (200, r#"{"enabled":true}"#.to_string()));
    let chain = cell
        .nft(&["list", "chain", "ip", "netman_vpa", "forward"])
        .unwrap();
    assert!(chain.contains("log prefix \"OK_C2C \" group 2"), "{chain}");
    assert_eq!(put(r#"{"enabled":false}"#).0, 200);
    let chain = cell
        .nft(&["list", "chain", "ip", "netman_vpa", "forward"])
        .unwrap();
    assert!(!chain.contains("log"), "{chain}");

    let (status, metrics) = cell.local_http("GET", 8721, "/metrics", "").unwrap();
    assert_eq!(status, 200);
    for name in [
        "vpa_enforce_duration_seconds",
        "vpa_poll_duration_seconds",
        "vpa_nft_elements{set=\"allowed\"} 1",
        "vpa_last_success_timestamp_seconds",
        "vpa_uptime_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert_eq!(cell.local_http("GET", 8721, "/health", "").unwrap().0, 200);

    // A store that cannot be parsed: reported, rules kept.
    std::fs::write(cell.store_path(), "{broken").unwrap();
    std::fs::write(cell.dir.path().join("store.json_version"), "1000").unwrap();
    let (status, body) = cell
        .local_http("GET", 8722, "/force-policy-poll-cycle", "")
        .unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("failed to force policy poll cycle"), "{body}");
    assert_eq!(cell.local_http("GET", 8721, "/health", "").unwrap().0, 500);
    assert_eq!(tcp_connect(a, b.ip, 8080), Conn::Ok);
    let (_, metrics) = cell.local_http("GET", 8721, "/metrics", "").unwrap();
    assert!(
        metrics.contains("vpa_errors_total{kind=\"container_store\"}"),
        "{metrics}"
    );
}

/// Issue 18, item 1, the reproduction with two cells: allow frontend → backend (frontend gets a
/// tag), stop frontend's cell's agent (its rules, and its mark, stay), remove that policy (the tag
/// is released), allow backend-4 → backend-2. backend-4 must not get frontend's old tag: frontend,
/// still marked with it by its stale cell, would then reach backend-2, which no policy allows.
#[test]
fn a_stale_cell_cannot_pass_its_app_off_as_another_after_a_tag_is_released() {
    const FRONTEND: &str = "app-frontend";
    const BACKEND: &str = "app-backend";
    const BACKEND2: &str = "app-backend-2";
    const BACKEND4: &str = "app-backend-4";
    let api = PolicyApi::start();
    let mut lab = setup_with(
        &api,
        &[
            (1, "fe", FRONTEND),
            (2, "be", BACKEND),
            (2, "be2", BACKEND2),
            (2, "be4", BACKEND4),
        ],
        |_| {},
    );
    let _servers = [
        TcpServer::start(lab.container("be"), 8080),
        TcpServer::start(lab.container("be2"), 8080),
    ];
    let (fe, be, be2) = (
        lab.container("fe"),
        lab.container("be"),
        lab.container("be2"),
    );
    api.allow(&[(FRONTEND, BACKEND, "tcp", 8080, 8080)]);
    wait_for(Duration::from_secs(5), Conn::Ok, || {
        tcp_connect(fe, be.ip, 8080)
    })
    .unwrap_or_else(|got| panic!("frontend -> backend: {got:?}"));
    assert_eq!(tcp_connect(fe, be2.ip, 8080), Conn::Refused);

    lab.cell(1).kill_agent();
    api.disallow(&[(FRONTEND, BACKEND, "tcp", 8080, 8080)]);
    wait_for(Duration::from_secs(5), Conn::Refused, || {
        tcp_connect(lab.container("fe"), lab.container("be").ip, 8080)
    })
    .unwrap_or_else(|got| panic!("frontend -> backend after the removal: {got:?}"));
    api.allow(&[(BACKEND4, BACKEND2, "tcp", 8080, 8080)]);
    wait_for(Duration::from_secs(5), Conn::Ok, || {
        tcp_connect(lab.container("be4"), lab.container("be2").ip, 8080)
    })
    .unwrap_or_else(|got| panic!("backend-4 -> backend-2: {got:?}"));
    let (fe, be2) = (lab.container("fe"), lab.container("be2"));
    for _ in 0..3 {
        assert_eq!(
            tcp_connect(fe, be2.ip, 8080),
            Conn::Refused,
            "frontend, marked with its released tag by its stale cell, reached backend-2"
        );
    }
}

/// A cell cut off from the policy server for longer than `policy_stale_after_seconds` keeps its
/// rules and says so in `/health` and `/metrics`; it recovers with the server.
#[test]
fn a_cell_cut_off_for_longer_than_the_quarantine_reports_stale() {
    let mut api = PolicyApi::start();
    let lab = setup(&api, |c| {
        c["policy_stale_after_seconds"] = 2.into();
        c["backoff_max_seconds"] = 1.into();
    });
    api.allow(&[(A, B, "tcp", 8080, 8080)]);
    let (a, b) = (lab.container("a"), lab.container("b"));
    let _s = TcpServer::start(b, 8080);
    wait_for(Duration::from_secs(5), Conn::Ok, || {
        tcp_connect(a, b.ip, 8080)
    })
    .unwrap();
    let health = || lab.cells[0].local_http("GET", 8721, "/health", "").unwrap();
    assert_eq!(health().0, 200, "{:?}", health());
    api.stop();
    wait_for(Duration::from_secs(10), 500, || health().0)
        .unwrap_or_else(|got| panic!("health {got} while cut off"));
    let (_, text) = health();
    assert!(text.contains("stale"), "{text}");
    let (_, metrics) = lab.cells[0]
        .local_http("GET", 8721, "/metrics", "")
        .unwrap();
    assert!(metrics.contains("vpa_policies_stale 1"), "{metrics}");
    assert_eq!(
        tcp_connect(a, b.ip, 8080),
        Conn::Ok,
        "the last rules stay enforced"
    );
    api.restart();
    wait_for(Duration::from_secs(10), 200, || health().0)
        .unwrap_or_else(|got| panic!("health {got} after the server came back"));
    let (_, metrics) = lab.cells[0]
        .local_http("GET", 8721, "/metrics", "")
        .unwrap();
    assert!(metrics.contains("vpa_policies_stale 0"), "{metrics}");
}
