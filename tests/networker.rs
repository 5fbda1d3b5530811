//! garden-external-networker on real namespaces, the test playing garden's part (see
//! `support/networker_fixture.rs`). Every test runs once per CNI plugin variant in `PLUGINS`.

mod support;
use support::networker_fixture as fixture;

use fixture::*;
use serde_json::{json, Value};
use std::time::Duration;
use support::kill_loop::*;

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
            // the flow log's "deny network" rule
            "-A netout--logged -d 198.51.100.0/30 -m limit --limit 1/sec --limit-burst 1 -j NFLOG --nflog-prefix DENYNET_logged --nflog-group 7",
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

/// `net-out` inserts its allows after the NetOut chain's fixed top, which with
/// `iptables_asg_logging` holds a log rule and a reject per deny network: an allow inserted
/// between the two would beat the deny network.
#[test]
fn an_added_net_out_rule_never_beats_a_deny_network() {
    for &plugin in PLUGINS {
        let mut cell = Cell::with_config(plugin, |c| {
            c["iptables_asg_logging"] = json!(true);
            c["deny_networks"] = json!({"always": ["198.51.100.0/30"]});
        });
        cell.internet_tcp(&[8000]);
        let k = Container::start();
        let out = cell
            .up("denied", &up_input(k.pid(), &[], json!([])))
            .unwrap();
        let ip = container_ip(&out);
        // NET_A is inside the deny network, NET_C is not.
        let rules = [
            tcp_rule(NET_A, NET_A, 8000, 8000, false),
            tcp_rule(NET_C, NET_C, 8000, 8000, false),
        ];
        for r in &rules {
            let o = cell.run(
                &["--action", "net-out", "--handle", "denied"],
                &json!({"container_ip": ip, "netout_rule": r}).to_string(),
            );
            assert!(o.ok, "{}", o.stderr);
        }
        let kp = k.ns.path();
        tcp_probe(&kp, &format!("{NET_C}:8000")).unwrap();
        assert!(
            tcp_probe(&kp, &format!("{NET_A}:8000")).is_err(),
            "{plugin:?}: the added allow beat the deny network\n{}",
            cell.iptables_save()
        );
        cell.down("denied").unwrap();
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

        // An explicit host port outside the ones a container may map (issue 18: the pool's
        // range and the allow-list; the original refused the pool's range instead).
        let e = cell
            .up("h1", &up_input(k.pid(), &[(22, 8080)], json!([])))
            .unwrap_err();
        assert!(
            e.contains("host port 22 is outside the host ports a container may map"),
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

// ---- Issue 18: hardening (each test names the item it shows) ----

/// Removes the cell-wide default deny (as on a cell where nothing installed it yet).
fn remove_cell_guard(cell: &Cell) {
    for args in [
        &["-D", "INPUT", "-j", "netman--input"][..],
        &["-D", "FORWARD", "-j", "netman--forward"],
        &["-F", "netman--input"],
        &["-F", "netman--forward"],
        &["-X", "netman--input"],
        &["-X", "netman--forward"],
    ] {
        let mut full = vec!["iptables", "-w"];
        full.extend_from_slice(args);
        let _ = cell.cell.exec(&full);
    }
}

/// Item 2: `kill -9` of the networker at random points of `up` (and of `down`) never leaves a
/// container with an address that reaches what a fully set-up container is refused (a cell
/// service, the internet). Every few rounds the cell-wide default deny is removed first, so `up`
/// must put it back before the container gets its address.
#[test]
fn kill_9_during_up_never_leaves_a_half_open_container() {
    const ROUNDS: usize = 30;
    let mut rng = Rng::seeded();
    for &plugin in PLUGINS {
        let mut cell = Cell::new(plugin);
        cell.internet_tcp(&[8005]);
        let service_port = 2399;
        let _service = tcp_server(&cell.cell.path(), ([0, 0, 0, 0], service_port).into());
        let service = format!("{}:{service_port}", plugin.gateway());
        let internet = format!("{NET_A}:8005");
        let input = |pid: u32| up_input(pid, &[(0, 8080)], json!([]));

        // What a fully set-up container gets: refused both ways.
        let k = Container::start();
        cell.up("complete", &input(k.pid())).unwrap();
        assert!(tcp_probe(&k.ns.path(), &service).is_err());
        assert!(tcp_probe(&k.ns.path(), &internet).is_err());
        cell.down("complete").unwrap();
        let before = state(&cell);

        let mut half_made = 0;
        for round in 0..ROUNDS {
            if round % 5 == 0 {
                remove_cell_guard(&cell);
            }
            let k = Container::start();
            let handle = format!("{}-{round}", unique("kill"));
            let mut child = cell.spawn(
                &["--action", "up", "--handle", &handle],
                &input(k.pid()).to_string(),
                &[("NETMAN_TEST_RUN", &handle)],
            );
            let delay = kill_during_up(&mut child, &handle, &k.ns.path(), round, 30_000, &mut rng);
            if has_ipv4(&k.ns) {
                let kp = k.ns.path();
                let finished = cell.store().get(&handle).is_some();
                if !finished {
                    half_made += 1;
                }
                assert!(
                    tcp_probe(&kp, &service).is_err(),
                    "{plugin:?} round {round} (killed at {delay}, up finished: {finished}): the container reached the cell service\n{}",
                    cell.iptables_save()
                );
                assert!(
                    tcp_probe(&kp, &internet).is_err(),
                    "{plugin:?} round {round} (killed at {delay}): the container reached the internet"
                );
            }
            cell.down(&handle).unwrap();
        }
        eprintln!("{plugin:?}: {half_made} of {ROUNDS} kills left a container with an address before up finished");
        assert!(
            half_made >= 3,
            "the kills must land between the address and the end of up"
        );
        assert_eq!(state(&cell), before, "down cleans up after every kill");

        // The same for `down` (its rules go while the CNI DEL runs): killed at a random point,
        // a container that still has its address is still denied.
        let mut still_addressed = 0;
        for round in 0..ROUNDS / 3 {
            let k = Container::start();
            let handle = format!("{}-{round}", unique("killdown"));
            cell.up(&handle, &input(k.pid())).unwrap();
            let delay = kill_down(&cell, &handle, 20_000, &mut rng);
            if has_ipv4(&k.ns) {
                still_addressed += 1;
                let kp = k.ns.path();
                assert!(
                    tcp_probe(&kp, &service).is_err() && tcp_probe(&kp, &internet).is_err(),
                    "{plugin:?} down round {round} (killed after {delay} us): the container got out"
                );
            }
            cell.down(&handle).unwrap();
        }
        eprintln!(
            "{plugin:?}: {still_addressed} of {} killed downs left the address",
            ROUNDS / 3
        );
        assert_eq!(
            state(&cell),
            before,
            "a second down cleans up after every kill"
        );
    }
}

/// Item 3: a container whose network namespace is the networker's own (the cell's) is refused
/// before any CNI call, by PID and by fd 3, and nothing changes.
#[test]
fn up_refuses_the_hosts_own_network_namespace() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let before = state(&cell);
        let links = cell.cell.exec(&["ip", "-o", "link", "show"]).unwrap();
        let mut in_cell = netman::netns::run_in(&cell.cell.path(), || {
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap()
        })
        .unwrap();
        let e = cell
            .up("hostns", &up_input(in_cell.id(), &[(0, 8080)], json!([])))
            .unwrap_err();
        assert!(e.contains("host's network namespace"), "{e}");
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        let o = cell.run_with_fd3(
            &["--action", "up", "--handle", "hostns"],
            &up_input(0, &[], json!([])).to_string(),
            &cell.cell.path(),
        );
        assert!(
            !o.ok && o.stderr.contains("host's network namespace"),
            "{}",
            o.stderr
        );
        let _ = in_cell.kill();
        let _ = in_cell.wait();
        assert_eq!(state(&cell), before);
        assert_eq!(
            cell.cell.exec(&["ip", "-o", "link", "show"]).unwrap(),
            links
        );
    }
}

/// Item 4: explicit NetIn host ports are tracked with the allocated ones: a taken one (or one
/// asked twice) is refused, and so is one outside the configured range and allow-list (the
/// cell's ssh port, a port a cell service listens on); nothing changes on a refusal.
#[test]
fn explicit_host_ports_are_tracked_and_bounded() {
    for &plugin in PLUGINS {
        let cell = Cell::with_config(plugin, |c| {
            c["netin_host_port_allow_list"] = json!([8443, 8444]);
        });
        let before = state(&cell);
        let (k1, k2) = (Container::start(), Container::start());

        // Inside the pool: taken as asked and recorded; the allocator goes around it.
        let out = cell
            .up(
                "p1",
                &up_input(k1.pid(), &[(61000, 8080), (0, 9090)], json!([])),
            )
            .unwrap();
        assert_eq!(mapped_ports(&out), vec![(61000, 8080), (61001, 9090)]);
        assert_eq!(
            cell.port_state()["acquired_ports"]["p1"],
            json!([61000, 61001])
        );
        let ip1 = container_ip(&out);
        let _srv = tcp_server(&k1.ns.path(), format!("{ip1}:8080").parse().unwrap());
        tcp_probe(&cell.outside.path(), &format!("{CELL_IP}:61000")).unwrap();

        let after_p1 = state(&cell);
        let refused = |netin: &[(u16, u16)], want: &str| {
            let e = cell
                .up("p2", &up_input(k2.pid(), netin, json!([])))
                .unwrap_err();
            assert!(e.contains(want), "{netin:?}: {e}");
            assert_eq!(state(&cell), after_p1, "{netin:?}");
        };
        refused(
            &[(61000, 8080)],
            "host port 61000 is already mapped (to p1)",
        );
        refused(
            &[(61001, 8080)],
            "host port 61001 is already mapped (to p1)",
        );
        refused(
            &[(0, 80), (8443, 8080), (8443, 9090)],
            "host port 8443 is asked for twice",
        );
        refused(&[(22, 8080)], "host port 22 is outside");
        refused(&[(2222, 8080)], "host port 2222 is outside");
        refused(&[(60999, 8080)], "host port 60999 is outside");
        // On the allow-list, but a service of the cell listens on it.
        let _cell_service = tcp_server(&cell.cell.path(), ([0, 0, 0, 0], 8444).into());
        refused(
            &[(8444, 8080)],
            "a service of the cell listens on host port 8444",
        );

        // On the allow-list: taken.
        let out = cell
            .up("p2", &up_input(k2.pid(), &[(8443, 8080)], json!([])))
            .unwrap();
        assert_eq!(mapped_ports(&out), vec![(8443, 8080)]);
        assert_eq!(cell.port_state()["acquired_ports"]["p2"], json!([8443]));

        // net-in: the same rules.
        for (port, want) in [
            (61000, "already mapped (to p1)"),
            (8443, "already mapped (to p2)"),
            (22, "outside"),
        ] {
            let o = cell.run(
                &["--action", "net-in", "--handle", "p2"],
                &json!({"HostPort": port, "ContainerPort": 7070}).to_string(),
            );
            assert!(!o.ok && o.stderr.contains(want), "{port}: {}", o.stderr);
        }
        assert_eq!(cell.port_state()["acquired_ports"]["p2"], json!([8443]));
        let o = cell.run(
            &["--action", "net-in", "--handle", "p2"],
            &json!({"HostPort": 61002, "ContainerPort": 7070}).to_string(),
        );
        assert!(o.ok, "{}", o.stderr);
        assert_eq!(
            cell.port_state()["acquired_ports"]["p2"],
            json!([8443, 61002])
        );

        // down frees explicit ports too.
        cell.down("p1").unwrap();
        cell.down("p2").unwrap();
        assert_eq!(state(&cell), before);
        let out = cell
            .up("p3", &up_input(k2.pid(), &[(61000, 8080)], json!([])))
            .unwrap();
        assert_eq!(mapped_ports(&out), vec![(61000, 8080)]);
        cell.down("p3").unwrap();

        // The keys are checked at start.
        let p = cell.path("bad-ports.json");
        for (key, value, want) in [
            (
                "netin_host_port_range",
                json!({"start": 9000, "end": 8000}),
                "'netin_host_port_range'",
            ),
            (
                "netin_host_port_range",
                json!({"start": 0, "end": 8000}),
                "'netin_host_port_range'",
            ),
            (
                "netin_host_port_allow_list",
                json!([0]),
                "'netin_host_port_allow_list'",
            ),
            (
                "netin_host_port_allow_list",
                json!([443, 443]),
                "'netin_host_port_allow_list'",
            ),
        ] {
            let mut cfg = cell.config.clone();
            cfg[key] = value;
            std::fs::write(&p, cfg.to_string()).unwrap();
            let o = cell.run_with_config(&p, &["--check-config"], "");
            assert!(!o.ok && o.stderr.contains(want), "{key}: {}", o.stderr);
        }
        // A range of its own replaces the pool as what may be asked for.
        let mut cfg = cell.config.clone();
        cfg["netin_host_port_range"] = json!({"start": 40000, "end": 40010});
        std::fs::write(&p, cfg.to_string()).unwrap();
        let up = |port: u16| {
            cell.run_with_config(
                &p,
                &["--action", "up", "--handle", "p4"],
                &up_input(k2.pid(), &[(port, 8080)], json!([])).to_string(),
            )
        };
        let o = up(61003);
        assert!(!o.ok && o.stderr.contains("outside"), "{}", o.stderr);
        let o = up(40005);
        assert!(o.ok, "{}", o.stderr);
        cell.down("p4").unwrap();
        assert_eq!(state(&cell), before);
    }
}

/// Item 5: stdin and each field have a size limit; a refusal names it and changes nothing.
#[test]
fn oversized_input_is_refused_and_changes_nothing() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let before = state(&cell);
        let k = Container::start();
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = up_input(k.pid(), &[(0, 8080)], json!([]));
            f(&mut v);
            v.to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            (
                with(&|v| v["Properties"]["blob"] = json!("x".repeat(2 << 20))),
                "stdin is larger than 1048576 bytes",
            ),
            (
                with(&|v| v["Properties"]["log_config"] = json!("x".repeat(5000))),
                "property \"log_config\": 5000 bytes",
            ),
            (
                with(&|v| v["Properties"]["policy_group_id"] = json!("a".repeat(256))),
                "property \"policy_group_id\": 256 characters",
            ),
            (
                with(&|v| v["Properties"]["app_id"] = json!("a".repeat(300))),
                "property \"app_id\": 300 characters",
            ),
            (
                with(&|v| v["Properties"][&"k".repeat(200)] = json!("v")),
                "property name",
            ),
            (
                with(&|v| {
                    for i in 0..70 {
                        v["Properties"][&format!("p{i}")] = json!("v");
                    }
                }),
                "at most 64 properties",
            ),
            (
                with(&|v| {
                    for i in 0..6 {
                        v["Properties"][&format!("big{i}")] = json!("x".repeat(4000));
                    }
                }),
                "properties are 24",
            ),
            (
                with(&|v| {
                    v["netin"] = json!((0..101)
                        .map(|_| json!({"host_port": 0, "container_port": 8080}))
                        .collect::<Vec<_>>())
                }),
                "at most 100 port mappings",
            ),
            (
                with(&|v| {
                    let nets: Vec<Value> = (0..300)
                        .map(|i| json!({"start": format!("10.9.{}.1", i % 250), "end": format!("10.9.{}.1", i % 250)}))
                        .collect();
                    let ports: Vec<Value> =
                        (1..=100).map(|p| json!({"start": p, "end": p})).collect();
                    v["netout_rules"] = json!([{"protocol": 1, "networks": nets, "ports": ports}]);
                }),
                "netout_rules make 30000 iptables rules",
            ),
        ];
        for (input, want) in cases {
            let o = cell.run(&["--action", "up", "--handle", "big"], &input);
            assert!(!o.ok, "{want}: accepted");
            assert!(o.stderr.contains(want), "{want}: {}", o.stderr);
            assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
            assert_eq!(state(&cell), before, "{want}");
        }
        // Handles: 128 characters at most.
        let long = "h".repeat(129);
        let o = cell.run(
            &["--action", "up", "--handle", &long],
            &up_input(k.pid(), &[], json!([])).to_string(),
        );
        assert!(
            !o.ok && o.stderr.contains("1-128 characters"),
            "{}",
            o.stderr
        );
        // Other actions read stdin under the same limit.
        let o = cell.run(
            &["--action", "reconcile"],
            &json!({"handles": vec!["h".repeat(100); 20_000]}).to_string(),
        );
        assert!(
            !o.ok && o.stderr.contains("stdin is larger than 1048576 bytes"),
            "{}",
            o.stderr
        );
        // Just under the limits: accepted.
        let fits = with(&|v| {
            v["Properties"]["log_config"] = json!("x".repeat(4096));
            v["Properties"]["policy_group_id"] = json!("a".repeat(255));
        });
        let o = cell.run(&["--action", "up", "--handle", "fits"], &fits);
        assert!(o.ok, "{}", o.stderr);
        cell.down("fits").unwrap();
        assert_eq!(state(&cell), before);
    }
}

