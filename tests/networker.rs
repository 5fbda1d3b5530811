//! garden-external-networker on real namespaces, the test playing garden's part (see
//! `support/networker_fixture.rs`). Every test runs once per CNI plugin variant in `PLUGINS`.

mod support;
use support::networker_fixture as fixture;

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
            assert!(ip.starts_with(plugin.container_prefix()), "{out}");
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
                .exec(&[
                    "ip",
                    "route",
                    "add",
                    plugin.overlay_network(),
                    "via",
                    CELL_IP,
                ])
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
            let port = 2222 + round;
            let _cell_ssh = tcp_server(&cell.cell.path(), ([0, 0, 0, 0], port).into());
            let cell_port = format!("{}:{port}", plugin.gateway());
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
        let c2c_deny = format!("-A overlay--logged -d {}", plugin.container_prefix());
        for want in [
            "-A netout--logged -m limit --limit 1/sec --limit-burst 1 -j NFLOG --nflog-prefix DENY_logged --nflog-group 7",
            &c2c_deny,
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

/// Everything the networker can leave behind.
fn state(cell: &Cell) -> (String, Value, Value, Vec<String>) {
    (
        cell.iptables_save(),
        cell.store(),
        cell.port_state()["acquired_ports"].clone(),
        cell.leftover_files(),
    )
}

#[test]
fn bad_input_gives_a_clear_error_and_leaves_no_state() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let k = Container::start();
        let before = state(&cell);
        let good = up_input(k.pid(), &[(0, 8080)], asg());

        let o = cell.run(&["--action", "up", "--handle", "h1"], "{\"Pid\": \"x\"");
        assert!(!o.ok);
        assert!(
            o.stderr.contains("reading up input from stdin"),
            "{}",
            o.stderr
        );
        assert_eq!(o.stderr.trim().lines().count(), 1, "one line: {}", o.stderr);

        let o = cell.run(&["--action", "sideways", "--handle", "h1"], "");
        assert!(!o.ok);
        assert!(o.stderr.contains("sideways"), "{}", o.stderr);

        let o = cell.run(&["--action", "up"], &good.to_string());
        assert!(!o.ok && o.stderr.contains("--handle"), "{}", o.stderr);

        let o = cell.run(&["--action", "up", "--handle", "../etc"], &good.to_string());
        assert!(!o.ok && o.stderr.contains("invalid handle"), "{}", o.stderr);

        let mut missing = cell.config.clone();
        missing.as_object_mut().unwrap().remove("datastore");
        let p = cell.path("missing.json");
        std::fs::write(&p, missing.to_string()).unwrap();
        let o = cell.run_with_config(&p, &["--action", "up", "--handle", "h1"], &good.to_string());
        assert!(
            !o.ok && o.stderr.contains("missing required config 'datastore'"),
            "{}",
            o.stderr
        );

        let mut unknown = cell.config.clone();
        unknown["start_prot"] = json!(1);
        std::fs::write(&p, unknown.to_string()).unwrap();
        let o = cell.run_with_config(&p, &["--action", "up", "--handle", "h1"], &good.to_string());
        assert!(!o.ok && o.stderr.contains("start_prot"), "{}", o.stderr);

        // --check-config: the same checks without an action, plus the CNI config it points to.
        let o = cell.run_with_config(&p, &["--check-config"], "");
        assert!(!o.ok && o.stderr.contains("start_prot"), "{}", o.stderr);
        let o = cell.run(&["--check-config"], "");
        assert!(o.ok && o.stdout.contains("is valid"), "{}", o.stderr);
        assert!(o.stdout.contains("10-test.conflist"), "{}", o.stdout);
        let o = cell.run(&["--check-config", "--action", "up"], "");
        assert!(!o.ok, "--check-config runs no action");
        let mut no_cni = cell.config.clone();
        no_cni["cni_config_dir"] = json!(cell.path("ipam"));
        std::fs::write(&p, no_cni.to_string()).unwrap();
        let o = cell.run_with_config(&p, &["--check-config"], "");
        assert!(!o.ok && o.stderr.contains("no CNI config"), "{}", o.stderr);

        // A bad security group rule: rejected before anything is touched.
        let bad = up_input(
            k.pid(),
            &[(0, 8080)],
            json!([{"protocol": 1, "networks": [{"start": NET_A, "end": NET_A}]}]),
        );
        let e = cell.up("h1", &bad).unwrap_err();
        assert!(e.contains("netout rule 0: tcp rule needs ports"), "{e}");

        // A process that does not exist.
        let e = cell
            .up("h1", &up_input(999_999_999, &[], json!([])))
            .unwrap_err();
        assert!(e.contains("does not exist"), "{e}");

        // An explicit host port inside the allocation range.
        let e = cell
            .up("h1", &up_input(k.pid(), &[(61005, 8080)], json!([])))
            .unwrap_err();
        assert!(
            e.contains("cannot specify port from allocation range"),
            "{e}"
        );

        // No CNI config at all.
        std::fs::rename(
            cell.path("cni-config/10-test.conflist"),
            cell.path("conflist.off"),
        )
        .unwrap();
        let e = cell.up("h1", &good).unwrap_err();
        assert!(e.contains("no CNI config"), "{e}");
        assert_eq!(state(&cell), before);
        std::fs::rename(
            cell.path("conflist.off"),
            cell.path("cni-config/10-test.conflist"),
        )
        .unwrap();

        // A failing CNI plugin after the real ones: the bridge ADD is undone (DEL), ports,
        // mount, cache and rules too.
        cell.write_conflist(&[json!({"type": "failing"})]);
        let e = cell.up("h1", &good).unwrap_err();
        assert!(
            e.contains("CNI plugin failing ADD failed: boom from the failing plugin: on purpose"),
            "{e}"
        );
        assert_eq!(state(&cell), before);
        cell.write_conflist(&[]);

        // An agent that answers but fails: up fails and is rolled back after the CNI ADD.
        let agent = FakeAgent::start(&cell, 500);
        let mut cfg = cell.config.clone();
        cfg["policy_agent_force_poll_url"] =
            json!(format!("http://{}/force-policy-poll-cycle", agent.addr));
        std::fs::write(&p, cfg.to_string()).unwrap();
        let o = cell.run_with_config(&p, &["--action", "up", "--handle", "h1"], &good.to_string());
        assert!(!o.ok && o.stderr.contains("returned 500"), "{}", o.stderr);
        assert_eq!(agent.hits(), vec!["/force-policy-poll-cycle".to_string()]);
        assert_eq!(state(&cell), before);

        // The same config with a working agent: up succeeds after the agent was asked.
        let agent_ok = FakeAgent::start(&cell, 200);
        cfg["policy_agent_force_poll_url"] =
            json!(format!("http://{}/force-policy-poll-cycle", agent_ok.addr));
        std::fs::write(&p, cfg.to_string()).unwrap();
        let o = cell.run_with_config(&p, &["--action", "up", "--handle", "h1"], &good.to_string());
        assert!(o.ok, "{}", o.stderr);
        assert_eq!(agent_ok.hits().len(), 1);
        // A second up of the same handle is refused and does not disturb the first.
        let before_dup = state(&cell);
        let e = cell.up("h1", &good).unwrap_err();
        assert!(e.contains("already up"), "{e}");
        assert_eq!(state(&cell), before_dup);
        cell.down("h1").unwrap();
        assert_eq!(state(&cell), before);

        // No agent listening: tolerated.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        cfg["policy_agent_force_poll_url"] = json!(format!(
            "http://127.0.0.1:{}/force-policy-poll-cycle",
            closed.port()
        ));
        std::fs::write(&p, cfg.to_string()).unwrap();
        let o = cell.run_with_config(&p, &["--action", "up", "--handle", "h1"], &good.to_string());
        assert!(o.ok, "{}", o.stderr);
        cell.down("h1").unwrap();
        assert_eq!(state(&cell), before);
    }
}

