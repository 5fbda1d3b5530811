//! `netman map-route`, `unmap-route` and `routes` against the real policy server, by app GUID and
//! by app name through the fake Cloud Controller.

mod support;
use support::{fake_cf, policy_server};

use fake_cf::FakeCf;
use policy_server::*;
use serde_json::{json, Value};
use std::process::{Command, Output};

fn netman(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netman"));
    cmd.env_clear().env("HOME", home.path()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

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
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
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
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Getting internal routes as admin...\n\nhost      domain          apps\nbackend   apps.internal   guid-b, guid-c\n"
    );
    let out = netman(&["routes", "--json"], &env);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
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
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // The server's refusal is shown as it is.
    let out = netman(
        &["map-route", "guid-b", "nope.internal", "--hostname", "x"],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not an internal domain"),
        "{}",
        text(&out.stderr)
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
    assert!(out.status.success(), "{}", text(&out.stderr));
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
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        stored(&server),
        json!([{"app_guid": "guid-backend", "host": "be", "domain": "apps.internal"}])
    );
    let out = netman(&["routes"], &env);
    assert!(
        text(&out.stdout).contains("be     apps.internal   backend"),
        "{}",
        text(&out.stdout)
    );
    let out = netman(
        &["map-route", "missing", "apps.internal", "--hostname", "m"],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("App 'missing' not found."),
        "{}",
        text(&out.stderr)
    );
}