/// Item 6: a 0-byte or garbage `store.json`, a garbage or empty `store.json_version` and an
/// empty port state are reported, never read as empty; the failed `up` leaves nothing behind
/// and the other containers' entries stay.
#[test]
fn damaged_stored_state_is_reported_and_a_failed_up_leaves_nothing() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let (k1, k2) = (Container::start(), Container::start());
        cell.up("first", &up_input(k1.pid(), &[(0, 8080)], json!([])))
            .unwrap();
        let store = cell.path("store.json");
        let version = cell.path("store.json_version");
        let ports = cell.path("state.json");
        let good = |p: &std::path::Path| std::fs::read(p).unwrap();
        let (good_store, good_version, good_ports) = (good(&store), good(&version), good(&ports));
        let saved = cell.iptables_save();
        let files = cell.leftover_files();

        let damages: [(&std::path::Path, &[u8], &str); 6] = [
            (&store, b"", "corrupt container store"),
            (
                &store,
                b"{\"first\": {\"handle\"",
                "corrupt container store",
            ),
            (&version, b"seven", "corrupt store version file"),
            (&version, b"", "corrupt store version file"),
            (&ports, b"", "corrupt port state file"),
            (&ports, b"[1,2", "corrupt port state file"),
        ];
        for (path, bytes, want) in damages {
            std::fs::write(path, bytes).unwrap();
            let e = cell
                .up("second", &up_input(k2.pid(), &[(0, 8080)], json!([])))
                .unwrap_err();
            assert!(e.contains(want), "{}: {e}", path.display());
            assert_eq!(
                std::fs::read(path).unwrap(),
                bytes,
                "the damage is kept for a human"
            );
            for (p, g) in [
                (&store, &good_store),
                (&version, &good_version),
                (&ports, &good_ports),
            ] {
                if p != path {
                    assert_eq!(&std::fs::read(p).unwrap(), g, "{} changed", p.display());
                }
            }
            assert_eq!(cell.iptables_save(), saved, "{}", path.display());
            assert_eq!(cell.leftover_files(), files, "{}", path.display());
            assert!(!has_ipv4(&k2.ns));
            std::fs::write(&store, &good_store).unwrap();
            std::fs::write(&version, &good_version).unwrap();
            std::fs::write(&ports, &good_ports).unwrap();
        }
        cell.up("second", &up_input(k2.pid(), &[(0, 8080)], json!([])))
            .unwrap();
        assert_eq!(
            cell.store().as_object().unwrap().keys().collect::<Vec<_>>(),
            ["first", "second"]
        );
        cell.down("second").unwrap();
        cell.down("first").unwrap();
    }
}

