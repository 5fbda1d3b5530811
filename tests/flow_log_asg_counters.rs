//! The ASG table's counters on a real cell: the networker (garden's plugin, CNI `bridge` +
//! `host-local`) and the vxlan-policy-agent with dynamic ASGs and its flow log, inside a cell
//! namespace; a container sends real packets to an "internet" namespace. `GET /counters` on the
//! agent's debug port gives each rule's connections; Prometheus the totals.

mod support;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::asg_cell::*;
use support::flow_lines::lines;
use support::networker_fixture::{NET_A, NET_B, NET_C};
use support::original_wire::{rsa_pki, FakeOriginalServer};
use support::wait::{poll, wait_until};

fn debug(cell: &AsgCell, path: &str) -> String {
    cell.debug(path)
}

fn counters(cell: &AsgCell) -> Value {
    let text = debug(cell, "/counters");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// (guid, index) -> connections, for every rule `/counters` lists.
fn per_rule(c: &Value) -> Vec<((String, u64), u64)> {
    c["security_groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no security_groups in {c}"))
        .iter()
        .map(|r| {
            let key = (
                r["guid"].as_str().unwrap().to_string(),
                r["index"].as_u64().unwrap(),
            );
            (key, r["connections"].as_u64().unwrap())
        })
        .collect()
}

