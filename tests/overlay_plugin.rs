//! The overlay CNI plugin driven as a runtime drives it: exhaustion, DEL idempotence (also with
//! the daemon down), CHECK, VERSION, GC, STATUS, and a conflist chaining the reference portmap.

mod support;

use netman::lab::netns::NamedNetns;
use netman::overlay::plugin::RETIRED_PREFIX;
use std::time::Duration;
use support::overlay::*;

fn host_veths(cell: &Cell) -> usize {
    cell.ns
        .exec(&["ip", "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(": s-"))
        .count()
}

fn allocations(cell: &Cell) -> usize {
    std::fs::read_dir(cell.data_dir.join("ipam/overlay-net"))
        .map(|d| {
            d.flatten()
                .filter(|f| {
                    f.file_name()
                        .to_string_lossy()
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok()
                })
                .count()
        })
        .unwrap_or(0)
}

/// After DEL, `eth0` is gone from the container; the pair's container end, left to the
/// namespace under its retired name, is down, and no address but loopback's is left.
fn disarmed(ns: &NamedNetns) -> bool {
    let retired = links_named(ns, RETIRED_PREFIX);
    let addresses = ns.exec(&["ip", "-o", "-4", "addr", "show"]).unwrap();
    ns.exec(&["ip", "link", "show", "eth0"]).is_err()
        && !retired.is_empty()
        && retired.iter().all(|l| !flags(l).contains(&"UP"))
        && addresses.lines().all(|l| l.contains(" lo "))
}

/// The flags of a line of `ip -o link show`: `5: eth0@if6: <BROADCAST,MULTICAST,UP> ...`.
fn flags(line: &str) -> Vec<&str> {
    line.split(['<', '>'])
        .nth(1)
        .unwrap_or("")
        .split(',')
        .collect()
}

/// The links whose name starts with `prefix`, as `ip -o link show` lines.
fn links_named(ns: &NamedNetns, prefix: &str) -> Vec<String> {
    ns.exec(&["ip", "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter(|l| l.split(": ").nth(1).is_some_and(|n| n.starts_with(prefix)))
        .map(str::to_string)
        .collect()
}

fn del(cell: &NamedNetns, id: &str, ns: &NamedNetns, conf: &serde_json::Value) {
    let run = run_plugin(
        cell,
        PLUGIN,
        "DEL",
        id,
        ns.path().to_str().unwrap(),
        "eth0",
        conf,
    );
    assert_eq!((run.status, run.stdout.as_str()), (0, ""), "{}", run.stdout);
}

/// DEL does not delete the veth pair (that would wait in the kernel for RCU callbacks): it
/// takes the container's address and link down inside, the host end down without address or
/// route, both ends out of the way under other names, and only then releases the IP. The IP
/// is at once usable by the next container, a retried ADD into the same namespace works, and
/// the pairs go with the old namespace.
#[test]
fn del_retires_the_pair_and_the_old_namespace_takes_it_away() {
    let (lab, cell_ns, _) = one_cell(24);
    let conf = lab.net_conf(0, "1.1.0");
    let old = add_container(&lab, 0, "1.1.0");
    let ip = old.ip.clone();
    let host_end = netman::overlay::plugin::host_veth_name(ip.parse().unwrap());
    assert!(ping(&old.ns, "169.254.0.1"));
    assert!(links_named(&cell_ns, RETIRED_PREFIX).is_empty());

    del(&cell_ns, &old.id, &old.ns, &conf);
    assert!(
        disarmed(&old.ns),
        "the old container keeps its address or eth0"
    );
    assert!(
        links_named(&cell_ns, &host_end).is_empty(),
        "{host_end} is still there"
    );
    let retired = links_named(&cell_ns, RETIRED_PREFIX);
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert!(!flags(&retired[0]).contains(&"UP"), "{}", retired[0]);
    let addresses = cell_ns.exec(&["ip", "-o", "-4", "addr", "show"]).unwrap();
    assert!(
        !addresses.lines().any(|l| l.contains(RETIRED_PREFIX)),
        "{addresses}"
    );
    let routes = cell_ns
        .exec(&["ip", "-4", "route", "show", "table", "all"])
        .unwrap();
    assert!(!routes.contains(&format!("{ip} ")), "{routes}");
    // A second DEL changes nothing and succeeds.
    del(&cell_ns, &old.id, &old.ns, &conf);
    assert_eq!(links_named(&cell_ns, RETIRED_PREFIX).len(), 1);
    assert_eq!(links_named(&old.ns, RETIRED_PREFIX).len(), 1);

    // A runtime may ADD into the same namespace again (a retry): eth0 is free for it.
    let run = add(&cell_ns, &old.id, &old.ns, &conf, "");
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(ping(&old.ns, "169.254.0.1"));
    del(&cell_ns, &old.id, &old.ns, &conf);
    assert!(disarmed(&old.ns));
    assert_eq!(links_named(&cell_ns, RETIRED_PREFIX).len(), 2);

    // The next container gets the first IP while the old pairs still exist, and the cell
    // reaches it.
    let next = NamedNetns::create(&unique("k")).unwrap();
    let run = add(&cell_ns, "ctr-next", &next, &conf, &format!("IP={ip}"));
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(ping(&cell_ns, &ip));
    assert!(ping(&next, "169.254.0.1"));

    // The old namespace takes its pairs with it.
    drop(old);
    support::wait_until("the retired pairs to go", Duration::from_secs(20), || {
        links_named(&cell_ns, RETIRED_PREFIX).is_empty()
    });
    assert!(ping(&cell_ns, &ip));
    del(&cell_ns, "ctr-next", &next, &conf);
    std::mem::forget(cell_ns); // owned by the lab
}

#[test]
fn exhaustion_del_check_gc_status_version() {
    // /29 leases: .1 to .6 for containers.
    let mut lab = Lab::new(LabOptions {
        cells: 1,
        prefix: 29,
        ..Default::default()
    });
    let cell_ns = lab.cells[0].ns.name.clone();
    let cell_ns = NamedNetns { name: cell_ns };
    let containers: Vec<Container> = (0..6).map(|_| add_container(&lab, 0, "1.1.0")).collect();
    assert_eq!(host_veths(&lab.cells[0]), 6);

    // The seventh gets a clean CNI error and leaves nothing behind.
    let extra = NamedNetns::create(&unique("k")).unwrap();
    let conf = lab.net_conf(0, "1.1.0");
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "ADD",
        "ctr-extra",
        extra.path().to_str().unwrap(),
        "eth0",
        &conf,
    );
    assert_eq!(run.status, 1, "{}", run.stdout);
    let err = run.json();
    assert_eq!(err["code"], 100, "{err}");
    assert_eq!(err["cniVersion"], "1.1.0");
    assert_eq!(err["msg"], "no IP address available");
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains(&lab.cells[0].info().overlay_subnet),
        "{err}"
    );
    assert_eq!(host_veths(&lab.cells[0]), 6);
    assert!(extra.exec(&["ip", "link", "show", "eth0"]).is_err());
    assert_eq!(allocations(&lab.cells[0]), 6);

    // CHECK (with ADD's result as prevResult): a healthy container passes, an unknown one is
    // code 3.
    let c0 = &containers[0];
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = c0.result.clone();
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "CHECK",
        &c0.id,
        c0.ns.path().to_str().unwrap(),
        "eth0",
        &check_conf,
    );
    assert_eq!((run.status, run.stdout.as_str()), (0, ""), "{}", run.stdout);
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "CHECK",
        "nobody",
        c0.ns.path().to_str().unwrap(),
        "eth0",
        &conf,
    );
    assert_eq!(run.json()["code"], 3);

    // DEL twice, and DEL of an unknown container, succeed.
    for _ in 0..2 {
        let run = run_plugin(
            &cell_ns,
            PLUGIN,
            "DEL",
            &c0.id,
            c0.ns.path().to_str().unwrap(),
            "eth0",
            &conf,
        );
        assert_eq!((run.status, run.stdout.as_str()), (0, ""), "{}", run.stdout);
    }
    assert_eq!(host_veths(&lab.cells[0]), 5);
    assert!(disarmed(&c0.ns), "c0 keeps its address after DEL");
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "DEL",
        "never-existed",
        "/run/netns/does-not-exist",
        "eth0",
        &conf,
    );
    assert_eq!(run.status, 0, "{}", run.stdout);
    // The freed IP is usable again.
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "ADD",
        "ctr-extra",
        extra.path().to_str().unwrap(),
        "eth0",
        &conf,
    );
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(
        run.json()["ips"][0]["address"],
        c0.result["ips"][0]["address"]
    );

    // VERSION.
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "VERSION",
        "",
        "",
        "",
        &serde_json::json!({"cniVersion": "1.0.0"}),
    );
    let v = run.json();
    let supported: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in ["0.4.0", "1.0.0", "1.1.0"] {
        assert!(supported.contains(&want), "{v}");
    }

    // With the daemon down: STATUS says not available (50), ADD asks to retry (11), DEL works.
    assert_eq!(
        lab.cells[0].daemon.as_mut().unwrap().terminate().code(),
        Some(0)
    );
    let run = run_plugin(&cell_ns, PLUGIN, "STATUS", "", "", "", &conf);
    assert_eq!(run.json()["code"], 50);
    let spare = NamedNetns::create(&unique("k")).unwrap();
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "ADD",
        "ctr-spare",
        spare.path().to_str().unwrap(),
        "eth0",
        &conf,
    );
    assert_eq!(run.json()["code"], 11);
    let c1 = &containers[1];
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "DEL",
        &c1.id,
        c1.ns.path().to_str().unwrap(),
        "eth0",
        &conf,
    );
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(host_veths(&lab.cells[0]), 5);
    lab.cells[0].start_daemon();
    let run = run_plugin(&cell_ns, PLUGIN, "STATUS", "", "", "", &conf);
    assert_eq!((run.status, run.stdout.as_str()), (0, ""));
    // GC needs 1.1.0.
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "GC",
        "",
        "",
        "",
        &lab.net_conf(0, "1.0.0"),
    );
    assert_eq!(run.json()["code"], 1);

    // GC keeps only the valid attachments.
    let keep = &containers[2];
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": keep.id, "ifname": "eth0"}]);
    let run = run_plugin(&cell_ns, PLUGIN, "GC", "", "", "", &gc_conf);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(allocations(&lab.cells[0]), 1);
    assert_eq!(host_veths(&lab.cells[0]), 1);
    assert!(ping(&keep.ns, "169.254.0.1"));
    std::mem::forget(cell_ns); // owned by the lab
}