/// A stand-in for the policy agent's force-poll endpoint, listening in the cell's namespace.
struct FakeAgent {
    server: Option<netman::http::Server>,
    ns: std::path::PathBuf,
    addr: std::net::SocketAddr,
    hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeAgent {
    fn start(cell: &Cell, status: u16) -> FakeAgent {
        let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = hits.clone();
        let ns = cell.cell.path();
        let server = netman::netns::run_in(&ns, move || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            netman::http::Server::from_listener(
                l,
                netman::http::ServerOptions {
                    workers: 2,
                    ..Default::default()
                },
                move |req: &netman::http::Request| {
                    h.lock().unwrap().push(req.path.clone());
                    netman::http::Response::text(status, "agent says so")
                },
            )
            .unwrap()
        })
        .unwrap();
        FakeAgent {
            addr: server.local_addr(),
            server: Some(server),
            ns,
            hits,
        }
    }
    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = netman::netns::run_in(&self.ns, move || s.shutdown());
        }
    }
}

#[test]
fn big_security_group_in_one_up() {
    for &plugin in PLUGINS {
        let mut cell = Cell::new(plugin);
        cell.internet_tcp(&[8005]);
        let before = cell.iptables_save();
        let k = Container::start();
        let mut rules: Vec<Value> = (0..999)
            .map(|i| {
                tcp_rule(
                    &format!("10.200.{}.{}", i / 250, i % 250 + 1),
                    &format!("10.200.{}.{}", i / 250, i % 250 + 1),
                    443,
                    443,
                    false,
                )
            })
            .collect();
        rules.push(tcp_rule(NET_A, NET_A, 8005, 8005, false));
        cell.up(
            "big",
            &up_input(k.pid(), &[(0, 8080), (0, 9090)], Value::Array(rules)),
        )
        .unwrap();
        let save = cell.iptables_save();
        let asg_rules = save
            .lines()
            .filter(|l| l.starts_with("-A netout--big -p tcp -m iprange"))
            .count();
        assert_eq!(asg_rules, 1000);
        tcp_probe(&k.ns.path(), &format!("{NET_A}:8005")).unwrap();
        assert!(tcp_probe(&k.ns.path(), &format!("{NET_B}:8005")).is_err());
        cell.down("big").unwrap();
        assert_eq!(cell.iptables_save(), before);
    }
}

