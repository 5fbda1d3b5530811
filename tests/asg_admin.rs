//! The admin API for security groups on the real policy server, as a user drives it: create,
//! list, get, update, delete; bind and unbind running and staging spaces; global enable. Each
//! change shows in the cells' internal listing and moves the version; bad input is refused with
//! the rule index and field named, and nothing is stored; only admins may use it.

mod support;
use support::policy_server::{PolicyServer, ADMIN_TOKEN, READ_TOKEN, WRITE_TOKEN};

use serde_json::{json, Value};

const BASE: &str = "/networking/v1/external/security_groups";

struct Admin<'a> {
    server: &'a PolicyServer,
}

impl Admin<'_> {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.server.external);
        let client = self.server.client();
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .header("content-type", "application/json")
            .body(text)
            .unwrap();
        let mut resp = client.run(req).unwrap();
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(Value::String(body))
        };
        (status, value)
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN_TOKEN), body)
    }

    /// The cells' view: (guid, running_default, staging_default, running spaces, staging spaces).
    fn internal(&self, spaces: &str) -> Vec<Value> {
        let (status, body) = self.server.internal_get(&format!(
            "/networking/v1/internal/security_groups?space_guids={spaces}"
        ));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["security_groups"].as_array().unwrap().clone()
    }

    fn version(&self) -> i64 {
        let (status, body) = self
            .server
            .internal_get("/networking/v1/internal/security_groups_last_updated");
        assert_eq!(status, 200);
        body.parse().unwrap()
    }
}

fn rules() -> Value {
    json!([
        {"protocol": "tcp", "destination": "10.0.0.0/24", "ports": "80, 443", "description": "web"},
        {"protocol": "icmp", "destination": "10.0.1.1-10.0.1.9", "type": -1, "code": -1},
        {"protocol": "all", "destination": "192.168.0.1,192.168.0.2", "log": true}
    ])
}

#[test]
fn a_group_lives_through_create_bind_update_unbind_delete_and_the_cells_see_each_step() {
    let server = PolicyServer::start();
    let api = Admin { server: &server };
    let v0 = api.version();

    let (status, created) = api.admin("POST", BASE, Some(json!({"name": "web", "rules": rules()})));
    assert_eq!(status, 201, "{created}");
    let guid = created["guid"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "web");
    assert_eq!(
        created["globally_enabled"],
        json!({"running": false, "staging": false})
    );
    assert_eq!(created["rules"][0]["ports"], "80, 443");
    assert_eq!(created["rules"][1]["type"], -1);
    assert_eq!(
        created["relationships"]["running_spaces"]["data"],
        json!([])
    );
    let v1 = api.version();
    assert!(v1 > v0);
    assert!(
        api.internal("space-1").is_empty(),
        "not bound, not global: no cell gets it"
    );

    // Bound to running in space-1: the cells of space-1 get it, in the original's shape.
    let (status, bound) = api.admin(
        "POST",
        &format!("{BASE}/{guid}/relationships/running_spaces"),
        Some(json!({"data": [{"guid": "space-1"}, {"guid": "space-2"}]})),
    );
    assert_eq!(status, 200, "{bound}");
    assert_eq!(
        bound["data"],
        json!([{"guid": "space-1"}, {"guid": "space-2"}])
    );
    let cells = api.internal("space-1");
    assert_eq!(cells.len(), 1);
    assert_eq!(
        cells[0]["running_space_guids"],
        json!(["space-1", "space-2"])
    );
    assert_eq!(cells[0]["staging_space_guids"], json!([]));
    let stored: Value = serde_json::from_str(cells[0]["rules"].as_str().unwrap()).unwrap();
    assert_eq!(
        stored[0],
        json!({"protocol":"tcp","destination":"10.0.0.0/24","ports":"80, 443","type":0,"code":0,"description":"web","log":false})
    );
    let (status, _) = api.admin(
        "POST",
        &format!("{BASE}/{guid}/relationships/staging_spaces"),
        Some(json!({"data": [{"guid": "space-3"}]})),
    );
    assert_eq!(status, 200);
    assert_eq!(
        api.internal("space-3")[0]["staging_space_guids"],
        json!(["space-3"])
    );

    // Update: rename, new rules, global running only (staging stays as it was).
    let (status, updated) = api.admin(
        "PATCH",
        &format!("{BASE}/{guid}"),
        Some(json!({"name": "web2", "rules": [{"protocol":"udp","destination":"8.8.8.8","ports":"53"}],
                    "globally_enabled": {"running": true}})),
    );
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "web2");
    assert_eq!(
        updated["globally_enabled"],
        json!({"running": true, "staging": false})
    );
    assert_eq!(updated["rules"].as_array().unwrap().len(), 1);
    let everyone = api.internal("");
    assert_eq!(everyone.len(), 1, "globally enabled: every cell gets it");
    assert_eq!(everyone[0]["running_default"], true);
    let (status, got) = api.admin("GET", &format!("{BASE}/{guid}"), None);
    assert_eq!((status, &got), (200, &updated));

    // Listing with the v3 filters and paging.
    let (status, _) = api.admin("POST", BASE, Some(json!({"name": "other"})));
    assert_eq!(status, 201);
    let (status, list) = api.admin("GET", &format!("{BASE}?per_page=1"), None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["pagination"]["total_results"], 2);
    assert_eq!(list["pagination"]["total_pages"], 2);
    assert_eq!(list["resources"].as_array().unwrap().len(), 1);
    let next = list["pagination"]["next"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, page2) = api.admin("GET", &next, None);
    assert_eq!(page2["resources"][0]["name"], "other");
    let (_, named) = api.admin("GET", &format!("{BASE}?names=web2"), None);
    assert_eq!(named["resources"][0]["guid"], guid.as_str());
    let (_, by_space) = api.admin("GET", &format!("{BASE}?running_space_guids=space-2"), None);
    assert_eq!(by_space["pagination"]["total_results"], 1);
    let (_, global) = api.admin(
        "GET",
        &format!("{BASE}?globally_enabled_running=false"),
        None,
    );
    assert_eq!(global["resources"][0]["name"], "other");

    // Unbind, then delete.
    let v_before = api.version();
    let (status, _) = api.admin(
        "DELETE",
        &format!("{BASE}/{guid}/relationships/running_spaces/space-1"),
        None,
    );
    assert_eq!(status, 204);
    assert!(api.version() > v_before);
    let (_, got) = api.admin("GET", &format!("{BASE}/{guid}"), None);
    assert_eq!(
        got["relationships"]["running_spaces"]["data"],
        json!([{"guid": "space-2"}])
    );
    let (status, _) = api.admin("DELETE", &format!("{BASE}/{guid}"), None);
    assert_eq!(status, 204);
    let (status, gone) = api.admin("GET", &format!("{BASE}/{guid}"), None);
    assert_eq!(status, 404);
    assert_eq!(gone["errors"][0]["title"], "CF-ResourceNotFound");
    assert!(api.internal("space-2").is_empty());
    let (status, _) = api.admin("DELETE", &format!("{BASE}/{guid}"), None);
    assert_eq!(status, 404);
}