/// Item 6: every store and port-state write is fsynced (file, then directory after the rename),
/// so a power cut leaves the old or the new file. Shown on the system calls of a real `up`.
#[test]
fn state_writes_are_fsynced_around_the_rename() {
    let plugin = Plugin::Bridge;
    let cell = Cell::new(plugin);
    let k = Container::start();
    let trace = cell.path("up.strace");
    let trace_arg = trace.to_str().unwrap().to_string();
    let o = cell.run_wrapped(
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2,close",
            "-o",
            &trace_arg,
        ],
        &["--action", "up", "--handle", "synced"],
        &up_input(k.pid(), &[(0, 8080)], json!([])).to_string(),
    );
    assert!(o.ok, "{}", o.stderr);
    let text = std::fs::read_to_string(&trace).unwrap();
    for file in ["store.json", "store.json_version", "state.json"] {
        check_synced_replace(&text, &cell.path(file));
    }
    cell.down("synced").unwrap();
}

/// In an strace log: the temporary file renamed onto `target` was fsynced before the rename,
/// and `target`'s directory was opened and fsynced after it.
fn check_synced_replace(trace: &str, target: &std::path::Path) {
    let target = target.to_str().unwrap();
    let dir = std::path::Path::new(target)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let rename = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains(&format!("\"{target}\"")))
        .unwrap_or_else(|| panic!("no rename onto {target} in\n{trace}"));
    let tmp = lines[rename]
        .split('"')
        .nth(1)
        .expect("rename source")
        .to_string();
    // `strace -f` prefixes every line with the pid; file descriptors are per process.
    let pid = lines[rename].split_whitespace().next().unwrap().to_string();
    let mine = |l: &str| l.split_whitespace().next() == Some(pid.as_str());
    // The fd an `openat` at line `i` returned; a split call returns it on its `resumed` line.
    let fd_of = |i: usize| {
        let line = if lines[i].contains("<unfinished") {
            lines[i..]
                .iter()
                .find(|l| mine(l) && l.contains("<... openat resumed>"))
                .copied()
                .unwrap_or(lines[i])
        } else {
            lines[i]
        };
        line.rsplit("= ").next().unwrap().trim().to_string()
    };
    // With threads running beside it, strace splits a call: `fsync(4 <unfinished ...>`.
    let synced = |l: &str, fd: &str| {
        ["fsync", "fdatasync"].iter().any(|call| {
            [")", " <unfinished"]
                .iter()
                .any(|end| l.contains(&format!("{call}({fd}{end}")))
        })
    };
    let open_tmp = lines[..rename]
        .iter()
        .rposition(|l| mine(l) && l.contains("openat") && l.contains(&format!("\"{tmp}\"")))
        .unwrap_or_else(|| panic!("{tmp} never opened"));
    let fd = fd_of(open_tmp);
    assert!(
        lines[open_tmp..rename]
            .iter()
            .any(|l| mine(l) && synced(l, &fd)),
        "{tmp} (fd {fd}) not fsynced before the rename onto {target}"
    );
    let open_dir = lines[rename..]
        .iter()
        .position(|l| mine(l) && l.contains("openat") && l.contains(&format!("\"{dir}\"")))
        .map(|i| i + rename)
        .unwrap_or_else(|| panic!("{dir} not opened after the rename onto {target}"));
    let dfd = fd_of(open_dir);
    assert!(
        lines[open_dir..].iter().any(|l| mine(l) && synced(l, &dfd)),
        "{dir} not fsynced after the rename onto {target}"
    );
}

