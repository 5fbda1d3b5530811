//! The overlay end to end on the real kernel: cells as namespaces on an underlay bridge, the real
//! controller and daemons inside them, containers made by the real plugin.

mod support;

use netman::netlink::Handle;
use netman::netns::run_in;
use std::time::Duration;
use support::overlay::*;

/// Routes/neighbours/FDB on `cell`'s VTEP that point at `subnet` (a lease's /24).
fn entries_for(cell: &Cell, subnet: &str) -> (usize, usize, usize) {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    let gw = subnet.network();
    let mac = netman::overlay::vtep_mac(subnet);
    run_in(&cell.ns.path(), move || {
        let mut h = Handle::new().unwrap();
        let vtep = h.link_by_name("silk-vtep").unwrap().expect("vtep");
        let routes = h
            .routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.dst == subnet && r.gateway == Some(gw) && r.oif == Some(vtep.index))
            .count();
        let neigh = h
            .neighbours(vtep.index)
            .unwrap()
            .into_iter()
            .filter(|n| n.ip == gw && n.mac == Some(mac) && n.permanent)
            .count();
        let fdb = h
            .fdb_entries(vtep.index)
            .unwrap()
            .into_iter()
            .filter(|f| f.mac == mac)
            .count();
        (routes, neigh, fdb)
    })
    .unwrap()
}