#[test]
fn bad_input_is_refused_naming_the_rule_and_field_and_nothing_is_stored() {
    let server = PolicyServer::start();
    let api = Admin { server: &server };
    let (status, created) = api.admin(
        "POST",
        BASE,
        Some(json!({"name": "keep", "rules": rules()})),
    );
    assert_eq!(status, 201);
    let guid = created["guid"].as_str().unwrap().to_string();
    let version = api.version();
    let bad_rule = |rule: Value| json!({"name": "new", "rules": [{"protocol":"all","destination":"1.1.1.1"}, rule]});
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            BASE.into(),
            bad_rule(json!({"protocol":"tcp","destination":"1.1.1.1","ports":"80,,443"})),
            "rules[1].ports",
        ),
        (
            "POST",
            BASE.into(),
            bad_rule(json!({"protocol":"icmp","destination":"1.1.1.1","type":300,"code":0})),
            "rules[1].type",
        ),
        (
            "POST",
            BASE.into(),
            bad_rule(json!({"protocol":"tcp","destination":"10.0.0.0/40","ports":"80"})),
            "rules[1].destination",
        ),
        (
            "POST",
            BASE.into(),
            bad_rule(json!({"protocol":"gre","destination":"1.1.1.1"})),
            "rules[1].protocol",
        ),
        (
            "POST",
            BASE.into(),
            json!({"name": "x", "rules": {"protocol": "all"}}),
            "Rules",
        ),
        ("POST", BASE.into(), json!({"name": ""}), "Name"),
        (
            "POST",
            BASE.into(),
            json!({"name": "x".repeat(251)}),
            "Name",
        ),
        (
            "POST",
            BASE.into(),
            json!({"name": "keep"}),
            "already exists",
        ),
        (
            "POST",
            BASE.into(),
            json!({"name": "x", "colour": "red"}),
            "'colour'",
        ),
        (
            "POST",
            BASE.into(),
            json!({"name": "x", "globally_enabled": {"running": "yes"}}),
            "running",
        ),
        (
            "POST",
            BASE.into(),
            json!({"name": "x", "relationships": {"running_spaces": {"data": [{"guid": ""}]}}}),
            "space guid",
        ),
        (
            "PATCH",
            format!("{BASE}/{guid}"),
            json!({"rules": [{"protocol":"udp","destination":"1.1.1.1"}]}),
            "rules[0].ports",
        ),
        (
            "PATCH",
            format!("{BASE}/{guid}"),
            json!({"globally_enabled": {"running": true, "x": 1}}),
            "'x'",
        ),
        (
            "PATCH",
            format!("{BASE}/{guid}"),
            json!({"name": 7}),
            "Name",
        ),
        (
            "POST",
            format!("{BASE}/{guid}/relationships/running_spaces"),
            json!({"data": "space"}),
            "running_spaces",
        ),
        (
            "POST",
            format!("{BASE}/{guid}/relationships/staging_spaces"),
            json!({"data": [{"guid": "a,b"}]}),
            "commas",
        ),
    ];
    for (method, path, body, needle) in cases {
        let (status, answer) = api.admin(method, &path, Some(body.clone()));
        assert_eq!(status, 422, "{method} {body}: {answer}");
        let detail = answer["errors"][0]["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{body}: {detail:?} should name {needle:?}"
        );
    }
    let (status, answer) = api.call("POST", BASE, Some(ADMIN_TOKEN), None);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(api.version(), version, "nothing was stored");
    let (_, list) = api.admin("GET", BASE, None);
    assert_eq!(list["pagination"]["total_results"], 1);
    let (_, kept) = api.admin("GET", &format!("{BASE}/{guid}"), None);
    assert_eq!(kept, created);

    let (status, _) = api.admin("GET", &format!("{BASE}?per_page=5001"), None);
    assert_eq!(status, 400);
    let (status, _) = api.admin("PUT", &format!("{BASE}/{guid}"), Some(json!({})));
    assert_eq!(status, 405);
    let (status, _) = api.admin(
        "PATCH",
        &format!("{BASE}/missing"),
        Some(json!({"name": "n"})),
    );
    assert_eq!(status, 404);
}

