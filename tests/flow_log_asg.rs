//! The flow log with dynamic ASGs: the real networker (garden's plugin, CNI `bridge` +
//! `host-local`) and the real vxlan-policy-agent, its ASG table and its flow log, inside a cell
//! namespace; a container sends real packets to an "internet" namespace. Each egress connection
//! must produce exactly the expected line, naming the security group and rule that allowed it,
//! or the deny network or default deny that refused it.

mod support;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use support::asg_cell::*;
use support::flow_lines::{lines, next_line};
use support::networker_fixture::{ping, NET_A, NET_B, NET_C};
use support::original_wire::{rsa_pki, FakeOriginalServer};
use support::wait::wait_until;

fn metrics(cell: &AsgCell) -> String {
    cell.debug("/metrics")
}

#[test]
fn egress_lines_name_the_security_group_rule_the_deny_network_or_default_deny() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    set_groups(
        &server,
        &[
            group(
                "web",
                json!([{"protocol": "tcp", "destination": NET_A, "ports": "80", "log": true,
                        "description": "web servers"},
                       {"protocol": "tcp", "destination": NET_B, "ports": "443"}]),
                &["space-1"],
                &[],
            ),
            global(
                "ping",
                json!([{"protocol": "icmp", "destination": NET_A, "type": 8, "code": 0}]),
                true,
                false,
            ),
        ],
    );
    let file: PathBuf = dir.path().join("flows.log");
    let mut cell = AsgCell::new(&pki, server.addr, true, |c| {
        c["flow_log_file"] = json!(file);
        c["flow_log_cell"] = json!("cell-1");
        // A group of its own, so that the flow log must subscribe to it.
        c["asg_nflog_group"] = json!(5);
        // Every allowed connection logged, not only the `log: true` rule's.
        c["iptables_asg_logging"] = json!(true);
        // A limit these few denied connections never reach.
        c["iptables_denied_logs_per_sec"] = json!(100);
    });
    cell.net.internet_tcp(&[80, 443]);
    let (app, ip) = cell.up_with_ip("app1", "space-1", "app", json!([]));
    let a = app.ns.path();
    // The agent names the container once its poll has read the store.
    wait_until("the flow log names app1", Duration::from_secs(10), || {
        assert!(tcp(&a, NET_A, 80), "{}", cell.agent_log());
        std::thread::sleep(Duration::from_millis(100));
        lines(&file)
            .last()
            .is_some_and(|l| l["src"]["handle"] == "app1")
    });
    let src = json!({"ip": ip, "app": "app-1", "space": "space-1", "handle": "app1"});
    let line = |verdict: &str, protocol: &str, dst: &str, port: Option<u16>, rule: Value| {
        json!({"cell": "cell-1", "verdict": verdict, "direction": "egress", "protocol": protocol,
               "src": src, "dst": {"ip": dst, "port": port, "app": null, "space": null},
               "rule": rule})
    };

    // The `log: true` rule names itself in its prefix: group, index, protocol, description.
    let got = next_line(&file, || assert!(tcp(&a, NET_A, 80)));
    assert_eq!(
        got,
        line(
            "allowed",
            "tcp",
            NET_A,
            Some(80),
            json!({"kind": "security_group", "guid": "web", "name": "name-web", "index": 0,
                   "protocol": "tcp", "description": "web servers"})
        )
    );
    // An unlogged rule, logged by `iptables_asg_logging` (`ASG_OK` alone): the reader finds it.
    let got = next_line(&file, || assert!(tcp(&a, NET_B, 443)));
    assert_eq!(
        got,
        line(
            "allowed",
            "tcp",
            NET_B,
            Some(443),
            json!({"kind": "security_group", "guid": "web", "name": "name-web", "index": 1,
                   "protocol": "tcp", "description": ""})
        )
    );
    // ICMP by type and code, from the globally enabled group.
    let got = next_line(&file, || assert!(ping(&app.ns, NET_A)));
    assert_eq!(
        got,
        line(
            "allowed",
            "icmp",
            NET_A,
            None,
            json!({"kind": "security_group", "guid": "ping", "name": "name-ping", "index": 0,
                   "protocol": "icmp", "description": ""})
        )
    );
    // Refused: no rule allows it; a deny network beats the "web" rule's destination.
    let got = next_line(&file, || assert!(!tcp(&a, NET_B, 80)));
    assert_eq!(
        got,
        line(
            "denied",
            "tcp",
            NET_B,
            Some(80),
            json!({"kind": "default_deny"})
        )
    );
    let got = next_line(&file, || assert!(!tcp(&a, NET_C, 80)));
    assert_eq!(
        got,
        line(
            "denied",
            "tcp",
            NET_C,
            Some(80),
            json!({"kind": "deny_network"})
        )
    );
    let m = metrics(&cell);
    assert!(
        !m.contains(r#"vpa_flow_errors_total{kind="unrecognised"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"vpa_flow_events_total{kind="egress_allowed"}"#),
        "{m}"
    );

    // Egress logging off at run time: the ASG table still logs, the flow log writes nothing.
    let off = cell
        .net
        .cell
        .exec(&[
            "curl",
            "-s",
            "-X",
            "PUT",
            "-d",
            r#"{"egress":false}"#,
            "http://127.0.0.1:8721/flow-logging",
        ])
        .unwrap();
    assert!(off.contains(r#""egress":false"#), "{off}");
    let before = lines(&file).len();
    assert!(tcp(&a, NET_A, 80));
    assert!(!tcp(&a, NET_B, 80));
    let read = |kind: &str| format!("vpa_flow_suppressed_total{{kind=\"{kind}\"}} 1\n");
    wait_until(
        "both events read and dropped",
        Duration::from_secs(10),
        || {
            let m = metrics(&cell);
            m.contains(&read("egress_allowed")) && m.contains(&read("egress_denied"))
        },
    );
    assert_eq!(lines(&file).len(), before, "{:?}", lines(&file));
}
