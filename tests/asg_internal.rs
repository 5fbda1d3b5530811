//! The security-group routes of the real policy server's internal API (mutual TLS): the
//! original's listing byte for byte, its selection, paging and 500 on a non-integer `from` or
//! `limit`; the version check; and the watch, woken by a change made by another process on the
//! same database.

mod support;
use support::policy_server::PolicyServer;
use support::wait_until;

use netman::api::policy::WATCH_HEADER;
use netman::api::security_groups::SecurityGroup;
use netman::db::DatabaseConfig;
use netman::policy::asg::store::{AsgStore, SqlAsgStore};
use std::time::Duration;

const DNS_RULES: &str = r#"[{"protocol":"tcp","destination":"0.0.0.0/0","ports":"53","type":0,"code":0,"description":"","log":false}]"#;

fn store(server: &PolicyServer) -> SqlAsgStore {
    let config: DatabaseConfig = serde_json::from_value(server.config["database"].clone()).unwrap();
    SqlAsgStore::open(&config).unwrap()
}

fn group(guid: &str, running: bool, staging: bool, rs: &[&str], ss: &[&str]) -> SecurityGroup {
    SecurityGroup {
        guid: guid.into(),
        name: format!("name-{guid}"),
        rules: DNS_RULES.into(),
        running_default: running,
        staging_default: staging,
        running_space_guids: rs.iter().map(|s| s.to_string()).collect(),
        staging_space_guids: ss.iter().map(|s| s.to_string()).collect(),
    }
}

fn guids(body: &str) -> (Vec<String>, i64) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let list = v["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["guid"].as_str().unwrap().to_string())
        .collect();
    (list, v["next"].as_i64().unwrap())
}

#[test]
fn the_listing_is_the_originals_byte_for_byte_with_its_selection_and_paging() {
    let server = PolicyServer::start();
    let s = store(&server);
    let (status, body) = server.internal_get("/networking/v1/internal/security_groups");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"next":0,"security_groups":[]}"#)
    );

    s.create(&group("dns", true, true, &[], &[])).unwrap();
    let (status, body) = server.internal_get("/networking/v1/internal/security_groups");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"next":0,"security_groups":[{"guid":"dns","name":"name-dns","rules":"[{\"protocol\":\"tcp\",\"destination\":\"0.0.0.0/0\",\"ports\":\"53\",\"type\":0,\"code\":0,\"description\":\"\",\"log\":false}]","staging_default":true,"running_default":true,"staging_space_guids":[],"running_space_guids":[]}]}"#
    );

    s.create(&group("space-a-running", false, false, &["a"], &[]))
        .unwrap();
    s.create(&group("space-b-staging", false, false, &[], &["b"]))
        .unwrap();
    s.create(&group("space-c", false, false, &["c"], &["c"]))
        .unwrap();
    s.create(&group("unbound", false, false, &[], &[])).unwrap();
    let list = |q: &str| {
        let (status, body) =
            server.internal_get(&format!("/networking/v1/internal/security_groups{q}"));
        assert_eq!(status, 200, "{q}: {body}");
        guids(&body)
    };
    assert_eq!(list("").0, ["dns"]);
    assert_eq!(
        list("?space_guids=a,b").0,
        ["dns", "space-a-running", "space-b-staging"]
    );
    assert_eq!(
        list("?space_guids=c&per_page=1").0,
        ["dns", "space-c"],
        "per_page is ignored"
    );
    // The :version segment is not checked, as in the original.
    let (status, _) = server.internal_get("/networking/v0/internal/security_groups");
    assert_eq!(status, 200);

    let (first, next) = list("?space_guids=a,b,c&limit=2");
    assert_eq!(first, ["dns", "space-a-running"]);
    assert!(next > 0);
    let (second, next2) = list(&format!("?space_guids=a,b,c&limit=2&from={next}"));
    assert_eq!(second, ["space-b-staging", "space-c"]);
    assert_eq!(next2, 0);

    for q in ["?from=x", "?limit=1.5", "?limit=2&from=%20"] {
        let (status, body) =
            server.internal_get(&format!("/networking/v1/internal/security_groups{q}"));
        assert_eq!(status, 500, "{q}: {body}");
    }
    let resp = server
        .internal_client()
        .post(format!(
            "{}/networking/v1/internal/security_groups",
            server.internal
        ))
        .send(&b""[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}

#[test]
fn the_version_moves_with_every_change_and_the_watch_wakes_on_it() {
    let server = PolicyServer::start();
    let s = store(&server);
    let path = "/networking/v1/internal/security_groups_last_updated";
    let version = || {
        let (status, body) = server.internal_get(path);
        assert_eq!(status, 200, "{body}");
        body.parse::<i64>().unwrap()
    };
    let v0 = version();
    s.create(&group("g", true, false, &[], &[])).unwrap();
    let v1 = version();
    assert!(v1 > v0);

    // Behind: answered at once.
    let (status, body) = server.internal_get(&format!("{path}?wait=30&after={v0}"));
    assert_eq!((status, body.parse::<i64>().unwrap()), (200, v1));

    // Current: parked until another process (this test) changes a group. An answer before the
    // change began, or one carrying the old version (the wait ran out), fails.
    let changing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let parked_before = server.parked_watches();
    let changer = {
        let changing = changing.clone();
        let parked = server.parked_watches_probe();
        std::thread::spawn(move || {
            // The change comes only once the watch is parked, so the parked path is what answers.
            wait_until("the watch to park", Duration::from_secs(10), || {
                parked() > parked_before
            });
            changing.store(true, std::sync::atomic::Ordering::SeqCst);
            s.modify("g", &|g| {
                g.running_space_guids.push("s".into());
                Ok(())
            })
            .unwrap();
            s
        })
    };
    let mut resp = server
        .internal_client()
        .get(format!("{}{path}?wait=30&after={v1}", server.internal))
        .call()
        .unwrap();
    let answered_after_change_began = changing.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(resp.headers().get(WATCH_HEADER).unwrap(), "1");
    let v2: i64 = resp.body_mut().read_to_string().unwrap().parse().unwrap();
    let _ = changer.join().unwrap();
    assert!(
        answered_after_change_began,
        "the watch answered before any change"
    );
    assert!(
        v2 > v1,
        "woken by the change, not by the wait running out: {v2} {v1}"
    );
    assert_eq!(version(), v2);

    // Nothing changes: answered with the same version when `wait` runs out.
    let (status, body) = server.internal_get(&format!("{path}?wait=1&after={v2}"));
    assert_eq!((status, body.parse::<i64>().unwrap()), (200, v2));
    let (status, _) = server.internal_get(&format!("{path}?wait=x&after={v2}"));
    assert_eq!(status, 400);
}
