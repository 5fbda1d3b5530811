//! The security-group syncer of the real policy server against a fake Cloud Controller speaking
//! the v3 and internal wire formats: groups copied and kept in step; a change between two page
//! reads makes it read again and lose nothing; two changes in one second are both synced; one
//! syncer per database, another taking over when it dies; the admin API read-only while syncing;
//! the config checked at start.

mod support;
use support::fake_cf::{FakeCf, CLIENT_ID, CLIENT_SECRET};
use support::policy_server::PolicyServer;

/// The fake UAA's admin user token.
const ADMIN_TOKEN: &str = "admin-tok";
use support::wait_until;

use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn stamp(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A v3 security group, globally enabled for running so every cell sees it.
fn v3(guid: &str, port: u16) -> Value {
    json!({
        "guid": guid, "name": format!("asg-{guid}"),
        "created_at": "2026-12-06T09:00:00Z", "updated_at": "2026-12-06T09:00:00Z",
        "globally_enabled": {"running": true, "staging": false},
        "rules": [{"protocol": "tcp", "destination": "10.0.0.0/8", "ports": port.to_string()}],
        "relationships": {"running_spaces": {"data": [{"guid": "space-1"}]}, "staging_spaces": {"data": []}},
        "links": {"self": {"href": format!("https://cc/v3/security_groups/{guid}")}}
    })
}

fn syncing_server(cf: &FakeCf, database: Option<&Value>) -> PolicyServer {
    let url = cf.url.clone();
    let database = database.cloned();
    PolicyServer::start_with(move |c, _| {
        c["auth"] = json!({
            "mode": "uaa", "uaa_url": url, "uaa_client": CLIENT_ID, "uaa_client_secret": CLIENT_SECRET,
        });
        c["cc_url"] = json!(url);
        c["asg_syncer"] = json!({"poll_interval_seconds": 1, "page_size": 2, "lease_seconds": 3});
        if let Some(db) = database {
            c["database"] = db;
        }
    })
}

/// The guids the cells see, in order.
fn cell_view(server: &PolicyServer) -> Vec<String> {
    let (status, body) = server.internal_get("/networking/v1/internal/security_groups");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut guids: Vec<String> = v["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["guid"].as_str().unwrap().to_string())
        .collect();
    guids.sort();
    guids
}

fn guids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn world(groups: Vec<Value>, last_update: &str) -> FakeCf {
    let cf = FakeCf::start();
    cf.add_user("admin-tok", "admin-id", "admin", &["network.admin"]);
    let mut s = cf.state();
    s.security_groups = groups;
    s.asg_latest_update = Some(last_update.to_string());
    drop(s);
    cf
}

#[test]
fn groups_are_copied_in_the_originals_shape_and_kept_in_step() {
    let mut groups: Vec<Value> = (1..=5).map(|i| v3(&format!("g{i}"), 8000 + i)).collect();
    // The original re-marshals rules with Go's encoder, which escapes <, > and & (also in the
    // answer around them).
    groups[0]["name"] = json!("web & <api>");
    groups[0]["rules"][0]["description"] = json!("to <db> & cache");
    let cf = world(groups, "2026-12-06T09:00:00Z");
    let server = syncing_server(&cf, None);
    wait_until("the first sync", Duration::from_secs(20), || {
        cell_view(&server) == guids(&["g1", "g2", "g3", "g4", "g5"])
    });
    let (_, body) = server.internal_get("/networking/v1/internal/security_groups");
    let v: Value = serde_json::from_str(&body).unwrap();
    let g1 = &v["security_groups"][0];
    assert_eq!(
        g1["rules"],
        r#"[{"protocol":"tcp","destination":"10.0.0.0/8","ports":"8001","type":0,"code":0,"description":"to \u003cdb\u003e \u0026 cache","log":false}]"#
    );
    assert!(
        body.contains(r#""name":"web \u0026 \u003capi\u003e","rules":"[{\"protocol\":\"tcp\",\"destination\":\"10.0.0.0/8\",\"ports\":\"8001\",\"type\":0,\"code\":0,\"description\":\"to \\u003cdb\\u003e \\u0026 cache\",\"log\":false}]""#),
        "Go's bytes: {body}"
    );
    assert_eq!(g1["running_default"], true);
    assert_eq!(g1["running_space_guids"], json!(["space-1"]));
    // Pages were followed (page_size 2: three pages) with the client token.
    let pages = cf.requests_to("/v3/security_groups");
    assert!(pages.iter().any(|r| r.params("page") == ["3"]), "{pages:?}");
    assert!(pages.iter().all(|r| r
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("bearer "))));

    // A change in the CC (one deleted, one edited, one new) with a new timestamp.
    {
        let mut s = cf.state();
        let mut groups: Vec<Value> = (2..=5).map(|i| v3(&format!("g{i}"), 8000 + i)).collect();
        groups[0]["globally_enabled"]["running"] = json!(false);
        groups[0]["relationships"]["running_spaces"]["data"] = json!([]);
        groups.push(v3("g6", 9000));
        s.security_groups = groups;
        s.asg_latest_update = Some("2026-12-06T09:05:00Z".into());
    }
    wait_until("the change to be synced", Duration::from_secs(20), || {
        cell_view(&server) == guids(&["g3", "g4", "g5", "g6"])
    });

    // While syncing, changes belong to the CC: the admin API reads but refuses writes.
    let (status, list) = server.get("/networking/v1/external/security_groups", Some(ADMIN_TOKEN));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["pagination"]["total_results"],
        5
    );
    let (status, body) = server.post(
        "/networking/v1/external/security_groups",
        Some(ADMIN_TOKEN),
        r#"{"name":"local"}"#,
    );
    assert_eq!(status, 409, "{body}");
}

#[test]
fn a_change_between_two_page_reads_is_read_again_and_nothing_is_lost() {
    let cf = world(
        (1..=5).map(|i| v3(&format!("g{i}"), 8000 + i)).collect(),
        "2026-12-06T09:00:00Z",
    );
    // g1 is deleted right after page 1 is served: g3 moves from page 2 to page 1, and a read that
    // went on to page 2 would never see it.
    cf.state().asg_change_after_page = Some((
        1,
        (2..=5).map(|i| v3(&format!("g{i}"), 8000 + i)).collect(),
        "2026-12-06T09:00:01Z".into(),
    ));
    let server = syncing_server(&cf, None);
    wait_until("a consistent sync", Duration::from_secs(20), || {
        !cell_view(&server).is_empty()
    });
    assert_eq!(cell_view(&server), guids(&["g2", "g3", "g4", "g5"]));
    let first_pages = cf
        .requests_to("/v3/security_groups")
        .iter()
        .filter(|r| r.params("page").is_empty() || r.params("page") == ["1"])
        .count();
    assert!(first_pages >= 2, "the read started over");
    assert!(server
        .log()
        .contains("changed in the Cloud Controller while they were read"));
}

#[test]
fn two_changes_in_one_second_are_both_synced_and_then_only_the_timestamp_is_read() {
    let cf = world(vec![], "2026-12-06T08:00:00Z");
    let server = syncing_server(&cf, None);
    wait_until("the first sync", Duration::from_secs(20), || {
        !cf.requests_to("/v3/security_groups").is_empty()
    });
    // Change 1 in second S.
    let second = stamp(now_seconds());
    {
        let mut s = cf.state();
        s.security_groups.push(v3("a", 1));
        s.asg_latest_update = Some(second.clone());
    }
    wait_until("the first change", Duration::from_secs(20), || {
        cell_view(&server) == guids(&["a"])
    });
    // Change 2, in the same second as far as the CC's timestamp tells: it does not move.
    cf.state().security_groups.push(v3("b", 2));
    wait_until(
        "the second change of the same second",
        Duration::from_secs(20),
        || cell_view(&server) == guids(&["a", "b"]),
    );
    // Once a sync began after that second (and the margin), nothing is read but the timestamp.
    std::thread::sleep(Duration::from_secs(5));
    cf.clear_requests();
    std::thread::sleep(Duration::from_secs(3));
    assert!(cf.requests_to("/internal/v4/asg_latest_update").len() >= 2);
    assert_eq!(
        cf.requests_to("/v3/security_groups").len(),
        0,
        "idle: no full reads"
    );
}

#[test]
fn one_syncer_per_database_and_another_takes_over_when_it_dies() {
    let cf = world(vec![v3("a", 1)], "2026-12-06T09:00:00Z");
    let mut first = syncing_server(&cf, None);
    let database = first.config["database"].clone();
    let second = syncing_server(&cf, Some(&database));
    wait_until("the sync", Duration::from_secs(20), || {
        cell_view(&second) == guids(&["a"])
    });
    let holder = || {
        let conn =
            rusqlite::Connection::open(database["connection_string"].as_str().unwrap()).unwrap();
        let (holder, expires): (String, i64) = conn
            .query_row(
                "SELECT holder, expires_at FROM asg_syncer_lock WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (holder, expires)
    };
    let (leader, _) = holder();
    assert!(!leader.is_empty());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        holder().0,
        leader,
        "the lease stays with one server while it lives"
    );

    // Kill the server holding the lease (no release): the other takes over after the lease.
    let leader_pid = leader.split('@').next().unwrap().parse::<u32>().unwrap();
    let first_pid = first.pid();
    if leader_pid == first_pid {
        first.kill();
    } else {
        drop(second);
        let survivor = &first;
        cf.state().security_groups.push(v3("b", 2));
        cf.state().asg_latest_update = Some("2026-12-06T09:10:00Z".into());
        wait_until("the survivor to sync", Duration::from_secs(20), || {
            cell_view(survivor) == guids(&["a", "b"])
        });
        assert_ne!(holder().0, leader);
        return;
    }
    cf.state().security_groups.push(v3("b", 2));
    cf.state().asg_latest_update = Some("2026-12-06T09:10:00Z".into());
    wait_until("the survivor to sync", Duration::from_secs(20), || {
        cell_view(&second) == guids(&["a", "b"])
    });
    assert_ne!(holder().0, leader);
}

/// The CC over TLS, its internal listener over mutual TLS (reference §3.1): the syncer presents
/// the configured client certificate and syncs; without one the internal listener refuses the
/// handshake, nothing is synced and the failure is counted.
#[test]
fn the_internal_listener_is_read_over_mutual_tls_and_refuses_a_syncer_without_a_certificate() {
    let cf = FakeCf::start_with_internal_mtls();
    cf.add_user(ADMIN_TOKEN, "admin-id", "admin", &["network.admin"]);
    {
        let mut s = cf.state();
        s.security_groups = vec![v3("g1", 8001)];
        s.asg_latest_update = Some("2026-12-06T09:00:00Z".into());
    }
    let (internal_url, client_cert, client_key) = cf.internal.clone().unwrap();
    let ca = cf.ca_cert_file.clone().unwrap();
    let start = |with_certificate: bool| {
        let (url, internal_url, ca) = (cf.url.clone(), internal_url.clone(), ca.clone());
        let (cert, key) = (client_cert.clone(), client_key.clone());
        PolicyServer::start_with(move |c, _| {
            c["auth"] = json!({
                "mode": "uaa", "uaa_url": url, "uaa_client": CLIENT_ID,
                "uaa_client_secret": CLIENT_SECRET, "uaa_ca_cert_file": ca,
            });
            c["cc_url"] = json!(url);
            c["cc_ca_cert_file"] = json!(ca);
            c["asg_syncer"] = json!({"poll_interval_seconds": 1, "lease_seconds": 3,
                                     "cc_internal_url": internal_url});
            if with_certificate {
                c["asg_syncer"]["cc_internal_client_cert_file"] = json!(cert);
                c["asg_syncer"]["cc_internal_client_key_file"] = json!(key);
            }
        })
    };

    let without = start(false);
    wait_until("a failed sync is counted", Duration::from_secs(20), || {
        without
            .metrics()
            .lines()
            .any(|l| l.starts_with("policy_server_asg_sync_failures_total") && !l.ends_with(" 0"))
    });
    assert!(
        cell_view(&without).is_empty(),
        "nothing synced without a client certificate"
    );
    assert!(
        cf.requests_to("/internal/v4/asg_latest_update").is_empty(),
        "the handshake failed before any request"
    );
    drop(without);

    let with = start(true);
    wait_until("the sync over mutual TLS", Duration::from_secs(20), || {
        cell_view(&with) == guids(&["g1"])
    });
    assert!(!cf.requests_to("/internal/v4/asg_latest_update").is_empty());
}

#[test]
fn the_syncer_config_is_checked_at_start() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"asg_syncer": {}}), "cc_url"),
        (
            json!({"cc_url": "URL", "asg_syncer": {"page_size": 0}}),
            "page_size",
        ),
        (
            json!({"cc_url": "URL", "asg_syncer": {"poll_interval_seconds": 10, "lease_seconds": 5}}),
            "lease_seconds",
        ),
        (
            json!({"cc_url": "URL", "asg_syncer": {"cc_internal_client_cert_file": "/nonexistent"}}),
            "cc_internal_client_cert_file",
        ),
        (
            json!({"cc_url": "URL", "asg_syncer": {"colour": 1}}),
            "colour",
        ),
    ];
    let cf = FakeCf::start();
    for (patch, needle) in cases {
        let url = cf.url.clone();
        let server = PolicyServer::configure(|c, _| {
            c["auth"] = json!({
                "mode": "uaa", "uaa_url": url, "uaa_client": CLIENT_ID, "uaa_client_secret": CLIENT_SECRET,
            });
            for (k, v) in patch.as_object().unwrap() {
                c[k] = if v == "URL" { json!(url) } else { v.clone() };
            }
        });
        let refusal = server.start_refused();
        assert!(refusal.contains(needle), "{patch}: {refusal}");
    }
}