/// A CNI plugin appended to the cell's conflist that logs when it starts and when it has read
/// its input (`start DEL`, `input DEL`) to `recorder.log`, and passes ADD's `prevResult` on.
fn add_recorder(cell: &Cell) -> std::path::PathBuf {
    let log = cell.path("recorder.log");
    let script = format!(
        "#!/bin/sh\necho \"start $CNI_COMMAND\" >> {log}\ninput=$(cat)\necho \"input $CNI_COMMAND\" >> {log}\nif [ \"$CNI_COMMAND\" = ADD ]; then printf '%s' \"$input\" | jq -c .prevResult; fi\n",
        log = log.display()
    );
    let bin =
        std::path::Path::new(cell.config["cni_plugin_dir"].as_str().unwrap()).join("recorder");
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    cell.write_conflist(&[json!({"type": "recorder"})]);
    log
}

/// An exclusive flock on `path`, held until dropped.
fn hold_lock(path: &str) -> nix::fcntl::Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

/// `down` releases the container's address (CNI DEL) only once its rules are gone, so a
/// container given the address next never meets the old one's chains: with the rules' removal
/// held up (the test holds the iptables lock), the store entry goes but the address stays
/// allocated and the rules stay; the first DEL plugin is already started meanwhile (its start
/// overlaps the wait) but has not been given its input. Once the lock is free, `down`
/// completes and leaves nothing.
#[test]
fn down_releases_the_address_only_after_the_rules_are_gone() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let log = add_recorder(&cell);
        let before = state(&cell);
        let k = Container::start();
        let out = cell
            .up("held", &up_input(k.pid(), &[(0, 8080)], json!([])))
            .unwrap();
        let ip = container_ip(&out);
        let lease = cell.path("ipam").join("netman-test").join(&ip);
        assert!(lease.exists(), "{plugin:?}: no lease {}", lease.display());

        let lock = hold_lock(cell.config["iptables_lock_file"].as_str().unwrap());
        let mut child = cell.spawn(&["--action", "down", "--handle", "held"], "", &[]);
        support::wait_until("the store entry to go", Duration::from_secs(20), || {
            cell.store().get("held").is_none()
        });
        // The old order ran the CNI DEL right after the store entry, beside the rules.
        let released = support::poll(Duration::from_secs(3), Duration::from_millis(50), || {
            !lease.exists()
        });
        assert!(
            released.is_none(),
            "{plugin:?}: the address was released while the rules still named it"
        );
        assert!(
            cell.iptables_save().contains(&format!("{ip}/32")),
            "{plugin:?}"
        );
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("start DEL"), "{plugin:?}: {logged}");
        assert!(!logged.contains("input DEL"), "{plugin:?}: {logged}");
        drop(lock);
        let status = child.wait().unwrap();
        assert!(status.success(), "{plugin:?}: down failed");
        assert!(!lease.exists());
        assert!(std::fs::read_to_string(&log).unwrap().contains("input DEL"));
        assert_eq!(state(&cell), before, "{plugin:?}");
    }
}