fn mark_counter(cell: &Cell, lock: &std::path::Path) -> u64 {
    let out = iptables(
        &cell.ns,
        lock,
        &["-t", "filter", "-L", "FORWARD", "-v", "-x", "-n"],
    );
    out.lines()
        .find(|l| l.contains("mark match 0x5"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no mark rule in {out}"))
}

#[test]
fn cells_connect_containers_carry_marks_and_converge() {
    let mut lab = Lab::new(LabOptions {
        cells: 3,
        ..Default::default()
    });
    let subnets: Vec<String> = lab.cells.iter().map(|c| c.info().overlay_subnet).collect();
    let unique: std::collections::HashSet<_> = subnets.iter().collect();
    assert_eq!(unique.len(), 3, "{subnets:?}");
    // The VTEP is what the reference describes: GBP, learning off, port 4789, MTU underlay - 50.
    let vtep = run_in(&lab.cells[0].ns.path(), || {
        Handle::new()
            .unwrap()
            .link_by_name("silk-vtep")
            .unwrap()
            .unwrap()
    })
    .unwrap();
    let v = vtep.vxlan.clone().unwrap();
    assert!(
        v.gbp && !v.learning && v.port == 4789 && v.vni == 1,
        "{v:?}"
    );
    assert_eq!(vtep.mtu, 1410);
    assert_eq!(lab.cells[0].info().mtu, 1410);
    // Every cell converges to the other two.
    for (i, cell) in lab.cells.iter().enumerate() {
        for (j, s) in subnets.iter().enumerate() {
            if i != j {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    wait_until("converge", Duration::from_secs(15), || {
                        entries_for(cell, s) == (1, 1, 1)
                    })
                }));
                if ok.is_err() {
                    let logs: Vec<String> = lab
                        .cells
                        .iter()
                        .map(|c| std::fs::read_to_string(&c.log).unwrap_or_default())
                        .collect();
                    let state = cell
                        .ns
                        .exec(&[
                            "sh",
                            "-c",
                            "ip route; ip neigh; bridge fdb show dev silk-vtep",
                        ])
                        .unwrap_or_default();
                    panic!(
                        "cell {i} did not converge to {s}: {:?}\nstate: {state}\nlogs: {logs:#?}",
                        entries_for(cell, s)
                    );
                }
            }
        }
    }

    let a1 = add_container(&lab, 0, "1.1.0");
    let a2 = add_container(&lab, 0, "1.0.0");
    let b = add_container(&lab, 1, "0.4.0");
    let c = add_container(&lab, 2, "1.1.0");
    let net0: ipnet::Ipv4Net = subnets[0].parse().unwrap();
    assert!(net0.contains(&a1.ip.parse::<std::net::Ipv4Addr>().unwrap()));
    assert_eq!(a1.result["interfaces"][1]["mtu"], 1410);

    // ICMP across cells and within one.
    assert!(ping(&a1.ns, &b.ip), "cell0 -> cell1");
    assert!(ping(&b.ns, &c.ip), "cell1 -> cell2");
    assert!(ping(&a1.ns, &a2.ip), "same cell");
    // TCP across cells and within one.
    let srv = tcp_server(&b.ns, 8080);
    assert_eq!(tcp_get(&a1.ns, &b.ip, 8080).unwrap(), "hello");
    srv.join().unwrap();
    let srv = tcp_server(&a2.ns, 8081);
    assert_eq!(tcp_get(&a1.ns, &a2.ip, 8081).unwrap(), "hello");
    srv.join().unwrap();

    // A mark set in the source cell arrives in the destination cell (GBP).
    let lock = lab.dir.path().join("xtables.lock");
    let src_veth = netman::overlay::plugin::host_veth_name(a1.ip.parse().unwrap());
    iptables(
        &lab.cells[0].ns,
        &lock,
        &[
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-i",
            &src_veth,
            "-j",
            "MARK",
            "--set-mark",
            "0x5",
        ],
    );
    iptables(
        &lab.cells[1].ns,
        &lock,
        &[
            "-A", "FORWARD", "-m", "mark", "--mark", "0x5", "-j", "ACCEPT",
        ],
    );
    let before = mark_counter(&lab.cells[1], &lock);
    // Unmarked traffic (from a2) does not count.
    assert!(ping(&a2.ns, &b.ip));
    assert_eq!(mark_counter(&lab.cells[1], &lock), before);
    for _ in 0..3 {
        assert!(ping(&a1.ns, &b.ip));
    }
    assert!(
        mark_counter(&lab.cells[1], &lock) >= before + 3,
        "marked packets arrived with the mark"
    );

    // A daemon restart keeps its lease and its containers' connectivity.
    let code = lab.cells[1].daemon.as_mut().unwrap().terminate().code();
    assert_eq!(code, Some(0), "clean exit on SIGTERM");
    assert!(
        ping(&a1.ns, &b.ip),
        "data plane survives the daemon being down"
    );
    lab.cells[1].start_daemon();
    assert_eq!(
        lab.cells[1].info().overlay_subnet,
        subnets[1],
        "same lease after restart"
    );
    assert!(ping(&a1.ns, &b.ip));
    assert!(ping(&b.ns, &c.ip));

    // A cell that leaves (daemon stopped, lease released) disappears from the others.
    lab.cells[2].daemon.as_mut().unwrap().terminate();
    release_lease(&lab, &lab.cells[2].underlay_ip);
    for cell in &lab.cells[..2] {
        wait_until("stale cell removal", Duration::from_secs(15), || {
            entries_for(cell, &subnets[2]) == (0, 0, 0)
        });
        // The remaining peer stays.
    }
    assert_eq!(entries_for(&lab.cells[0], &subnets[1]), (1, 1, 1));
    assert!(!ping(&a1.ns, &c.ip));
    assert!(ping(&a1.ns, &b.ip));

    // Daemon metrics on the debug port.
    let metrics = run_in(&lab.cells[0].ns.path(), || {
        let agent =
            netman::http::client::agent(&Default::default(), Duration::from_secs(3)).unwrap();
        let mut r = agent.get("http://127.0.0.1:22233/metrics").call().unwrap();
        netman::http::client::body_string(&mut r, 1 << 20).unwrap()
    })
    .unwrap();
    assert!(
        metrics.contains("overlay_daemon_converge_success_total"),
        "{metrics}"
    );
}

