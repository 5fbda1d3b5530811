//! The `netman` CLI against the real policy-server binary (SQLite, static-token auth), with app
//! names resolved through the fake Cloud Controller, and targets read from a cf CLI config in a
//! temporary HOME.

mod support;
use support::cli::{netman, Run};
use support::{fake_cf, policy_server};

use fake_cf::{FakeCf, CLIENT_ID, CLIENT_SECRET};
use policy_server::*;
use serde_json::{json, Value};
use std::path::Path;

const V1: &str = "/networking/v1/external/policies";

/// `netman` against `server` with a token, apps by GUID.
fn as_user(server: &PolicyServer, token: &str, args: &[&str]) -> Run {
    netman(
        args,
        &[("NETMAN_API", &server.external), ("NETMAN_TOKEN", token)],
    )
}

fn policies(server: &PolicyServer) -> Vec<String> {
    let (status, body) = server.get(V1, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut list: Vec<String> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let d = &p["destination"];
            format!(
                "{}->{} {} {}-{}",
                p["source"]["id"].as_str().unwrap(),
                d["id"].as_str().unwrap(),
                d["protocol"].as_str().unwrap(),
                d["ports"]["start"],
                d["ports"]["end"]
            )
        })
        .collect();
    list.sort();
    list
}

#[test]
fn allow_list_remove_by_guid() {
    let server = PolicyServer::start();
    let r = as_user(
        &server,
        ADMIN_TOKEN,
        &[
            "allow-access",
            "app-a",
            "app-b",
            "--protocol",
            "udp",
            "--port",
            "8080-8090",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "Allowing traffic from app-a to app-b as admin...\nOK\n"
    );
    // cf defaults: tcp, 8080; the modern names work the same.
    let r = as_user(
        &server,
        ADMIN_TOKEN,
        &["add-network-policy", "app-a", "app-c"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        policies(&server),
        vec!["app-a->app-b udp 8080-8090", "app-a->app-c tcp 8080-8080"]
    );

    let r = as_user(&server, ADMIN_TOKEN, &["list-access"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "Listing policies as admin...");
    assert_eq!(lines[1], "OK");
    assert_eq!(lines[2], "");
    assert_eq!(lines[3], "Source   Destination   Protocol   Port");
    let mut rows = lines[4..].to_vec();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            "app-a    app-b         udp        8080-8090",
            "app-a    app-c         tcp        8080"
        ]
    );
    // --app filters by source or destination (id=), --source by source only.
    let r = as_user(
        &server,
        ADMIN_TOKEN,
        &["network-policies", "--app", "app-c"],
    );
    assert_eq!(r.stdout.lines().count(), 5, "{r:?}");
    assert!(r.stdout.contains("app-c"));
    let r = as_user(&server, ADMIN_TOKEN, &["list-access", "--source", "app-c"]);
    assert_eq!(r.stdout.lines().count(), 4, "{r:?}");

    // --json prints the server's response.
    let r = as_user(&server, ADMIN_TOKEN, &["list-access", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["total_policies"], 2);

    let r = as_user(
        &server,
        ADMIN_TOKEN,
        &[
            "remove-access",
            "app-a",
            "app-b",
            "--protocol",
            "udp",
            "--port",
            "8080-8090",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "Denying traffic from app-a to app-b as admin...\nOK\n"
    );
    let r = as_user(
        &server,
        ADMIN_TOKEN,
        &[
            "deny-access",
            "app-a",
            "app-c",
            "--protocol",
            "tcp",
            "--port",
            "8080",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["policies"][0]["destination"]["id"], "app-c");
    assert!(policies(&server).is_empty());
    // CF_TRACE shows the HTTP exchange, never the token.
    let r = netman(
        &["list-access"],
        &[
            ("NETMAN_API", &server.external),
            ("NETMAN_TOKEN", ADMIN_TOKEN),
            ("CF_TRACE", "true"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("REQUEST:\nGET {}{V1}\n", server.external)),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains("RESPONSE:\n200 OK\n{\"total_policies\":0"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("[PRIVATE DATA HIDDEN]") && !r.stderr.contains(ADMIN_TOKEN),
        "{r:?}"
    );
    // Removing what is not there is fine, as on the server.
    let r = as_user(
        &server,
        ADMIN_TOKEN,
        &[
            "remove-network-policy",
            "x",
            "y",
            "--protocol",
            "tcp",
            "--port",
            "1",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn validation_errors_change_nothing() {
    let server = PolicyServer::start();
    let cases: &[(&[&str], &str)] = &[
        (&["allow-access"], "Incorrect usage. the required arguments `SOURCE_APP` and `DESTINATION_APP` were not provided"),
        (&["allow-access", "a"], "Incorrect usage. the required argument `DESTINATION_APP` was not provided"),
        (&["allow-access", "a", "b", "c"], "Incorrect usage. unexpected argument 'c' found"),
        (&["allow-access", "a", "b", "--port", "80x"], "Incorrect usage. Port is not valid: 80x"),
        (&["allow-access", "a", "b", "--port", "0"], "Incorrect usage. Port is not valid. Must be in range <1-65535>."),
        (&["allow-access", "a", "b", "--port", "65536"], "Incorrect usage. Port is not valid. Must be in range <1-65535>."),
        (&["allow-access", "a", "b", "--port", "90-80"], "Incorrect usage. Port is not valid: 90-80."),
        (&["allow-access", "a", "b", "--protocol", "icmp"], "Incorrect usage. Protocol is not valid. Must be tcp or udp."),
        (&["allow-access", "a", "b", "-o", "org"], "Incorrect usage. -o DESTINATION_ORG_NAME needs -s DESTINATION_SPACE_NAME."),
        (&["allow-access", "a", "b", "--destination-app", "c"], "Incorrect usage. Give the destination app either"),
        (&["allow-access", "a", "b", "-s", "space"], "Incorrect usage. -s and -o need app names and a Cloud Controller"),
        (&["allow-access", "a", "b", "--port"], "Incorrect usage. a value is required for '--port"),
        (&["remove-access", "a", "b", "--port", "80"], "Incorrect usage. the required flag `--protocol` was not provided"),
        (&["remove-access", "a", "b", "--protocol", "tcp"], "Incorrect usage. the required flag `--port` was not provided"),
        (&["list-access", "--app", "a", "--source", "b"], "Incorrect usage. Give either --app or --source, not both."),
        (&["list-access", "--bogus"], "Incorrect usage. unexpected argument '--bogus' found"),
        (&["bogus-command"], "'bogus-command' is not a registered command. See 'netman help'."),
    ];
    for (args, want) in cases {
        let r = as_user(&server, ADMIN_TOKEN, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.starts_with("FAILED\n"), "{args:?}: {r:?}");
        assert!(r.stderr.contains(want), "{args:?}: want {want:?}: {r:?}");
        // Usage errors show the command's help.
        if want.starts_with("Incorrect usage") {
            assert!(r.stdout.contains("USAGE:\n   netman "), "{args:?}: {r:?}");
        }
    }
    // --destination-app is the cf 6 form of the destination.
    let r = as_user(
        &server,
        ADMIN_TOKEN,
        &[
            "allow-access",
            "a",
            "--destination-app",
            "b",
            "--port",
            "9000",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(policies(&server), vec!["a->b tcp 9000-9000"]);
}

#[test]
fn failures_of_the_server_say_what_to_do() {
    let server = PolicyServer::start();
    // 401: a token the server does not know.
    let r = as_user(&server, "stale-token", &["list-access"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("Listing policies as unknown user..."),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("FAILED\ngetting policies: the policy server did not accept the token (401: failed to verify token with uaa)")
            && r.stderr.contains("cf login"),
        "{r:?}"
    );
    // 403: no network scope; and admin-only routes with a write token.
    let r = as_user(&server, READ_TOKEN, &["allow-access", "a", "b"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("adding policies: not authorized (403: provided scopes [openid] do not include allowed scopes [network.admin network.write])"), "{r:?}");
    assert!(r.stderr.contains("network.write"), "{r:?}");
    let r = as_user(&server, WRITE_TOKEN, &["tags"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("getting tags: not authorized (403"),
        "{r:?}"
    );
    // A non-admin without a Cloud Controller cannot be shown to own the apps.
    let r = as_user(&server, WRITE_TOKEN, &["allow-access", "a", "b"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("one or more applications cannot be found or accessed (403)"),
        "{r:?}"
    );
    assert!(r.stderr.contains("space developer"), "{r:?}");
    assert!(policies(&server).is_empty());

    // 500: a server that fails.
    let failing = netman::http::Server::start(
        "127.0.0.1:0",
        Default::default(),
        |_: &netman::http::Request| netman::http::Response::error(500, "database read failed"),
    )
    .unwrap();
    let url = format!("http://{}", failing.local_addr());
    let r = netman(
        &["list-access"],
        &[("NETMAN_API", &url), ("NETMAN_TOKEN", "t")],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("getting policies: policy server error (500: database read failed)"),
        "{r:?}"
    );
    let r = netman(
        &["list-access", "--json"],
        &[("NETMAN_API", &url), ("NETMAN_TOKEN", "t")],
    );
    assert_eq!(r.code, 1, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("500"), "{r:?}");
    failing.shutdown();

    // Down: nothing listens.
    let port = free_port();
    let down = format!("http://127.0.0.1:{port}");
    let r = netman(
        &["allow-access", "a", "b"],
        &[("NETMAN_API", &down), ("NETMAN_TOKEN", "t")],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("adding policies: failed to make request to policy server"),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains(&format!("Check the API endpoint ({down})")),
        "{r:?}"
    );

    // No target, no token.
    let r = netman(&["list-access"], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("No API endpoint set. Use '--api URL'"),
        "{r:?}"
    );
    let r = netman(&["list-access", "--api", &server.external], &[]);
    assert!(
        r.stderr.contains("Not logged in. Use '--token TOKEN'"),
        "{r:?}"
    );
}

#[test]
fn tags_whoami_and_cleanup() {
    let cf = FakeCf::start();
    cf.add_org("o1", "org");
    cf.add_space("s1", "dev", "o1", &[]);
    cf.add_app("live-1", "live-1", "s1");
    cf.add_app("live-2", "live-2", "s1");
    let url = cf.url.clone();
    let server = PolicyServer::start_with(|c, dir| {
        c["auth"] = json!({
            "mode": "tokens", "tokens_file": dir.join("tokens.json"),
            "uaa_url": url, "uaa_client": CLIENT_ID, "uaa_client_secret": CLIENT_SECRET,
        });
        c["cc_url"] = json!(url);
    });
    for (s, d) in [("live-1", "live-2"), ("live-1", "gone"), ("gone", "live-2")] {
        assert_eq!(
            as_user(&server, ADMIN_TOKEN, &["allow-access", s, d]).code,
            0
        );
    }
    let r = as_user(&server, ADMIN_TOKEN, &["whoami"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "admin\n"), "{r:?}");
    let r = as_user(&server, ADMIN_TOKEN, &["whoami", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).unwrap(),
        json!({"subject": "admin"})
    );

    let r = as_user(&server, ADMIN_TOKEN, &["tags"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[..3], ["Listing tags as admin...", "OK", ""]);
    assert!(lines[3].starts_with("Id ") && lines[3].contains("Tag") && lines[3].ends_with("Type"));
    assert_eq!(lines.len(), 4 + 3, "{r:?}");
    assert!(lines[4..].iter().all(|l| l.ends_with(" app")), "{r:?}");
    let r = as_user(&server, ADMIN_TOKEN, &["tags", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).unwrap()["tags"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let r = as_user(&server, ADMIN_TOKEN, &["cleanup"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.starts_with(
            "Cleaning up stale policies as admin...\nOK\n\nRemoved 2 stale policies\n"
        ),
        "{r:?}"
    );
    assert!(r.stdout.contains("gone"), "{r:?}");
    assert_eq!(policies(&server), vec!["live-1->live-2 tcp 8080-8080"]);
    let r = as_user(&server, WRITE_TOKEN, &["cleanup"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("cleaning up policies: not authorized (403"),
        "{r:?}"
    );
}

/// Org o1 (spaces dev, prod) and org o2 (space ext); frontend and backend in dev, db in prod,
/// api in o2/ext; the CC knows the policy server's admin token as a user token.
fn world() -> FakeCf {
    let cf = FakeCf::start();
    cf.add_user(ADMIN_TOKEN, "admin-id", "admin", &["network.admin"]);
    cf.add_org("o1", "org-one");
    cf.add_org("o2", "org-two");
    cf.add_space("s-dev", "dev", "o1", &[]);
    cf.add_space("s-prod", "prod", "o1", &[]);
    cf.add_space("s-ext", "ext", "o2", &[]);
    cf.add_app("guid-frontend", "frontend", "s-dev");
    cf.add_app("guid-backend", "backend", "s-dev");
    cf.add_app("guid-db", "db", "s-prod");
    cf.add_app("guid-api", "api", "s-ext");
    cf
}

fn write_cf_config(home: &Path, config: Value) {
    std::fs::create_dir_all(home.join(".cf")).unwrap();
    std::fs::write(home.join(".cf/config.json"), config.to_string()).unwrap();
}

#[test]
fn app_names_resolve_through_the_cloud_controller() {
    let cf = world();
    let server = PolicyServer::start();
    let env = [
        ("NETMAN_API", server.external.as_str()),
        ("NETMAN_TOKEN", ADMIN_TOKEN),
        ("NETMAN_CC_API", cf.url.as_str()),
        ("NETMAN_ORG", "org-one"),
        ("NETMAN_SPACE", "dev"),
    ];
    let r = netman(
        &["allow-access", "frontend", "backend", "--port", "9090"],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        "Allowing traffic from frontend to backend as admin...\nOK\n"
    );
    let r = netman(&["allow-access", "frontend", "db", "-s", "prod"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    let r = netman(
        &[
            "allow-access",
            "frontend",
            "api",
            "-s",
            "ext",
            "-o",
            "org-two",
            "--protocol",
            "udp",
            "--port",
            "53",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        policies(&server),
        vec![
            "guid-frontend->guid-api udp 53-53",
            "guid-frontend->guid-backend tcp 9090-9090",
            "guid-frontend->guid-db tcp 8080-8080",
        ]
    );
    // The name lookups the cf CLI makes: v3 orgs, spaces, apps by name.
    let app_lookups = cf.requests_to("/v3/apps");
    assert!(app_lookups
        .iter()
        .any(|r| r.params("names") == ["db"] && r.params("space_guids") == ["s-prod"]));
    assert!(cf
        .requests_to("/v3/organizations")
        .iter()
        .any(|r| r.params("names") == ["org-two"]));

    // A policy from another space is not listed in dev; destinations elsewhere show their space.
    server.post(
        V1,
        Some(ADMIN_TOKEN),
        &v1_body(&[("guid-db", "guid-backend", "tcp", 80, 80)]),
    );
    let r = netman(&["list-access"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[3],
        "Source     Destination   Protocol   Port   Destination space   Destination org"
    );
    let mut rows = lines[4..].to_vec();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            "frontend   api           udp        53     ext                 org-two",
            "frontend   backend       tcp        9090",
            "frontend   db            tcp        8080   prod                org-one",
        ]
    );
    let r = netman(&["list-access", "--app", "backend"], &env);
    assert_eq!(r.stdout.lines().count(), 5, "{r:?}"); // frontend->backend only (db is not in dev)

    // Removal by name; names that do not resolve.
    let r = netman(
        &[
            "remove-access",
            "frontend",
            "backend",
            "--protocol",
            "tcp",
            "--port",
            "9090",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(policies(&server).len(), 3);
    for (args, want) in [
        (
            vec!["allow-access", "nope", "backend"],
            "resolving source app: nope not found",
        ),
        (
            vec!["allow-access", "frontend", "nope"],
            "resolving destination app: nope not found",
        ),
        (
            vec!["allow-access", "frontend", "db"],
            "resolving destination app: db not found",
        ),
        (
            vec!["allow-access", "frontend", "db", "-s", "nowhere"],
            "Space 'nowhere' not found.",
        ),
        (
            vec![
                "allow-access",
                "frontend",
                "api",
                "-s",
                "ext",
                "-o",
                "nobody",
            ],
            "Organization 'nobody' not found.",
        ),
    ] {
        let r = netman(&args, &env);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.contains(want), "{args:?}: {r:?}");
    }
    assert_eq!(policies(&server).len(), 3);
    // --app-guids bypasses the CC.
    let r = netman(&["allow-access", "--app-guids", "x-guid", "y-guid"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(policies(&server).contains(&"x-guid->y-guid tcp 8080-8080".to_string()));
    // No space targeted: say how to target one.
    let r = netman(
        &["allow-access", "frontend", "backend"],
        &[
            ("NETMAN_API", server.external.as_str()),
            ("NETMAN_TOKEN", ADMIN_TOKEN),
            ("NETMAN_CC_API", cf.url.as_str()),
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("No space targeted") && r.stderr.contains("cf target"),
        "{r:?}"
    );
    // A CC that fails.
    cf.set_failing(true);
    let r = netman(&["allow-access", "frontend", "backend"], &env);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("the Cloud Controller answered 500"),
        "{r:?}"
    );
}

#[test]
fn reads_the_cf_cli_config() {
    let cf = world();
    let server = PolicyServer::start_with(|c, _| {
        c["enable_tls"] = json!(true);
        c["external_cert_file"] = c["server_cert_file"].clone();
        c["external_key_file"] = c["server_key_file"].clone();
    });
    assert!(server.external.starts_with("https://"));
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap();
    let config = json!({
        "ConfigVersion": 3,
        "Target": server.external,
        "APIVersion": "2.150.0",
        "AuthorizationEndpoint": "https://login.example.com",
        "DopplerEndPoint": "wss://doppler.example.com:443",
        "UaaEndpoint": "https://uaa.example.com",
        "AccessToken": format!("bearer {ADMIN_TOKEN}"),
        "RefreshToken": "refresh",
        "UAAOAuthClient": "cf",
        "UAAOAuthClientSecret": "",
        "SSLDisabled": true,
        "OrganizationFields": {"GUID": "o1", "Name": "org-one", "QuotaDefinition": {}},
        "SpaceFields": {"GUID": "s-dev", "Name": "dev", "AllowSSH": true},
        "Trace": "",
        "ColorEnabled": "",
        "Locale": "",
        "PluginRepos": []
    });
    write_cf_config(home.path(), config.clone());
    // Target, token and SSLDisabled from the cf config; the CC for names given explicitly.
    let r = netman(
        &["allow-access", "frontend", "backend"],
        &[("HOME", home_s), ("NETMAN_CC_API", cf.url.as_str())],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        policies(&server),
        vec!["guid-frontend->guid-backend tcp 8080-8080"]
    );
    // The targeted space GUID is used as is: no space or org lookups.
    assert!(cf.requests_to("/v3/spaces").is_empty());
    assert!(cf.requests_to("/v3/organizations").is_empty());

    // Without SSLDisabled the server's certificate is checked: it fails, and says what to do.
    let mut strict = config.clone();
    strict["SSLDisabled"] = json!(false);
    write_cf_config(home.path(), strict);
    let r = netman(&["list-access", "--app-guids"], &[("HOME", home_s)]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("--skip-ssl-validation"), "{r:?}");
    let r = netman(
        &["list-access", "--skip-ssl-validation", "--app-guids"],
        &[("HOME", home_s)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let ca = server.certs.ca.to_str().unwrap();
    let r = netman(
        &["list-access", "--app-guids", "--ca-cert", ca],
        &[("HOME", home_s)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("guid-frontend   guid-backend"), "{r:?}");
    let r = netman(
        &["list-access", "--app-guids"],
        &[("HOME", home_s), ("NETMAN_SKIP_SSL_VALIDATION", "true")],
    );
    assert_eq!(r.code, 0, "{r:?}");

    // CF_HOME wins over HOME; flags and NETMAN_* win over the cf config.
    let other = tempfile::tempdir().unwrap();
    let mut bad_token = config.clone();
    bad_token["AccessToken"] = json!("bearer revoked");
    write_cf_config(other.path(), bad_token);
    let cf_home = other.path().to_str().unwrap();
    let r = netman(
        &["list-access", "--app-guids"],
        &[("HOME", home_s), ("CF_HOME", cf_home)],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");
    let r = netman(
        &["list-access", "--app-guids"],
        &[
            ("HOME", home_s),
            ("CF_HOME", cf_home),
            ("NETMAN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = netman(
        &["list-access", "--app-guids", "--token", ADMIN_TOKEN],
        &[("HOME", home_s), ("CF_HOME", cf_home)],
    );
    assert_eq!(r.code, 0, "{r:?}");

    // A broken cf config is reported with its path.
    std::fs::write(home.path().join(".cf/config.json"), "{not json").unwrap();
    let r = netman(&["list-access"], &[("HOME", home_s)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(".cf/config.json") && r.stderr.contains("cf login"),
        "{r:?}"
    );
}

#[test]
fn help_reads_like_the_cf_cli() {
    let r = netman(&["--help"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    for section in [
        "NAME:\n   netman - ",
        "USAGE:\n",
        "COMMANDS:\n",
        "GLOBAL OPTIONS:\n",
        "ENVIRONMENT:\n",
    ] {
        assert!(r.stdout.contains(section), "{section}: {r:?}");
    }
    for command in [
        "allow-access, add-network-policy",
        "list-access, network-policies",
        "remove-access, remove-network-policy",
        "tags",
        "whoami",
        "cleanup",
    ] {
        assert!(r.stdout.contains(command), "{command}: {r:?}");
    }
    assert_eq!(netman(&[], &[]).stdout, r.stdout);
    assert_eq!(netman(&["help"], &[]).stdout, r.stdout);

    for (args, name) in [
        (vec!["allow-access", "--help"], "allow-access"),
        (vec!["add-network-policy", "-h"], "allow-access"),
        (vec!["help", "network-policies"], "list-access"),
        (vec!["remove-access", "--help"], "remove-access"),
        (vec!["help", "tags"], "tags"),
        (vec!["cleanup", "-h"], "cleanup"),
    ] {
        let r = netman(&args, &[]);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        assert!(
            r.stdout.starts_with(&format!("NAME:\n   {name} - ")),
            "{args:?}: {r:?}"
        );
        assert!(
            r.stdout.contains(&format!("USAGE:\n   netman {name}")),
            "{args:?}: {r:?}"
        );
    }
    let r = netman(&["allow-access", "--help"], &[]);
    for part in [
        "EXAMPLES:\n",
        "ALIAS:\n   add-network-policy\n",
        "OPTIONS:\n",
        "(Default: 8080)",
        "(Default: tcp)",
        "SEE ALSO:\n",
    ] {
        assert!(r.stdout.contains(part), "{part}: {r:?}");
    }
    let r = netman(&["help", "nothing"], &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("'nothing' is not a registered command"),
        "{r:?}"
    );
    let r = netman(&["--version"], &[]);
    assert!(r.stdout.starts_with("netman "), "{r:?}");
}

/// An unsigned JWT-shaped token (the CLI only reads its claims).
fn jwt_shaped(claims: Value) -> String {
    use base64::Engine;
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2ln", enc(&json!({"alg": "RS256"})), enc(&claims))
}

#[test]
fn an_expired_cf_token_is_renewed_with_the_refresh_token() {
    let cf = FakeCf::start();
    cf.add_refresh_token("refresh-1", ADMIN_TOKEN);
    let server = PolicyServer::start();
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap();
    let expired = jwt_shaped(json!({"user_name": "old-admin", "exp": 1_000_000}));
    let config = |refresh: &str| {
        json!({
            "Target": server.external,
            "AccessToken": format!("bearer {expired}"),
            "RefreshToken": refresh,
            "UaaEndpoint": cf.url,
            "UAAOAuthClient": "cf",
            "UAAOAuthClientSecret": "",
            "SSLDisabled": false,
        })
    };
    write_cf_config(home.path(), config("refresh-1"));
    let r = netman(&["list-access", "--app-guids"], &[("HOME", home_s)]);
    assert_eq!(r.code, 0, "{r:?}");
    // The renewed (opaque) token is the one used: the user comes from whoami.
    assert!(
        r.stdout.starts_with("Listing policies as admin..."),
        "{r:?}"
    );
    let renewals = cf.requests_to("/oauth/token");
    assert_eq!(renewals.len(), 1);
    assert_eq!(
        renewals[0].body,
        "grant_type=refresh_token&refresh_token=refresh-1"
    );

    // A refresh token UAA no longer accepts: log in again.
    write_cf_config(home.path(), config("refresh-revoked"));
    let r = netman(&["list-access", "--app-guids"], &[("HOME", home_s)]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("Your cf login has expired and could not be renewed")
            && r.stderr.contains("answered 401")
            && r.stderr.contains("cf login"),
        "{r:?}"
    );
    // A token given explicitly is used as it is.
    let r = netman(
        &["list-access", "--app-guids", "--token", &expired],
        &[("HOME", home_s)],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");
    assert_eq!(cf.requests_to("/oauth/token").len(), 2);
}