/// `up` starts the first CNI plugin before the host ports are known (its start overlaps the
/// guard, the mount and the ports) and gives it its input only then: with the port state's
/// lock held by the test, the plugin runs but nothing is allocated; once the lock is free,
/// `up` completes.
#[test]
fn up_starts_the_first_plugin_before_its_input_is_known() {
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let k = Container::start();
        let state_file = cell.config["state_file"].as_str().unwrap();
        let lock = hold_lock(&format!("{state_file}_lock"));
        let input = up_input(k.pid(), &[(0, 8080)], json!([])).to_string();
        let child = cell.spawn(&["--action", "up", "--handle", "early"], &input, &[]);
        let plugin_dir = cell.config["cni_plugin_dir"].as_str().unwrap().to_string();
        let first = plugin.binaries()[0].0;
        let running = |name: &str| {
            let want = format!("{plugin_dir}/{name}");
            std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(want.as_bytes()))
            })
        };
        support::wait_until(
            "the first ADD plugin to start",
            Duration::from_secs(20),
            || running(first),
        );
        assert!(
            cell.leftover_files()
                .iter()
                .all(|f| !f.starts_with("ipam/")),
            "{plugin:?}"
        );
        drop(lock);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{plugin:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!running(first));
        cell.down("early").unwrap();
    }
}