#[test]
fn reconcile_removes_leftovers_only() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let before = state(&cell);
        let (k1, k2) = (Container::start(), Container::start());
        cell.up("keep", &up_input(k1.pid(), &[(0, 8080)], json!([])))
            .unwrap();
        let after_keep = state(&cell);
        cell.up("gone", &up_input(k2.pid(), &[(0, 8080)], json!([])))
            .unwrap();

        // garden restarted and only knows "keep".
        let o = cell.run(&["--action", "reconcile"], "{\"handles\": [\"keep\"]}");
        assert!(o.ok, "{}", o.stderr);
        assert_eq!(
            serde_json::from_str::<Value>(&o.stdout).unwrap(),
            json!({"removed": ["gone"]})
        );
        assert_eq!(state(&cell), after_keep);

        // A crash left a chain of a container nobody knows: swept; live containers untouched.
        cell.cell
            .exec(&["iptables", "-N", "netout--ghost"])
            .unwrap();
        cell.cell
            .exec(&[
                "iptables",
                "-A",
                "FORWARD",
                "-s",
                "10.77.0.99",
                "-j",
                "netout--ghost",
            ])
            .unwrap();
        cell.cell
            .exec(&["iptables", "-t", "nat", "-N", "netin--ghost"])
            .unwrap();
        let o = cell.run(&["--action", "reconcile"], "");
        assert!(o.ok, "{}", o.stderr);
        assert_eq!(
            serde_json::from_str::<Value>(&o.stdout).unwrap(),
            json!({"removed": []})
        );
        assert_eq!(state(&cell), after_keep);

        cell.down("keep").unwrap();
        assert_eq!(state(&cell), before);
    }
}

