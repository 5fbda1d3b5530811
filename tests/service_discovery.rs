//! Service discovery in the real policy server: internal routes and domains on the external API
//! (validation, scopes, space-developer checks through a fake Cloud Controller), and on the
//! internal mutual-TLS API the cells' registrations, the resolver table, its watch, and expiry.

mod support;
use support::{fake_cf, policy_server, wait_until};

use fake_cf::{FakeCf, CLIENT_ID, CLIENT_SECRET};
use netman::api::sd::{InternalRoutes, TABLE_PATH, VERSION_HEADER};
use netman::http::client::body_string;
use policy_server::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ROUTES: &str = "/networking/v1/external/internal_routes";
const UNMAP: &str = "/networking/v1/external/internal_routes/delete";
const DOMAINS: &str = "/networking/v1/external/internal_domains";

fn routes_body(routes: &[(&str, &str, &str)]) -> String {
    let list: Vec<Value> = routes
        .iter()
        .map(|(app, host, domain)| json!({"app_guid": app, "host": host, "domain": domain}))
        .collect();
    json!({ "routes": list }).to_string()
}

fn listed(s: &PolicyServer, token: &str) -> Vec<(String, String, String)> {
    let (status, body) = s.get(ROUTES, Some(token));
    assert_eq!(status, 200, "{body}");
    let v = parse(&body);
    let list = v["routes"].as_array().unwrap();
    assert_eq!(v["total_routes"].as_u64().unwrap() as usize, list.len());
    list.iter()
        .map(|r| {
            (
                r["app_guid"].as_str().unwrap().to_string(),
                r["host"].as_str().unwrap().to_string(),
                r["domain"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn route(app: &str, host: &str, domain: &str) -> (String, String, String) {
    (app.into(), host.into(), domain.into())
}

fn put_cell(s: &PolicyServer, cell: &str, instances: Value) -> (u16, String) {
    let mut r = s
        .internal_client()
        .put(format!(
            "{}/networking/v1/internal/service_discovery/cells/{cell}",
            s.internal
        ))
        .send(json!({ "instances": instances }).to_string().as_bytes())
        .unwrap();
    let status = r.status().as_u16();
    (status, body_string(&mut r, 1 << 20).unwrap())
}

/// (status, version header, table) of `GET table?query`.
fn get_table(s: &PolicyServer, query: &str) -> (u16, i64, Option<InternalRoutes>) {
    let mut r = s
        .internal_client()
        .get(format!("{}{TABLE_PATH}{query}", s.internal))
        .call()
        .unwrap();
    let status = r.status().as_u16();
    let version = r
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let body = body_string(&mut r, 64 << 20).unwrap();
    let table = (status == 200).then(|| serde_json::from_str(&body).unwrap());
    (status, version, table)
}

/// name -> sorted IPs.
fn ips(t: &InternalRoutes) -> Vec<(String, Vec<String>)> {
    t.routes
        .iter()
        .map(|r| {
            let mut v: Vec<String> = r.instances.iter().map(|i| i.ip.to_string()).collect();
            v.sort();
            (r.name.clone(), v)
        })
        .collect()
}

#[test]
fn routes_are_mapped_listed_and_unmapped_and_bad_input_changes_nothing() {
    let s = PolicyServer::start();
    let ok = routes_body(&[
        ("app-b", "Backend", "apps.internal"),
        ("app-f", "frontend", "apps.internal"),
    ]);
    let (status, body) = s.post(ROUTES, Some(ADMIN_TOKEN), &ok);
    assert_eq!(status, 200, "{body}");
    let expected = vec![
        route("app-b", "backend", "apps.internal"),
        route("app-f", "frontend", "apps.internal"),
    ];
    assert_eq!(
        listed(&s, ADMIN_TOKEN),
        expected,
        "names are stored lowercase"
    );

    // Every bad field is refused with a message naming it, and nothing of the batch is stored.
    let bad: &[(String, &str)] = &[
        (
            routes_body(&[
                ("a", "ok", "apps.internal"),
                ("a", "under_score", "apps.internal"),
            ]),
            "routes[1]: invalid hostname \"under_score\"",
        ),
        (
            routes_body(&[("a", "a.b", "apps.internal")]),
            "one label only",
        ),
        (
            routes_body(&[("a", "-dash", "apps.internal")]),
            "must not start or end with a hyphen",
        ),
        (
            routes_body(&[("a", &"x".repeat(64), "apps.internal")]),
            "1 to 63 characters",
        ),
        (
            routes_body(&[("a", "ok", "apps..internal")]),
            "invalid domain",
        ),
        (
            routes_body(&[("a", "ok", "internal")]),
            "at least two labels",
        ),
        (
            routes_body(&[("", "ok", "apps.internal")]),
            "missing app_guid",
        ),
        (
            routes_body(&[("a", "ok", "nope.internal")]),
            "is not an internal domain",
        ),
        (r#"{"routes":[]}"#.into(), "missing routes"),
        (
            r#"{"routes":[{"app_guid":"a","host":"ok","domain":"apps.internal","port":8080}]}"#
                .into(),
            "unknown field",
        ),
        ("not json".into(), "invalid request body"),
    ];
    for (body, message) in bad {
        let (status, answer) = s.post(ROUTES, Some(ADMIN_TOKEN), body);
        assert_eq!(status, 400, "{body}: {answer}");
        let error = parse(&answer)["error"].as_str().unwrap().to_string();
        assert!(
            error.contains(message),
            "{body}: {error:?} lacks {message:?}"
        );
    }
    assert_eq!(listed(&s, ADMIN_TOKEN), expected);

    // Scopes as for policies: no network scope, no access.
    let (status, _) = s.post(ROUTES, Some(READ_TOKEN), &ok);
    assert_eq!(status, 403);
    let (status, _) = s.get(ROUTES, None);
    assert_eq!(status, 401);

    // Domains: listed by writers, changed by admins only, at run time.
    let (status, body) = s.get(DOMAINS, Some(WRITE_TOKEN));
    assert_eq!(
        (status, parse(&body)),
        (200, json!({"domains": ["apps.internal"]}))
    );
    let (status, _) = s.post(
        DOMAINS,
        Some(WRITE_TOKEN),
        r#"{"domains":["other.internal"]}"#,
    );
    assert_eq!(status, 403);
    let (status, body) = s.post(
        DOMAINS,
        Some(ADMIN_TOKEN),
        r#"{"domains":["bad_domain.internal"]}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post(
        DOMAINS,
        Some(ADMIN_TOKEN),
        r#"{"domains":["Other.Internal"]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.post(
        ROUTES,
        Some(ADMIN_TOKEN),
        &routes_body(&[("app-o", "x", "other.internal")]),
    );
    assert_eq!(status, 200, "{body}");
    // A domain that is a route's name; a domain with routes cannot go.
    let (status, body) = s.post(
        DOMAINS,
        Some(ADMIN_TOKEN),
        r#"{"domains":["backend.apps.internal"]}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post(
        &format!("{DOMAINS}/delete"),
        Some(ADMIN_TOKEN),
        r#"{"domains":["other.internal"]}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("unmap them first"), "{body}");

    // Unmap: missing routes are skipped; the rest goes.
    let (status, body) = s.post(
        UNMAP,
        Some(ADMIN_TOKEN),
        &routes_body(&[
            ("app-b", "backend", "apps.internal"),
            ("nobody", "n", "apps.internal"),
        ]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        listed(&s, ADMIN_TOKEN),
        vec![
            route("app-f", "frontend", "apps.internal"),
            route("app-o", "x", "other.internal")
        ]
    );
}

/// Org o1 with spaces s1 (dev: alice) and s2 (dev: bob); apps a1 in s1, b1 in s2.
fn world() -> FakeCf {
    let cf = FakeCf::start();
    cf.add_user("admin-tok", "admin-id", "admin", &["network.admin"]);
    cf.add_user("alice-tok", "alice-id", "alice", &["network.write"]);
    cf.add_user("bob-tok", "bob-id", "bob", &["network.write"]);
    cf.add_org("o1", "org");
    cf.add_space("s1", "dev", "o1", &["alice-id"]);
    cf.add_space("s2", "prod", "o1", &["bob-id"]);
    cf.add_app("a1", "app-a1", "s1");
    cf.add_app("b1", "app-b1", "s2");
    cf
}

#[test]
fn space_developers_map_routes_of_their_own_apps_only() {
    let cf = world();
    let url = cf.url.clone();
    let s = PolicyServer::start_with(|c, _| {
        c["auth"] = json!({
            "mode": "uaa", "uaa_url": url, "uaa_client": CLIENT_ID, "uaa_client_secret": CLIENT_SECRET,
        });
        c["cc_url"] = json!(url);
    });
    let (status, body) = s.post(
        ROUTES,
        Some("alice-tok"),
        &routes_body(&[("a1", "alpha", "apps.internal")]),
    );
    assert_eq!(status, 200, "{body}");
    // Another developer's app, alone or in a batch with one's own: refused whole.
    for batch in [
        vec![("b1", "beta", "apps.internal")],
        vec![
            ("a1", "alpha2", "apps.internal"),
            ("b1", "beta", "apps.internal"),
        ],
        vec![("no-such-app", "ghost", "apps.internal")],
    ] {
        let (status, body) = s.post(ROUTES, Some("alice-tok"), &routes_body(&batch));
        assert_eq!(status, 403, "{batch:?}: {body}");
    }
    let (status, _) = s.post(
        UNMAP,
        Some("bob-tok"),
        &routes_body(&[("a1", "alpha", "apps.internal")]),
    );
    assert_eq!(status, 403);
    let (status, body) = s.post(
        ROUTES,
        Some("bob-tok"),
        &routes_body(&[("b1", "beta", "apps.internal")]),
    );
    assert_eq!(status, 200, "{body}");
    // Each sees the routes of apps in their spaces; the admin sees all.
    assert_eq!(
        listed(&s, "alice-tok"),
        vec![route("a1", "alpha", "apps.internal")]
    );
    assert_eq!(
        listed(&s, "bob-tok"),
        vec![route("b1", "beta", "apps.internal")]
    );
    assert_eq!(listed(&s, "admin-tok").len(), 2);
    // Domains are the platform's: not for space developers.
    let (status, _) = s.post(
        DOMAINS,
        Some("alice-tok"),
        r#"{"domains":["mine.internal"]}"#,
    );
    assert_eq!(status, 403);
}

#[test]
fn registrations_build_the_table_and_watches_wake_on_changes() {
    let s = PolicyServer::start();
    let (status, body) = s.post(
        ROUTES,
        Some(ADMIN_TOKEN),
        &routes_body(&[("app-b", "backend", "apps.internal")]),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = put_cell(
        &s,
        "cell-1",
        json!([{"app_guid": "app-b", "index": 0, "ip": "10.255.1.2"},
               {"app_guid": "other", "index": 0, "ip": "10.255.1.3"}]),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = put_cell(
        &s,
        "cell-2",
        json!([{"app_guid": "app-b", "index": 1, "ip": "10.255.2.2"}]),
    );
    assert_eq!(status, 200, "{body}");
    // Bad reports are refused and change nothing.
    for (cell, instances) in [
        ("bad/cell", json!([])),
        ("cell%203", json!([])),
        (
            "cell-1",
            json!([{"app_guid": "a", "index": 0, "ip": "10.0.0.1"}, {"app_guid": "b", "index": 1, "ip": "10.0.0.1"}]),
        ),
        (
            "cell-1",
            json!([{"app_guid": "", "index": 0, "ip": "10.0.0.1"}]),
        ),
        (
            "cell-1",
            json!([{"app_guid": "a", "index": 0, "ip": "::1"}]),
        ),
    ] {
        let (status, body) = put_cell(&s, cell, instances.clone());
        assert!(
            status == 400 || status == 404,
            "{cell} {instances}: {status} {body}"
        );
    }
    let until = Instant::now() + Duration::from_secs(5);
    let (version, table) = loop {
        let (status, version, table) = get_table(&s, "");
        assert_eq!(status, 200);
        let table = table.unwrap();
        if ips(&table)
            == vec![(
                "backend.apps.internal".to_string(),
                vec!["10.255.1.2".to_string(), "10.255.2.2".to_string()],
            )]
        {
            break (version, table);
        }
        assert!(
            Instant::now() < until,
            "table never showed both instances: {table:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(table.domains, vec!["apps.internal".to_string()]);

    // A watch at the current version is held, and answered 304 when nothing changes.
    let started = Instant::now();
    let (status, v, _) = get_table(&s, &format!("?after={version}&wait=1"));
    assert_eq!((status, v), (304, version));
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A refresh that reports the same moves nothing.
    put_cell(
        &s,
        "cell-2",
        json!([{"app_guid": "app-b", "index": 1, "ip": "10.255.2.2"}]),
    );
    let (status, _, _) = get_table(&s, &format!("?after={version}&wait=1"));
    assert_eq!(status, 304);

    // A stopped instance (the cell's next report) wakes a parked watch at once.
    let watcher = {
        let client = s.internal_client();
        let url = format!("{}{TABLE_PATH}?after={version}&wait=30", s.internal);
        std::thread::spawn(move || {
            let mut r = client.get(url).call().unwrap();
            let status = r.status().as_u16();
            let body = body_string(&mut r, 1 << 20).unwrap();
            (status, Instant::now(), body)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let changed = Instant::now();
    put_cell(&s, "cell-2", json!([]));
    let (status, answered, body) = watcher.join().unwrap();
    assert_eq!(status, 200);
    let table: InternalRoutes = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ips(&table),
        vec![(
            "backend.apps.internal".to_string(),
            vec!["10.255.1.2".to_string()]
        )]
    );
    assert!(
        answered.duration_since(changed) < Duration::from_secs(1),
        "the watch answered {:?} after the change",
        answered.duration_since(changed)
    );

    // Bad watch parameters.
    assert_eq!(get_table(&s, "?wait=soon").0, 400);
    assert_eq!(get_table(&s, "?after=x&wait=1").0, 400);
}

#[test]
fn a_silent_cell_expires_and_the_table_survives_a_restart() {
    let mut s = PolicyServer::start_with(|c, _| {
        c["service_discovery_cell_expiry_seconds"] = json!(2);
    });
    s.post(
        ROUTES,
        Some(ADMIN_TOKEN),
        &routes_body(&[("app-b", "backend", "apps.internal")]),
    );
    put_cell(
        &s,
        "silent",
        json!([{"app_guid": "app-b", "index": 0, "ip": "10.255.1.2"}]),
    );
    let alive = json!([{"app_guid": "app-b", "index": 1, "ip": "10.255.2.2"}]);
    put_cell(&s, "alive", alive.clone());
    let both = vec![(
        "backend.apps.internal".to_string(),
        vec!["10.255.1.2".to_string(), "10.255.2.2".to_string()],
    )];
    wait_until(
        "both instances in the table",
        Duration::from_secs(5),
        || ips(&get_table(&s, "").2.unwrap()) == both,
    );
    // Killed and started again: the table is served at once from the database, no warm-up.
    s.kill();
    s.spawn();
    let (status, _, table) = get_table(&s, "");
    assert_eq!(status, 200);
    assert_eq!(ips(&table.unwrap()), both);
    // "alive" keeps refreshing, "silent" does not: it goes after the expiry, not before.
    let started = Instant::now();
    let one = vec![(
        "backend.apps.internal".to_string(),
        vec!["10.255.2.2".to_string()],
    )];
    loop {
        put_cell(&s, "alive", alive.clone());
        let now = ips(&get_table(&s, "").2.unwrap());
        if now == one {
            break;
        }
        assert_eq!(now, both);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the silent cell never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its last report was before the restart; the expiry counts from the server's start.
    assert!(
        s.log().contains("\"silent\" sent no refresh"),
        "{}",
        s.log()
    );
}

#[test]
fn a_bad_expiry_is_refused_at_start() {
    let s = PolicyServer::configure(|c, _| {
        c["service_discovery_cell_expiry_seconds"] = json!(0);
    });
    let err = s.start_refused();
    assert!(
        err.contains("service_discovery_cell_expiry_seconds"),
        "{err}"
    );
}