#[test]
fn conflist_chains_reference_portmap() {
    let lab = Lab::new(LabOptions {
        cells: 1,
        ..Default::default()
    });
    let cell = &lab.cells[0];
    let ctr = NamedNetns::create(&unique("k")).unwrap();
    let netns = ctr.path().to_str().unwrap().to_string();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "overlay-net",
        "plugins": [
            {"type": "overlay", "dataDir": cell.data_dir, "daemonPort": 23954},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    let mappings =
        serde_json::json!([{"hostPort": 9090, "containerPort": 8080, "protocol": "tcp"}]);
    // A runtime's ADD: each plugin gets name, cniVersion, prevResult and its capabilities.
    let plugin_conf = |p: &serde_json::Value, prev: Option<&serde_json::Value>| {
        let mut c = p.clone();
        c["name"] = conflist["name"].clone();
        c["cniVersion"] = conflist["cniVersion"].clone();
        if p.get("capabilities").is_some() {
            c["runtimeConfig"] = serde_json::json!({"portMappings": mappings});
        }
        if let Some(prev) = prev {
            c["prevResult"] = prev.clone();
        }
        c
    };
    let binary = |t: &str| {
        if t == "overlay" {
            PLUGIN.to_string()
        } else {
            format!("/usr/lib/cni/{t}")
        }
    };
    let mut prev: Option<serde_json::Value> = None;
    for p in conflist["plugins"].as_array().unwrap() {
        let conf = plugin_conf(p, prev.as_ref());
        let run = run_plugin(
            &cell.ns,
            &binary(p["type"].as_str().unwrap()),
            "ADD",
            "ctr-pm",
            &netns,
            "eth0",
            &conf,
        );
        assert_eq!(
            run.status, 0,
            "{}: {} {}",
            p["type"], run.stdout, run.stderr
        );
        prev = Some(run.json());
    }
    let result = prev.clone().unwrap();
    validate_result(&result, "1.0.0", &netns);
    let ip = result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_string();

    // From outside the cell (the underlay) to the cell's IP and host port -> the container.
    let srv = tcp_server(&ctr, 8080);
    assert_eq!(
        tcp_get(&lab.underlay, &cell.underlay_ip, 9090).unwrap(),
        "hello"
    );
    srv.join().unwrap();
    // And directly over the overlay address from the cell.
    let srv = tcp_server(&ctr, 8080);
    assert_eq!(tcp_get(&cell.ns, &ip, 8080).unwrap(), "hello");
    srv.join().unwrap();

    // DEL in reverse order with the final result.
    for p in conflist["plugins"].as_array().unwrap().iter().rev() {
        let conf = plugin_conf(p, prev.as_ref());
        let run = run_plugin(
            &cell.ns,
            &binary(p["type"].as_str().unwrap()),
            "DEL",
            "ctr-pm",
            &netns,
            "eth0",
            &conf,
        );
        assert_eq!(
            run.status, 0,
            "{}: {} {}",
            p["type"], run.stdout, run.stderr
        );
    }
    assert!(disarmed(&ctr));
    assert!(tcp_get(&lab.underlay, &cell.underlay_ip, 9090).is_err());
    let _ = Duration::from_secs(0);
}

// ---- Issue 18 item 8: CNI details ----

fn one_cell(prefix: u8) -> (Lab, NamedNetns, ipnet::Ipv4Net) {
    let lab = Lab::new(LabOptions {
        cells: 1,
        prefix,
        ..Default::default()
    });
    let cell_ns = NamedNetns {
        name: lab.cells[0].ns.name.clone(),
    };
    let subnet = lab.cells[0].info().overlay_subnet.parse().unwrap();
    (lab, cell_ns, subnet)
}

/// The `i`-th address of `subnet`.
fn nth(subnet: ipnet::Ipv4Net, i: u32) -> String {
    std::net::Ipv4Addr::from(u32::from(subnet.network()) + i).to_string()
}

fn add(
    cell: &NamedNetns,
    id: &str,
    ns: &NamedNetns,
    conf: &serde_json::Value,
    args: &str,
) -> PluginRun {
    let netns = ns.path();
    let attachment = [id, netns.to_str().unwrap(), "eth0"];
    run_plugin_with_args(cell, PLUGIN, "ADD", attachment, conf, args)
}

#[test]
fn check_consults_prev_result() {
    let (lab, cell_ns, _) = one_cell(24);
    let c = add_container(&lab, 0, "1.1.0");
    let check = |prev: Option<serde_json::Value>| {
        let mut conf = lab.net_conf(0, "1.1.0");
        if let Some(p) = prev {
            conf["prevResult"] = p;
        }
        let netns = c.ns.path();
        let attachment = [c.id.as_str(), netns.to_str().unwrap(), "eth0"];
        run_plugin_with_args(&cell_ns, PLUGIN, "CHECK", attachment, &conf, "")
    };
    let run = check(Some(c.result.clone()));
    assert_eq!((run.status, run.stdout.as_str()), (0, ""), "{}", run.stdout);

    // An ADD result that names another IP than the container has.
    let mut other = c.result.clone();
    let ip: std::net::Ipv4Addr = c.ip.parse().unwrap();
    let wrong = std::net::Ipv4Addr::from(u32::from(ip) + 1);
    other["ips"][0]["address"] = serde_json::json!(format!("{wrong}/32"));
    let run = check(Some(other));
    assert_eq!(run.status, 1, "{}", run.stdout);
    let e = run.json();
    assert_eq!(e["code"], 100, "{e}");
    let details = e["details"].as_str().unwrap();
    assert!(
        details.contains(&wrong.to_string()) && details.contains(&c.ip),
        "{e}"
    );

    // The container interface of prevResult must be the one in this namespace.
    let mut moved = c.result.clone();
    moved["interfaces"][1]["sandbox"] = serde_json::json!("/run/netns/elsewhere");
    let run = check(Some(moved));
    assert_eq!(run.status, 1, "{}", run.stdout);
    assert!(
        run.json()["details"].as_str().unwrap().contains("sandbox"),
        "{}",
        run.stdout
    );

    // No prevResult at all: CHECK cannot do what the spec asks of it.
    let run = check(None);
    assert_eq!(run.status, 1, "{}", run.stdout);
    assert!(
        run.json()["msg"].as_str().unwrap().contains("prevResult"),
        "{}",
        run.stdout
    );
    std::mem::forget(cell_ns);
}

#[test]
fn status_is_not_ready_while_no_address_can_be_allocated() {
    // /29: .1 to .6 for containers.
    let (lab, cell_ns, _) = one_cell(29);
    let conf = lab.net_conf(0, "1.1.0");
    let status = || run_plugin_with_args(&cell_ns, PLUGIN, "STATUS", ["", "", ""], &conf, "");
    let mut containers = Vec::new();
    for _ in 0..6 {
        let run = status();
        assert_eq!((run.status, run.stdout.as_str()), (0, ""), "{}", run.stdout);
        containers.push(add_container(&lab, 0, "1.1.0"));
    }
    let run = status();
    assert_eq!(run.status, 1, "{}", run.stdout);
    let e = run.json();
    assert_eq!(e["code"], 50, "{e}");
    assert_eq!(e["msg"], "no IP address available", "{e}");
    let c = &containers[3];
    let netns = c.ns.path();
    let attachment = [c.id.as_str(), netns.to_str().unwrap(), "eth0"];
    let run = run_plugin_with_args(&cell_ns, PLUGIN, "DEL", attachment, &conf, "");
    assert_eq!(run.status, 0, "{}", run.stdout);
    let run = status();
    assert_eq!((run.status, run.stdout.as_str()), (0, ""), "{}", run.stdout);
    std::mem::forget(cell_ns);
}

#[test]
fn a_requested_ip_is_honoured_or_refused() {
    let (lab, cell_ns, subnet) = one_cell(29);
    let conf = lab.net_conf(0, "1.1.0");
    let k5 = NamedNetns::create(&unique("k")).unwrap();
    let run = add(
        &cell_ns,
        "want-5",
        &k5,
        &conf,
        &format!("IgnoreUnknown=1;IP={}", nth(subnet, 5)),
    );
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(
        run.json()["ips"][0]["address"],
        format!("{}/32", nth(subnet, 5))
    );
    assert!(k5
        .exec(&["ip", "-o", "addr", "show", "dev", "eth0"])
        .unwrap()
        .contains(&nth(subnet, 5)));

    // The `ips` capability (runtimeConfig), as CIDR.
    let k6 = NamedNetns::create(&unique("k")).unwrap();
    let mut with_cap = conf.clone();
    with_cap["runtimeConfig"] = serde_json::json!({"ips": [format!("{}/24", nth(subnet, 6))]});
    let run = add(&cell_ns, "want-6", &k6, &with_cap, "");
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert_eq!(
        run.json()["ips"][0]["address"],
        format!("{}/32", nth(subnet, 6))
    );

    // Refusals: a clear error, nothing allocated, no interface.
    let outside = std::net::Ipv4Addr::from(u32::from(subnet.broadcast()) + 1).to_string();
    let refusals: Vec<(String, Option<serde_json::Value>, &str)> = vec![
        (
            format!("IP={}", nth(subnet, 5)),
            None,
            "is allocated to want-5",
        ),
        (
            format!("IP={outside}"),
            None,
            "is not in this cell's subnet",
        ),
        (
            format!("IP={}", nth(subnet, 0)),
            None,
            "network or broadcast address",
        ),
        (
            format!("IP={}", nth(subnet, 7)),
            None,
            "network or broadcast address",
        ),
        ("IP=10.1.2.300".into(), None, "not an IPv4 address"),
        ("IP=fd00::5".into(), None, "not an IPv4 address"),
        (
            format!("IP={}", nth(subnet, 2)),
            Some(serde_json::json!({"ips": [format!("{}/29", nth(subnet, 3))]})),
            "more than one IP requested",
        ),
        (
            String::new(),
            Some(
                serde_json::json!({"ips": [format!("{}/29", nth(subnet, 2)), format!("{}/29", nth(subnet, 3))]}),
            ),
            "more than one IP requested",
        ),
    ];
    let k = NamedNetns::create(&unique("k")).unwrap();
    for (args, runtime, want) in refusals {
        let mut c = conf.clone();
        if let Some(rt) = runtime {
            c["runtimeConfig"] = rt;
        }
        let run = add(&cell_ns, "refused", &k, &c, &args);
        assert_eq!(run.status, 1, "{args}: {}", run.stdout);
        let e = run.json();
        assert_eq!(e["msg"], "requested IP refused", "{args}: {e}");
        assert!(e["details"].as_str().unwrap().contains(want), "{args}: {e}");
        assert!(k.exec(&["ip", "link", "show", "eth0"]).is_err());
        assert_eq!(allocations(&lab.cells[0]), 2, "{args}");
    }
    std::mem::forget(cell_ns);
}