/// `down` removes a container's chains over nfnetlink in one transaction; when something else
/// still jumps to one of them, nf_tables refuses that, and `down` falls back to listing the
/// tables: the foreign jump goes too, and every chain of the container. Which way was taken is
/// read from the networker's `info` log.
#[test]
fn down_removes_chains_that_something_else_still_jumps_to() {
    for &plugin in PLUGINS {
        let cell = Cell::with_config(plugin, |c| c["log_level"] = json!("info"));
        let gone = |handle: &str| {
            let names = netman::networker::names::ChainNames::for_handle(handle);
            let saved = cell.iptables_save();
            for c in names
                .filter()
                .iter()
                .chain(&names.nat())
                .chain(&names.mangle())
            {
                assert!(
                    !saved.contains(c.as_str()),
                    "{plugin:?}: {c} left:\n{saved}"
                );
            }
        };
        let down = |handle: &str| {
            let o = cell.run(&["--action", "down", "--handle", handle], "");
            assert!(o.ok, "{plugin:?}: {}", o.stderr);
            o.stderr
        };

        let k = Container::start();
        cell.up("plain", &up_input(k.pid(), &[(0, 8080)], json!([])))
            .unwrap();
        let log = down("plain");
        assert!(
            !log.contains("instead"),
            "{plugin:?}: not the fast path: {log}"
        );
        gone("plain");

        cell.up("jumped", &up_input(k.pid(), &[(0, 8080)], json!([])))
            .unwrap();
        let names = netman::networker::names::ChainNames::for_handle("jumped");
        let input = names.input.as_str().to_string();
        for args in [
            vec!["iptables", "-N", "foreign"],
            vec!["iptables", "-A", "foreign", "-j", &input],
            vec!["iptables", "-A", "OUTPUT", "-j", "foreign"],
        ] {
            cell.cell.exec(&args).unwrap();
        }
        let saved = cell.iptables_save();
        assert!(saved.contains(&format!("-A foreign -j {input}")), "{saved}");
        let log = down("jumped");
        assert!(
            log.contains("removal over nfnetlink failed")
                && log.contains("Device or resource busy"),
            "{plugin:?}: {log}"
        );
        gone("jumped");
        assert!(cell.iptables_save().contains(":foreign"));

        let log = down("jumped");
        assert!(log.contains("no chain over nfnetlink"), "{plugin:?}: {log}");
    }
}
