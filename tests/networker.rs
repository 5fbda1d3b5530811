//! garden-external-networker on real namespaces, the test playing garden's part (see
//! `networker_fixture.rs`). Every test runs once per CNI plugin variant in `PLUGINS`.

#[path = "networker_fixture.rs"]
mod fixture;

use fixture::*;
use serde_json::{json, Value};

fn container_ip(out: &Value) -> String {
    out["properties"]["garden.network.container-ip"]
        .as_str()
        .unwrap()
        .to_string()
}

fn mapped_ports(out: &Value) -> Vec<(u16, u16)> {
    let s = out["properties"]["garden.network.mapped-ports"]
        .as_str()
        .unwrap();
    let v: Vec<Value> = serde_json::from_str(s).unwrap();
    v.iter()
        .map(|m| {
            (
                m["HostPort"].as_u64().unwrap() as u16,
                m["ContainerPort"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

/// The three security-group rules of the issue: a TCP port range to one host, ICMP echo to one
/// host, UDP 53 to one host (logged).
fn asg() -> Value {
    json!([
        tcp_rule(NET_A, NET_A, 8000, 8010, false),
        {"protocol": 3, "networks": [{"start": NET_B, "end": NET_B}], "icmps": {"type": 8, "code": 0}},
        {"protocol": 2, "networks": [{"start": NET_C, "end": NET_C}], "ports": [{"start": 53, "end": 53}], "log": true},
    ])
}

#[test]
fn up_netin_asgs_down_and_again() {
    for &plugin in PLUGINS {
        let mut cell = Cell::new(plugin);
        cell.internet_tcp(&[8005, 8011]);
        cell.internet_udp(&[53, 54]);
        let before = cell.iptables_save();
        for round in 0..2 {
            let k = Container::start();
            let handle = format!("ctr-{round}");
            let out = cell
                .up(&handle, &up_input(k.pid(), &[(0, 8080), (0, 9090)], asg()))
                .unwrap();
            let ip = container_ip(&out);
            assert!(ip.starts_with("10.77.0."), "{out}");
            assert_eq!(mapped_ports(&out), vec![(61000, 8080), (61001, 9090)]);
            assert_eq!(out["dns_servers"], json!(["10.77.0.1"]));
            assert_eq!(out["search_domains"], json!(["apps.internal"]));
            assert_eq!(out["properties"]["garden.network.interface"], "eth0");
            assert_eq!(cell.store()[&handle]["ip"], ip.as_str());
            assert_eq!(
                cell.store()[&handle]["metadata"]["policy_group_id"],
                "app-1"
            );
            assert_eq!(
                cell.port_state()["acquired_ports"][&handle],
                json!([61000, 61001])
            );

            // NetIn: from outside through the cell's address and the mapped ports.
            let _s1 = tcp_server(&k.ns.path(), format!("{ip}:8080").parse().unwrap());
            let _s2 = tcp_server(&k.ns.path(), format!("{ip}:9090").parse().unwrap());
            tcp_probe(&cell.outside.path(), &format!("{CELL_IP}:61000")).unwrap();
            tcp_probe(&cell.outside.path(), &format!("{CELL_IP}:61001")).unwrap();
            assert!(tcp_probe(&cell.outside.path(), &format!("{CELL_IP}:61002")).is_err());
            // ...but not straight to the container (c2c default deny of untagged traffic).
            cell.outside
                .exec(&["ip", "route", "add", SUBNET, "via", CELL_IP])
                .ok();
            assert!(tcp_probe(&cell.outside.path(), &format!("{ip}:8080")).is_err());

            // NetOut: exactly what the rules say.
            let kp = k.ns.path();
            tcp_probe(&kp, &format!("{NET_A}:8005")).unwrap();
            assert!(tcp_probe(&kp, &format!("{NET_A}:8011")).is_err());
            assert!(tcp_probe(&kp, &format!("{NET_B}:8005")).is_err());
            assert!(ping(&k.ns, NET_B));
            assert!(!ping(&k.ns, NET_A));
            udp_probe(&kp, &format!("{NET_C}:53")).unwrap();
            assert!(udp_probe(&kp, &format!("{NET_C}:54")).is_err());
            assert!(udp_probe(&kp, &format!("{NET_A}:53")).is_err());
            // The container cannot reach the cell itself except DNS.
            let cell_port = format!("10.77.0.1:{}", 2222 + round);
            let _cell_ssh = tcp_server(&cell.cell.path(), cell_port.parse().unwrap());
            assert!(tcp_probe(&kp, &cell_port).is_err());

            // Logging: the logged UDP rule goes to the NFLOG chain.
            let save = cell.iptables_save();
            assert!(save.contains(&format!("-A netout--{handle}--log ! -p udp -m conntrack --ctstate INVALID,NEW,UNTRACKED -j NFLOG --nflog-prefix OK_{handle} --nflog-group 7")), "{save}");
            assert!(
                save.contains(&format!("-m udp --dport 53 -g netout--{handle}--log")),
                "{save}"
            );
            assert!(!save.contains("DENY_"), "deny logging is off: {save}");

            cell.down(&handle).unwrap();
            assert_eq!(
                cell.iptables_save(),
                before,
                "down must restore iptables exactly"
            );
            assert_eq!(cell.store(), json!({}));
            assert_eq!(cell.port_state()["acquired_ports"], json!({}));
            assert_eq!(cell.leftover_files(), Vec::<String>::new());
            cell.down(&handle).unwrap();
            assert!(tcp_probe(&cell.outside.path(), &format!("{CELL_IP}:61000")).is_err());
        }
    }
}

#[test]
fn deny_logging_rules_when_asked() {
    for &plugin in PLUGINS {
        let cell = Cell::with_config(plugin, |c| {
            c["iptables_asg_logging"] = json!(true);
            c["iptables_c2c_logging"] = json!(true);
            c["deny_networks"] = json!({"always": ["198.51.100.0/30"], "running": ["172.16.0.0/12"], "staging": ["192.168.0.0/16"]});
        });
        let k = Container::start();
        cell.up(
            "logged",
            &up_input(
                k.pid(),
                &[],
                json!([tcp_rule(NET_A, NET_A, 8000, 8000, false)]),
            ),
        )
        .unwrap();
        let save = cell.iptables_save();
        for want in [
            "-A netout--logged -m limit --limit 1/sec --limit-burst 1 -j NFLOG --nflog-prefix DENY_logged --nflog-group 7",
            "-A overlay--logged -d 10.77.0.",
            "-j NFLOG --nflog-prefix DENY_C2C_logged --nflog-group 7",
            // asg logging on: every allow goes through the log chain
            "--dport 8000 -g netout--logged--log",
            // deny networks of an app: always + running, not staging
            "-A netout--logged -d 198.51.100.0/30 -j REJECT --reject-with icmp-port-unreachable",
            "-A netout--logged -d 172.16.0.0/12 -j REJECT",
        ] {
            assert!(save.contains(want), "missing {want:?} in\n{save}");
        }
        assert!(!save.contains("192.168.0.0/16"), "{save}");
        // deny networks win over the allow: NET_A is inside 198.51.100.0/30
        let mut cell = cell;
        cell.internet_tcp(&[8000]);
        assert!(tcp_probe(&k.ns.path(), &format!("{NET_A}:8000")).is_err());
        cell.down("logged").unwrap();
    }
}