fn named(c: &Value, name: &str) -> u64 {
    c["egress"]["counters"][name]["connections"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {c}"))
}

fn metric(cell: &AsgCell, name: &str) -> u64 {
    let text = debug(cell, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

fn groups() -> Vec<Value> {
    vec![
        group(
            "web",
            json!([{"protocol": "tcp", "destination": NET_A, "ports": "80"},
                   {"protocol": "tcp", "destination": NET_B, "ports": "443"},
                   {"protocol": "tcp", "destination": NET_A, "ports": "8080"}]),
            &["space-1"],
            &[],
        ),
        global(
            "ops",
            json!([{"protocol": "tcp", "destination": NET_A, "ports": "8080", "log": true},
                   {"protocol": "tcp", "destination": NET_B, "ports": "80"}]),
            true,
            false,
        ),
    ]
}

/// A cell with the two groups, its flow log, and app1 of space-1 up, whose egress the agent
/// enforces (what the tests drop last goes first: the container, then the cell, then the server).
struct Setup {
    app: support::networker_fixture::Container,
    cell: AsgCell,
    file: PathBuf,
    _server: FakeOriginalServer,
    _dir: tempfile::TempDir,
}

fn setup(per_sec: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    set_groups(&server, &groups());
    let file = dir.path().join("flows.log");
    let f = file.clone();
    let mut cell = AsgCell::new(&pki, server.addr, true, move |c| {
        c["flow_log_file"] = json!(f);
        c["flow_log_cell"] = json!("cell-1");
        c["iptables_denied_logs_per_sec"] = json!(per_sec);
        // No periodic full rewrite during the test (it would start the counters again): the
        // groups do not change, the containers come through the force endpoints.
        c["asg_poll_interval_seconds"] = json!(3600);
    });
    cell.net.internet_tcp(&[80, 443, 8080]);
    let app = cell.up("app1", "space-1", "app", json!([]));
    let a = app.ns.path();
    eventually("web allows 80", true, || tcp(&a, NET_A, 80), &cell);
    Setup {
        app,
        cell,
        file,
        _server: server,
        _dir: dir,
    }
}

#[test]
fn counters_move_for_the_deciding_rule_only() {
    let setup = setup(100);
    let (cell, a) = (&setup.cell, setup.app.ns.path());

    // Every rule of both groups is listed, used or not.
    let before = counters(cell);
    let rules: Vec<(String, u64)> = per_rule(&before).into_iter().map(|(k, _)| k).collect();
    let key = |g: &str, i: u64| (g.to_string(), i);
    assert_eq!(
        rules,
        [
            key("web", 0),
            key("web", 1),
            key("web", 2),
            key("ops", 0),
            key("ops", 1)
        ],
        "{before}"
    );
    let web0 = &before["security_groups"][0];
    assert_eq!(
        (&web0["protocol"], &web0["destination"], &web0["ports"]),
        (&json!("tcp"), &json!(NET_A), &json!("80")),
        "{web0}"
    );
    let allowed_before = metric(
        cell,
        r#"vpa_flow_connections_total{verdict="allowed",kind="egress"} "#,
    );
    let denied =
        |kind: &str| format!("vpa_flow_connections_total{{verdict=\"denied\",kind=\"{kind}\"}} ");
    let deny_net_before = metric(cell, &denied("egress_deny_network"));
    let default_before = metric(cell, &denied("egress_default_deny"));

    for _ in 0..3 {
        assert!(tcp(&a, NET_A, 80));
    }
    for _ in 0..2 {
        assert!(tcp(&a, NET_B, 443));
    }
    // Allowed by web's rule 2 and by ops' logged rule 0: the global group decides.
    assert!(tcp(&a, NET_A, 8080));
    // Refused: a deny network, and no rule.
    assert!(!tcp(&a, NET_C, 80));
    assert!(!tcp(&a, NET_B, 8080));
    assert!(!tcp(&a, NET_B, 8080));

    let after = counters(cell);
    let moved: Vec<((String, u64), u64)> = per_rule(&after)
        .into_iter()
        .zip(per_rule(&before))
        .map(|((k, n), (_, was))| (k, n - was))
        .collect();
    // A SYN is sent again only when its answer is late (a loaded machine): at least the
    // connections made, never for another rule.
    let at_least = [3, 2, 0, 1, 0];
    for ((k, n), want) in moved.iter().zip(at_least) {
        if want == 0 {
            assert_eq!(*n, 0, "{k:?} moved: {after}");
        } else {
            assert!(
                *n >= want && *n <= want + 1,
                "{k:?} moved {n}, {want} expected: {after}"
            );
        }
    }
    let sum: u64 = moved.iter().map(|(_, n)| n).sum();
    assert_eq!(
        after["egress"]["unattributed"]["connections"], 0,
        "every allowed connection has its rule: {after}"
    );
    assert!(named(&after, "deny_networks_running") > named(&before, "deny_networks_running"));
    assert!(named(&after, "default_deny") >= named(&before, "default_deny") + 2);
    assert_eq!(named(&after, "deny_networks_staging"), 0);
    assert_eq!(
        named(&after, "unknown_source"),
        named(&before, "unknown_source")
    );

    // Prometheus: the same totals, by verdict and reason only.
    let allowed = metric(
        cell,
        r#"vpa_flow_connections_total{verdict="allowed",kind="egress"} "#,
    );
    assert_eq!(allowed - allowed_before, sum);
    let deny_net = metric(cell, &denied("egress_deny_network")) - deny_net_before;
    assert_eq!(
        deny_net,
        named(&after, "deny_networks_running") - named(&before, "deny_networks_running")
    );
    let default = metric(cell, &denied("egress_default_deny")) - default_before;
    assert_eq!(
        default,
        named(&after, "default_deny") - named(&before, "default_deny")
    );
    let text = debug(cell, "/metrics");
    assert!(!text.contains("guid"), "no per-rule series: {text}");

    // The container gone: its counts are forgotten at the next scrape (already in the totals),
    // so its address starts from 0 for the next container.
    assert!(after["egress"]["tracked_keys"].as_u64().unwrap() > 0);
    cell.net.down("app1").unwrap();
    wait_until("app1's counts forgotten", Duration::from_secs(10), || {
        let _ = debug(cell, "/metrics");
        counters(cell)["egress"]["tracked_keys"] == 0
    });
    assert!(
        per_rule(&counters(cell)).is_empty(),
        "no container: no rule in force"
    );
    let allowed_now = metric(
        cell,
        r#"vpa_flow_connections_total{verdict="allowed",kind="egress"} "#,
    );
    assert_eq!(allowed_now, allowed, "the totals keep what was forgotten");
}

#[test]
fn a_denied_flood_is_logged_within_the_limit_and_the_rest_counted() {
    let setup = setup(1);
    let (cell, a, file) = (&setup.cell, setup.app.ns.path(), &setup.file);
    wait_until("a default deny logged", Duration::from_secs(10), || {
        assert!(!tcp(&a, NET_B, 8080));
        std::thread::sleep(Duration::from_millis(100));
        lines(file)
            .iter()
            .any(|l| l["rule"]["kind"] == "default_deny")
    });
    // Let the limit's bucket fill, then count from here.
    std::thread::sleep(Duration::from_secs(1));
    let denied_lines = |file: &std::path::Path| {
        lines(file)
            .iter()
            .filter(|l| l["rule"]["kind"] == "default_deny")
            .count() as u64
    };
    let dropped_metric = r#"vpa_flow_rate_limited_total{kind="egress_denied"} "#;
    let refused_before = named(&counters(cell), "default_deny");
    let dropped_before = metric(cell, dropped_metric);
    let lines_before = denied_lines(file);

    const FLOOD: u64 = 40;
    let started = Instant::now();
    for _ in 0..FLOOD {
        assert!(!tcp(&a, NET_B, 8080));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The table's own counter is the truth (a late answer makes a SYN go twice).
    let refused = named(&counters(cell), "default_deny") - refused_before;
    assert!(refused >= FLOOD, "{refused} refused");
    let (mut logged, mut dropped) = (0, 0);
    let settled = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        logged = denied_lines(file) - lines_before;
        dropped = metric(cell, dropped_metric) - dropped_before;
        logged + dropped == refused
    });
    assert!(
        settled.is_some(),
        "{logged} lines + {dropped} dropped != {refused} refused\n{}",
        cell.agent_log()
    );
    // Burst 1, then 1/s.
    let bound = 1.0 + (elapsed + 1.0);
    assert!(
        logged >= 1 && logged as f64 <= bound,
        "{logged} lines for {refused} refused in {elapsed:.1} s"
    );
    assert!(dropped > 0);
    let c = counters(cell);
    assert_eq!(
        named(&c, "default_deny_log_dropped"),
        metric(cell, dropped_metric),
        "the metric counts the table's dropped counter: {c}"
    );
}