#[test]
fn only_admins_may_use_it() {
    let server = PolicyServer::start();
    let api = Admin { server: &server };
    let (status, _) = api.call("GET", BASE, None, None);
    assert_eq!(status, 401);
    for token in [WRITE_TOKEN, READ_TOKEN] {
        let (status, _) = api.call("GET", BASE, Some(token), None);
        assert_eq!(status, 403, "{token}");
        let (status, _) = api.call("POST", BASE, Some(token), Some(json!({"name": "x"})));
        assert_eq!(status, 403, "{token}");
    }
    let (_, list) = api.admin("GET", BASE, None);
    assert_eq!(list["pagination"]["total_results"], 0);
}

/// A cell's parked watch (`security_groups_last_updated?wait=&after=`) is answered by each change
/// made through the admin API (bind, global enable, unbind) with the new version, marked as the
/// watch's; with nothing changed it is answered with the same version when its wait runs out.
#[test]
fn parked_watches_are_answered_by_admin_changes_and_unchanged_when_their_wait_runs_out() {
    use netman::api::policy::WATCH_HEADER;
    const PATH: &str = "/networking/v1/internal/security_groups_last_updated";
    let server = PolicyServer::start();
    let api = Admin { server: &server };
    let (status, created) = api.admin("POST", BASE, Some(json!({"name": "web", "rules": rules()})));
    assert_eq!(status, 201, "{created}");
    let guid = created["guid"].as_str().unwrap().to_string();
    let watch = |wait: u64, after: i64| {
        let client = server.internal_client();
        let url = format!("{}{PATH}?wait={wait}&after={after}", server.internal);
        std::thread::spawn(move || {
            let mut resp = client.get(&url).call().unwrap();
            let mark = resp
                .headers()
                .get(WATCH_HEADER)
                .map(|v| v.to_str().unwrap().to_string());
            let body = resp.body_mut().read_to_string().unwrap();
            (resp.status().as_u16(), mark, body.parse::<i64>().unwrap())
        })
    };
    let changes: [(&str, String, Option<Value>); 3] = [
        (
            "POST",
            format!("{BASE}/{guid}/relationships/running_spaces"),
            Some(json!({"data": [{"guid": "space-1"}]})),
        ),
        (
            "PATCH",
            format!("{BASE}/{guid}"),
            Some(json!({"globally_enabled": {"staging": true}})),
        ),
        (
            "DELETE",
            format!("{BASE}/{guid}/relationships/running_spaces/space-1"),
            None,
        ),
    ];
    let mut version = api.version();
    for (method, path, body) in changes {
        let parked_before = server.parked_watches();
        let answer = watch(25, version);
        support::wait_until(
            "the watch to park",
            std::time::Duration::from_secs(10),
            || server.parked_watches() > parked_before,
        );
        let (status, resp) = api.admin(method, &path, body);
        assert!(status < 300, "{method} {path}: {status} {resp}");
        let (status, mark, answered) = answer.join().unwrap();
        assert_eq!(
            (status, mark.as_deref()),
            (200, Some("1")),
            "{method} {path}"
        );
        assert!(
            answered > version,
            "{method} {path}: {answered} after {version}"
        );
        assert_eq!(answered, api.version(), "{method} {path}");
        version = answered;
    }
    // Nothing changes: the same version when the wait runs out.
    let (status, mark, answered) = watch(1, version).join().unwrap();
    assert_eq!(
        (status, mark.as_deref(), answered),
        (200, Some("1"), version)
    );
}
