//! The policy server in `uaa` auth mode against a fake UAA and Cloud Controller that speak their
//! real wire formats: token checks, space-developer authorisation, list filtering, the quota and
//! stale-policy cleanup.

mod support;
use std::time::Duration;
use support::{fake_cf, policy_server, wait_until};

use fake_cf::{FakeCf, CLIENT_ID, CLIENT_SECRET};
use policy_server::*;
use serde_json::{json, Value};

const V1: &str = "/networking/v1/external/policies";

/// Org o1 with spaces s1 (dev: alice) and s2 (dev: alice, bob); apps a1,a2 in s1, b1 in s2,
/// x1 in a space s3 nobody here develops in.
fn world() -> FakeCf {
    let cf = FakeCf::start();
    cf.add_user("admin-tok", "admin-id", "admin", &["network.admin"]);
    cf.add_user("alice-tok", "alice-id", "alice", &["network.write"]);
    cf.add_user("bob-tok", "bob-id", "bob", &["network.write"]);
    cf.add_user("carol-tok", "carol-id", "carol", &["openid"]);
    cf.add_org("o1", "org");
    cf.add_space("s1", "dev", "o1", &["alice-id"]);
    cf.add_space("s2", "prod", "o1", &["alice-id", "bob-id"]);
    cf.add_space("s3", "other", "o1", &[]);
    cf.add_app("a1", "app-a1", "s1");
    cf.add_app("a2", "app-a2", "s1");
    cf.add_app("b1", "app-b1", "s2");
    cf.add_app("x1", "app-x1", "s3");
    cf
}