#[test]
fn netman_era_net_in_and_net_out() {
    for &plugin in PLUGINS {
        let mut cell = Cell::new(plugin);
        cell.internet_tcp(&[8005, 9000]);
        let before = state(&cell);
        let k = Container::start();
        let out = cell.up("old", &up_input(k.pid(), &[], json!([]))).unwrap();
        let ip = container_ip(&out);
        let kp = k.ns.path();
        assert!(tcp_probe(&kp, &format!("{NET_A}:8005")).is_err());

        let o = cell.run(
            &["--action", "net-in", "--handle", "old"],
            &json!({"HostIP": CELL_IP, "HostPort": 0, "ContainerIP": ip, "ContainerPort": 7070})
                .to_string(),
        );
        assert!(o.ok, "{}", o.stderr);
        assert_eq!(
            serde_json::from_str::<Value>(&o.stdout).unwrap(),
            json!({"host_port": 61000, "container_port": 7070})
        );
        let _srv = tcp_server(&kp, format!("{ip}:7070").parse().unwrap());
        tcp_probe(&cell.outside.path(), &format!("{CELL_IP}:61000")).unwrap();

        let o = cell.run(
            &["--action", "net-out", "--handle", "old"],
            &json!({"container_ip": ip, "netout_rule": tcp_rule(NET_A, NET_A, 8005, 8005, false)})
                .to_string(),
        );
        assert!(o.ok, "{}", o.stderr);
        tcp_probe(&kp, &format!("{NET_A}:8005")).unwrap();
        assert!(tcp_probe(&kp, &format!("{NET_B}:9000")).is_err());

        let o = cell.run(&["--action", "bulk-net-out", "--handle", "old"], &json!({"container_ip": ip, "netout_rules": [tcp_rule(NET_B, NET_B, 9000, 9000, false), tcp_rule(NET_C, NET_C, 9000, 9000, true)]}).to_string());
        assert!(o.ok, "{}", o.stderr);
        tcp_probe(&kp, &format!("{NET_B}:9000")).unwrap();
        tcp_probe(&kp, &format!("{NET_C}:9000")).unwrap();

        // The wrong container IP is refused.
        let o = cell.run(&["--action", "net-out", "--handle", "old"], &json!({"container_ip": "10.77.0.250", "netout_rule": tcp_rule(NET_A, NET_A, 1, 1, false)}).to_string());
        assert!(
            !o.ok && o.stderr.contains("is not the IP of old"),
            "{}",
            o.stderr
        );

        cell.down("old").unwrap();
        assert_eq!(state(&cell), before);
    }
}

#[test]
fn concurrent_ups_and_downs_in_one_cell() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let before = state(&cell);
        let ks: Vec<Container> = (0..4).map(|_| Container::start()).collect();
        let outs: Vec<Value> = std::thread::scope(|s| {
            let hs: Vec<_> = ks
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let cell = &cell;
                    s.spawn(move || {
                        cell.up(&format!("par-{i}"), &up_input(k.pid(), &[(0, 8080)], asg()))
                            .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut ports: Vec<u16> = outs.iter().map(|o| mapped_ports(o)[0].0).collect();
        ports.sort();
        assert_eq!(ports, vec![61000, 61001, 61002, 61003]);
        let mut ips: Vec<String> = outs.iter().map(container_ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 4);
        assert_eq!(cell.store().as_object().unwrap().len(), 4);
        std::thread::scope(|s| {
            for i in 0..4 {
                let cell = &cell;
                s.spawn(move || cell.down(&format!("par-{i}")).unwrap());
            }
        });
        assert_eq!(state(&cell), before);
    }
}

#[test]
fn pid_zero_takes_the_netns_from_fd_3() {
    for &plugin in PLUGINS {
        let mut cell = Cell::new(plugin);
        cell.internet_tcp(&[8005]);
        let before = state(&cell);
        let k = Container::start();
        let o = cell.run_with_fd3(
            &["--action", "up", "--handle", "fd3"],
            &up_input(0, &[], asg()).to_string(),
            &k.ns.path(),
        );
        assert!(o.ok, "{}", o.stderr);
        let out: Value = serde_json::from_str(&o.stdout).unwrap();
        assert!(container_ip(&out).starts_with(plugin.container_prefix()));
        // The interface landed in the container's namespace and the ASG applies to it.
        tcp_probe(&k.ns.path(), &format!("{NET_A}:8005")).unwrap();
        cell.down("fd3").unwrap();
        assert_eq!(state(&cell), before);
    }
}

#[test]
fn reconcile_after_the_netns_mount_is_gone() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let before = state(&cell);
        let k = Container::start();
        cell.up("lost", &up_input(k.pid(), &[(0, 8080)], asg()))
            .unwrap();
        // As after a reboot: the bind mount is gone, the file and every other record remain.
        nix::mount::umount2(&cell.path("netns/lost"), nix::mount::MntFlags::MNT_DETACH).unwrap();
        let o = cell.run(&["--action", "reconcile"], "");
        assert!(o.ok, "{}", o.stderr);
        assert_eq!(
            serde_json::from_str::<Value>(&o.stdout).unwrap(),
            json!({"removed": ["lost"]})
        );
        assert_eq!(state(&cell), before);
    }
}
