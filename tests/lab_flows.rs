//! The flow log on the lab, as the README walks through it: `netman-lab flows` shows a refused
//! c2c request before `allow-access` and the allowed one after, and the security groups' egress
//! verdicts (a refused ping, an allowed one naming the lab's group and rule).
//! Needs root; brings up and removes the whole lab (namespaces `netman-lab-*`).

mod support;
use serde_json::Value;
use std::time::Duration;
use support::lab_cli::Lab;
use support::wait_until;

/// `netman-lab flows --json` with `filter`, parsed.
fn flows(lab: &Lab, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["flows", "--json"];
    args.extend_from_slice(filter);
    let (ok, out) = lab.lab(&args);
    assert!(ok, "{out}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until `netman-lab flows --json <filter>` has a line `wanted` accepts.
fn wait_line(lab: &Lab, what: &str, filter: &[&str], wanted: impl Fn(&Value) -> bool) -> Value {
    wait_until(what, Duration::from_secs(10), || {
        flows(lab, filter).iter().any(&wanted)
    });
    flows(lab, filter).into_iter().find(wanted).unwrap()
}

#[test]
fn flows_show_the_refused_and_the_allowed_requests_and_egress_verdicts() {
    let lab = Lab::up(2, 2);
    let backend = lab.ip("backend");
    let url = format!("http://{backend}:8080");

    // Refused before allow-access: the denied line names both ends and default deny.
    let (ok, out) = lab.exec("frontend", &["curl", "-sS", "-m", "3", &url]);
    assert!(!ok, "reached backend without a policy: {out}");
    let line = wait_line(&lab, "the refused request", &["--denied"], |v| {
        v["src"]["app"] == "frontend" && v["dst"]["ip"] == backend.as_str()
    });
    assert_eq!(line["verdict"], "denied", "{line}");
    assert_eq!(line["dst"]["port"], 8080, "{line}");
    assert_eq!(line["rule"]["kind"], "default_deny", "{line}");
    let (ok, readable) = lab.lab(&["flows", "--denied", "--app", "frontend"]);
    assert!(
        ok && readable.contains("DENIED") && readable.contains("default deny (no policy)"),
        "{readable}"
    );

    // Allowed after allow-access: the line names the policy.
    let (ok, out) = lab.netman(&[
        "allow-access",
        "frontend",
        "backend",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    assert!(ok, "{out}");
    wait_until("frontend reaches backend", Duration::from_secs(10), || {
        lab.exec("frontend", &["curl", "-sS", "-m", "3", &url]).0
    });
    let line = wait_line(&lab, "the allowed request", &["--app", "backend"], |v| {
        v["verdict"] == "allowed" && v["src"]["app"] == "frontend"
    });
    assert_eq!(line["dst"]["app"], "backend", "{line}");
    assert_eq!(
        (
            &line["rule"]["kind"],
            &line["rule"]["source"],
            &line["rule"]["destination"],
            &line["rule"]["ports"]["start"]
        ),
        (
            &Value::from("policy"),
            &Value::from("frontend"),
            &Value::from("backend"),
            &Value::from(8080)
        ),
        "{line}"
    );

    // Egress through the security groups: a ping nothing allows, and one the lab's group allows
    // with a logged rule (its rule 1).
    let (ok, _) = lab.exec(
        "backend",
        &["busybox", "ping", "-c1", "-W1", "203.0.113.20"],
    );
    assert!(!ok, "ping to 203.0.113.20 passed without a group");
    let line = wait_line(
        &lab,
        "the refused ping",
        &["--denied", "--app", "backend"],
        |v| v["direction"] == "egress" && v["dst"]["ip"] == "203.0.113.20",
    );
    assert_eq!(line["rule"]["kind"], "default_deny", "{line}");
    assert_eq!(line["protocol"], "icmp", "{line}");
    let (ok, out) = lab.exec(
        "backend",
        &["busybox", "ping", "-c1", "-W1", "203.0.113.10"],
    );
    assert!(ok, "{out}");
    let line = wait_line(&lab, "the allowed ping", &["--app", "backend"], |v| {
        v["direction"] == "egress" && v["verdict"] == "allowed"
    });
    assert_eq!(line["rule"]["kind"], "security_group", "{line}");
    assert_eq!(line["rule"]["name"], "lab-internet", "{line}");
    assert_eq!(line["rule"]["index"], 1, "{line}");
    assert_eq!(line["rule"]["protocol"], "icmp", "{line}");

    let (ok, out) = lab.lab(&["down"]);
    assert!(ok, "{out}");
}
