//! The overlay CNI plugin driven as a runtime drives it: exhaustion, DEL idempotence (also with
//! the daemon down), CHECK, VERSION, GC, STATUS, and a conflist chaining the reference portmap.

mod overlay_common;

use netman::lab::netns::NamedNetns;
use overlay_common::*;
use std::time::Duration;

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

    // CHECK: a healthy container passes, an unknown one is code 3.
    let c0 = &containers[0];
    let run = run_plugin(
        &cell_ns,
        PLUGIN,
        "CHECK",
        &c0.id,
        c0.ns.path().to_str().unwrap(),
        "eth0",
        &conf,
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
    assert!(c0.ns.exec(&["ip", "link", "show", "eth0"]).is_err());
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
    assert_eq!(lab.cells[0].daemon.as_mut().unwrap().terminate(), Some(0));
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
    assert!(ctr.exec(&["ip", "link", "show", "eth0"]).is_err());
    assert!(tcp_get(&lab.underlay, &cell.underlay_ip, 9090).is_err());
    let _ = Duration::from_secs(0);
}
