//! `netman map-route`, `unmap-route` and `routes` against the real policy server, by app GUID and
//! by app name through the fake Cloud Controller.

mod support;
use support::cli::netman;
use support::{fake_cf, policy_server};

use fake_cf::FakeCf;
use policy_server::*;
use serde_json::{json, Value};

fn stored(server: &PolicyServer) -> Value {
    let (status, body) = server.get("/networking/v1/external/internal_routes", Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{body}");
    parse(&body)["routes"].clone()
}

#[test]
fn map_list_and_unmap_by_guid() {
    let server = PolicyServer::start();
    let env = [
        ("NETMAN_API", server.external.as_str()),
        ("NETMAN_TOKEN", ADMIN_TOKEN),
    ];
    let out = netman(
        &[
            "map-route",
            "guid-b",
            "apps.internal",
            "--hostname",
            "Backend",
        ],
        &env,
    );
    assert!(out.code == 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "Mapping route backend.apps.internal to app guid-b as admin...\nOK\n"
    );
    netman(
        &["map-route", "guid-c", "apps.internal", "-n", "backend"],
        &env,
    );
    assert_eq!(
        stored(&server),
        json!([{"app_guid": "guid-b", "host": "backend", "domain": "apps.internal"},
               {"app_guid": "guid-c", "host": "backend", "domain": "apps.internal"}])
    );
    let out = netman(&["routes"], &env);
    assert!(out.code == 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "Getting internal routes as admin...\n\nhost      domain          apps\nbackend   apps.internal   guid-b, guid-c\n"
    );
    let out = netman(&["routes", "--json"], &env);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["total_routes"], 2);

    // Bad input: refused before any request, nothing changes.
    for (args, message) in [
        (
            vec![
                "map-route",
                "guid-b",
                "apps.internal",
                "--hostname",
                "no_pe",
            ],
            "invalid hostname",
        ),
        (
            vec!["map-route", "guid-b", "apps.internal", "--hostname", "a.b"],
            "one label only",
        ),
        (
            vec!["map-route", "guid-b", "internal", "--hostname", "x"],
            "at least two labels",
        ),
        (vec!["map-route", "guid-b", "apps.internal"], "--hostname"),
        (vec!["map-route", "guid-b"], "DOMAIN"),
    ] {
        let out = netman(&args, &env);
        assert_eq!(out.code, 1, "{args:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    // The server's refusal is shown as it is.
    let out = netman(
        &["map-route", "guid-b", "nope.internal", "--hostname", "x"],
        &env,
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("is not an internal domain"),
        "{}",
        out.stderr
    );
    assert_eq!(stored(&server).as_array().unwrap().len(), 2);

    let out = netman(
        &[
            "unmap-route",
            "guid-b",
            "apps.internal",
            "--hostname",
            "backend",
        ],
        &env,
    );
    assert!(out.code == 0, "{}", out.stderr);
    assert_eq!(
        stored(&server),
        json!([{"app_guid": "guid-c", "host": "backend", "domain": "apps.internal"}])
    );
}

#[test]
fn apps_are_named_through_the_cloud_controller() {
    let cf = FakeCf::start();
    cf.add_user(ADMIN_TOKEN, "admin-id", "admin", &["network.admin"]);
    cf.add_org("o1", "org-one");
    cf.add_space("s-dev", "dev", "o1", &[]);
    cf.add_app("guid-backend", "backend", "s-dev");
    let server = PolicyServer::start();
    let env = [
        ("NETMAN_API", server.external.as_str()),
        ("NETMAN_TOKEN", ADMIN_TOKEN),
        ("NETMAN_CC_API", cf.url.as_str()),
        ("NETMAN_ORG", "org-one"),
        ("NETMAN_SPACE", "dev"),
    ];
    let out = netman(
        &["map-route", "backend", "apps.internal", "--hostname", "be"],
        &env,
    );
    assert!(out.code == 0, "{}", out.stderr);
    assert_eq!(
        stored(&server),
        json!([{"app_guid": "guid-backend", "host": "be", "domain": "apps.internal"}])
    );
    let out = netman(&["routes"], &env);
    assert!(
        out.stdout.contains("be     apps.internal   backend"),
        "{}",
        out.stdout
    );
    let out = netman(
        &["map-route", "missing", "apps.internal", "--hostname", "m"],
        &env,
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("App 'missing' not found."),
        "{}",
        out.stderr
    );
}