fn server(cf: &FakeCf, patch: impl FnOnce(&mut Value)) -> PolicyServer {
    let url = cf.url.clone();
    PolicyServer::start_with(|c, _| {
        c["auth"] = json!({
            "mode": "uaa", "uaa_url": url, "uaa_client": CLIENT_ID, "uaa_client_secret": CLIENT_SECRET,
        });
        c["cc_url"] = json!(url);
        patch(c);
    })
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

fn sources(body: &str) -> Vec<String> {
    let mut v: Vec<String> = parse(body)["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}->{}",
                p["source"]["id"].as_str().unwrap(),
                p["destination"]["id"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn tokens_are_checked_with_uaa_and_scopes_enforced() {
    let cf = world();
    let s = server(&cf, |_| {});
    let (status, body) = s.get(V1, Some("nonsense"));
    assert_eq!(
        (status, parse(&body)),
        (401, json!({"error": "failed to verify token with uaa"}))
    );
    let (status, body) = s.get(V1, Some("carol-tok"));
    assert_eq!(status, 403);
    assert_eq!(
        parse(&body)["error"],
        "provided scopes [openid] do not include allowed scopes [network.admin network.write]"
    );
    let (status, body) = s.get("/networking/v1/external/whoami", Some("admin-tok"));
    assert_eq!((status, parse(&body)), (200, json!({"subject": "admin"})));
    // check_token was called with the server's client credentials and a form body.
    let recorded = cf.state().requests.clone();
    let check = recorded.iter().find(|r| r.path == "/check_token").unwrap();
    assert_eq!(
        check.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(check
        .authorization
        .as_deref()
        .unwrap()
        .starts_with("Basic "));
    assert!(check.body.contains("token="));

    // UAA down: 401, not 500 (as the original).
    cf.set_failing(true);
    assert_eq!(s.get(V1, Some("admin-tok")).0, 401);
}

#[test]
fn space_developers_may_change_only_their_apps() {
    let cf = world();
    let s = server(&cf, |_| {});
    // alice develops in s1 and s2: a1 -> b1 is allowed.
    let (status, body) = s.post(
        V1,
        Some("alice-tok"),
        &v1_body(&[("a1", "b1", "tcp", 8080, 8080)]),
    );
    assert_eq!((status, body.as_str()), (200, "{}"));
    // bob develops only in s2: a policy touching a1 (in s1) is refused, for create and delete.
    for path in [V1.to_string(), format!("{V1}/delete")] {
        let (status, body) = s.post(
            &path,
            Some("bob-tok"),
            &v1_body(&[("a1", "b1", "tcp", 8080, 8080)]),
        );
        assert_eq!(status, 403, "{path}");
        assert_eq!(
            parse(&body),
            json!({"error": "one or more applications cannot be found or accessed"})
        );
    }
    // Nobody develops in s3.
    assert_eq!(
        s.post(
            V1,
            Some("alice-tok"),
            &v1_body(&[("a1", "x1", "tcp", 1, 1)])
        )
        .0,
        403
    );
    // Admins need no Cloud Controller check.
    assert_eq!(
        s.post(
            V1,
            Some("admin-tok"),
            &v1_body(&[("x1", "a2", "udp", 53, 53)])
        )
        .0,
        200
    );

    // Lists are filtered to policies whose apps are both in the caller's spaces.
    assert_eq!(sources(&s.get(V1, Some("alice-tok")).1), vec!["a1->b1"]);
    assert_eq!(sources(&s.get(V1, Some("bob-tok")).1), Vec::<String>::new());
    assert_eq!(
        sources(&s.get(V1, Some("admin-tok")).1),
        vec!["a1->b1", "x1->a2"]
    );

    // Cloud Controller errors: 500 with the original's messages.
    let mut state = cf.state();
    state.fail_cc = true;
    drop(state);
    let (status, body) = s.post(
        V1,
        Some("alice-tok"),
        &v1_body(&[("a2", "b1", "tcp", 1, 1)]),
    );
    assert_eq!(
        (status, parse(&body)),
        (500, json!({"error": "check access failed"}))
    );
    let (status, body) = s.get(V1, Some("alice-tok"));
    assert_eq!(
        (status, parse(&body)),
        (500, json!({"error": "filter policies failed"}))
    );
    assert_eq!(
        sources(&s.get(V1, Some("admin-tok")).1).len(),
        2,
        "nothing changed"
    );
}

#[test]
fn self_service_lifts_the_scope_check_but_not_space_access() {
    let cf = world();
    cf.add_user("dave-tok", "alice-id", "dave", &["openid"]);
    let s = server(&cf, |c| {
        c["enable_space_developer_self_service"] = json!(true)
    });
    assert_eq!(
        s.post(V1, Some("dave-tok"), &v1_body(&[("a1", "a2", "tcp", 1, 1)]))
            .0,
        200
    );
    assert_eq!(
        s.post(V1, Some("dave-tok"), &v1_body(&[("a1", "x1", "tcp", 1, 1)]))
            .0,
        403
    );
    // Admin-only routes keep their scope check.
    assert_eq!(
        s.get("/networking/v1/external/tags", Some("dave-tok")).0,
        403
    );
}

#[test]
fn quota_counts_existing_and_new_policies_per_source() {
    let cf = world();
    let s = server(&cf, |c| c["max_policies_per_app_source"] = json!(3));
    let batch = |ports: std::ops::Range<i64>| {
        let list: Vec<(&str, &str, &str, i64, i64)> =
            ports.map(|p| ("a1", "a2", "tcp", p, p)).collect();
        v1_body(&list)
    };
    assert_eq!(s.post(V1, Some("alice-tok"), &batch(1..3)).0, 200);
    let (status, body) = s.post(V1, Some("alice-tok"), &batch(3..5));
    assert_eq!(
        (status, parse(&body)),
        (403, json!({"error": "policy quota exceeded"}))
    );
    assert_eq!(s.post(V1, Some("alice-tok"), &batch(3..4)).0, 200);
    // Admins are not bound by the quota.
    assert_eq!(s.post(V1, Some("admin-tok"), &batch(10..20)).0, 200);
}

#[test]
fn cleanup_removes_policies_of_deleted_apps() {
    let cf = world();
    let s = server(&cf, |_| {});
    s.post(
        V1,
        Some("admin-tok"),
        &v1_body(&[("a1", "a2", "tcp", 1, 1), ("a2", "b1", "tcp", 2, 2)]),
    );
    let cleanup = "/networking/v1/external/policies/cleanup";
    let (status, body) = s.post(cleanup, Some("admin-tok"), "");
    assert_eq!(status, 200);
    assert_eq!(parse(&body), json!({"total_policies": 0, "policies": []}));
    cf.remove_app("a1");
    let (status, body) = s.post(
        "/networking/v0/external/policies/cleanup",
        Some("admin-tok"),
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(sources(&body), vec!["a1->a2"]);
    assert_eq!(sources(&s.get(V1, Some("admin-tok")).1), vec!["a2->b1"]);
    assert_eq!(s.post(cleanup, Some("alice-tok"), "").0, 403);
}

#[test]
fn periodic_cleanup_runs_by_itself() {
    let cf = world();
    let s = server(&cf, |c| c["cleanup_interval_seconds"] = json!(1));
    let (status, _) = s.post(
        V1,
        Some("admin-tok"),
        &v1_body(&[("a1", "b1", "tcp", 1, 1)]),
    );
    assert_eq!(status, 200);
    assert_eq!(sources(&s.get(V1, Some("admin-tok")).1), vec!["a1->b1"]);
    cf.remove_app("b1");
    let cleaned = || sources(&s.get(V1, Some("admin-tok")).1).is_empty();
    wait_until(
        "the stale policy's clean-up",
        Duration::from_secs(10),
        cleaned,
    );
}