fn release_lease(lab: &Lab, underlay_ip: &str) {
    let tls = netman::http::client::ClientTls {
        ca_cert_file: Some(lab.certs.ca.to_str().unwrap().into()),
        client_cert_file: Some(lab.certs.client.0.to_str().unwrap().into()),
        client_key_file: Some(lab.certs.client.1.to_str().unwrap().into()),
        skip_verification: false,
    };
    let ip = underlay_ip.to_string();
    run_in(&lab.underlay.path(), move || {
        let c = netman::overlay::client::ControllerClient::new(
            &format!("https://{CONTROLLER_IP}:4103"),
            &tls,
            Duration::from_secs(3),
        )
        .unwrap();
        c.release(&ip).unwrap();
    })
    .unwrap();
}

fn rewrite_config(cell: &Cell, key: &str, value: serde_json::Value) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cell.config).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&cell.config, v.to_string()).unwrap();
}

fn wait_exit(cell: &mut Cell, within: Duration) -> Option<i32> {
    let d = cell.daemon.as_mut().unwrap();
    poll(within, Duration::from_millis(100), || d.exited().is_some());
    d.exited().and_then(|s| s.code())
}

#[test]
fn controller_outage_partition_tolerance_and_subnet_kept_under_containers() {
    let mut lab = Lab::new(LabOptions::default());
    let subnets: Vec<String> = lab.cells.iter().map(|c| c.info().overlay_subnet).collect();
    let a = add_container(&lab, 0, "1.1.0");
    let b = add_container(&lab, 1, "1.1.0");
    wait_until("connectivity", Duration::from_secs(15), || {
        ping(&a.ns, &b.ip)
    });

    wait_until("daemon healthy", Duration::from_secs(10), || {
        lab.cells[0].health().0 == 200
    });
    // The controller goes away: daemons keep running, the data plane keeps working, and their
    // health says why they cannot renew.
    lab.controller.as_mut().unwrap().terminate();
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = lab.cells[0].health();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("not renewed"), "{body}");
    for cell in &mut lab.cells {
        assert!(
            cell.daemon
                .as_mut()
                .unwrap()
                .child
                .try_wait()
                .unwrap()
                .is_none(),
            "daemon survives the outage"
        );
    }
    assert!(ping(&a.ns, &b.ip));
    // A daemon restarted during the outage rediscovers its lease from the VTEP.
    lab.cells[1].daemon.as_mut().unwrap().terminate();
    lab.cells[1].start_daemon();
    assert_eq!(lab.cells[1].info().overlay_subnet, subnets[1]);
    assert!(ping(&a.ns, &b.ip));
    lab.start_controller();
    assert!(ping(&b.ns, &a.ip));
    wait_until("healthy again", Duration::from_secs(10), || {
        lab.cells[0].health().0 == 200
    });

    // Beyond the partition tolerance the daemon exits and says the cell must be restarted.
    lab.cells[0].daemon.as_mut().unwrap().terminate();
    rewrite_config(&lab.cells[0], "partition_tolerance_seconds", 2.into());
    lab.cells[0].start_daemon();
    lab.controller.as_mut().unwrap().terminate();
    let code = wait_exit(&mut lab.cells[0], Duration::from_secs(20));
    assert!(matches!(code, Some(c) if c != 0), "{code:?}");
    let log = lab.cells[0].daemon.as_ref().unwrap().log_text();
    assert!(log.contains("must be restarted"), "{log}");
    assert!(ping(&a.ns, &b.ip), "the data plane stays");

    // A lease that no longer fits the configured network is not given up while containers exist.
    lab.start_controller();
    rewrite_config(&lab.cells[0], "partition_tolerance_seconds", 3600.into());
    rewrite_config(&lab.cells[0], "overlay_network", "10.254.0.0/16".into());
    let cell = &mut lab.cells[0];
    cell.daemon = Some(spawn_in(
        &cell.ns,
        DAEMON,
        &["--config", cell.config.to_str().unwrap()],
        &cell.log,
    ));
    let code = wait_exit(cell, Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(cell
        .daemon
        .as_ref()
        .unwrap()
        .log_text()
        .contains("containers exist"));
    assert_eq!(cell.info_or_none(), None);
    assert!(ping(&a.ns, &b.ip), "VTEP and routes untouched");
}
