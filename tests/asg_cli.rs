//! The security-group verbs of the `netman` CLI against the real policy server, with the cf
//! CLI's names and output: by GUID without a Cloud Controller, and by org and space names through
//! a fake one; `--json` for scripts; a bad rules file refused before anything is sent.

mod support;
use support::cli::{netman, ok};
use support::fake_cf::FakeCf;
use support::policy_server::{PolicyServer, ADMIN_TOKEN, WRITE_TOKEN};

use serde_json::{json, Value};

/// The cells' view of one space: (guid, running_default, staging_default, running, staging).
fn cells(server: &PolicyServer, space: &str) -> Vec<Value> {
    let (_, body) = server.internal_get(&format!(
        "/networking/v1/internal/security_groups?space_guids={space}"
    ));
    serde_json::from_str::<Value>(&body).unwrap()["security_groups"]
        .as_array()
        .unwrap()
        .clone()
}

fn rules_file(dir: &std::path::Path, rules: Value) -> String {
    let path = dir.join(format!("{}.json", support::unique("rules-")));
    std::fs::write(&path, rules.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn security_groups_by_guid_without_a_cloud_controller() {
    let server = PolicyServer::start();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("NETMAN_API", server.external.as_str()),
        ("NETMAN_TOKEN", ADMIN_TOKEN),
    ];
    let run = |args: &[&str]| netman(args, &env);

    let web = rules_file(
        dir.path(),
        json!([{"protocol":"tcp","destination":"10.0.0.0/24","ports":"80, 443"}]),
    );
    let r = ok(run(&["create-security-group", "web", &web]));
    assert_eq!(r.stdout, "Creating security group web as admin...\nOK\n");
    let r = ok(run(&["create-security-group", "web", &web]));
    assert_eq!(
        r.stdout,
        "Creating security group web as admin...\nSecurity group web already exists\nOK\n"
    );

    // A bad rules file is refused naming the rule and field, and nothing is created.
    let bad = rules_file(
        dir.path(),
        json!([{"protocol":"tcp","destination":"10.0.0.1","ports":"80"},{"protocol":"udp","destination":"10.0.0.1"}]),
    );
    let r = run(&["create-security-group", "broken", &bad]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("rules[1].ports"), "{r:?}");
    let r = run(&["create-security-group", "broken", "/nonexistent.json"]);
    assert_eq!(r.code, 1);

    let r = ok(run(&["security-groups"]));
    assert_eq!(
        r.stdout,
        "Getting security groups as admin...\nOK\n\nname   organization   space   lifecycle\nweb\n"
    );

    let r = ok(run(&[
        "bind-security-group",
        "web",
        "my-org",
        "--space",
        "space-guid-1",
    ]));
    assert!(r.stdout.starts_with("Assigning running security group web to space space-guid-1 in org my-org as admin...\nOK\n\nTIP: If Dynamic ASG's are enabled"), "{r:?}");
    ok(run(&[
        "bind-security-group",
        "web",
        "my-org",
        "--space",
        "space-guid-2",
        "--lifecycle",
        "staging",
    ]));
    let seen = cells(&server, "space-guid-1");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["running_space_guids"], json!(["space-guid-1"]));
    assert_eq!(
        cells(&server, "space-guid-2")[0]["staging_space_guids"],
        json!(["space-guid-2"])
    );
    let r = ok(run(&["bind-running-security-group", "web"]));
    assert!(
        r.stdout
            .starts_with("Binding security group web to running as admin...\nOK\n"),
        "{r:?}"
    );
    assert_eq!(cells(&server, "elsewhere")[0]["running_default"], true);

    let r = ok(run(&["security-groups"]));
    assert_eq!(
        r.stdout,
        "Getting security groups as admin...\nOK\n\n\
         name   organization   space          lifecycle\n\
         web    <all>          <all>          running\n\
         web                   space-guid-1   running\n\
         web                   space-guid-2   staging\n"
    );
    let r = ok(run(&["security-group", "web"]));
    assert!(
        r.stdout.starts_with(
            "Getting info for security group web as admin...\nOK\n\nname:    web\nrules:\n["
        ),
        "{r:?}"
    );
    assert!(r.stdout.contains("\"ports\": \"80, 443\""), "{r:?}");
    assert!(r.stdout.ends_with("organization   space          lifecycle\n<all>          <all>          running\n               space-guid-1   running\n               space-guid-2   staging\n"), "{r:?}");

    // --json for scripts.
    let r = ok(run(&["security-groups", "--json"]));
    let list: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["globally_enabled"]["running"], true);
    let r = ok(run(&["security-group", "web", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&r.stdout).unwrap()["relationships"]["staging_spaces"]
            ["data"][0]["guid"],
        "space-guid-2"
    );

    let dns = rules_file(
        dir.path(),
        json!([{"protocol":"udp","destination":"8.8.8.8","ports":"53"}]),
    );
    let r = ok(run(&["update-security-group", "web", &dns]));
    assert!(
        r.stdout
            .starts_with("Updating security group web as admin...\nOK\n"),
        "{r:?}"
    );
    let stored: Value =
        serde_json::from_str(cells(&server, "x")[0]["rules"].as_str().unwrap()).unwrap();
    assert_eq!(stored[0]["protocol"], "udp");

    let r = ok(run(&[
        "unbind-security-group",
        "web",
        "my-org",
        "space-guid-1",
    ]));
    assert!(r.stdout.starts_with("Removing running security group web from org my-org space space-guid-1 as admin...\nOK\n"), "{r:?}");
    let r = ok(run(&[
        "unbind-security-group",
        "web",
        "my-org",
        "space-guid-1",
    ]));
    assert!(
        r.stdout.contains(
            "Security group web not bound to space space-guid-1 for lifecycle phase 'running'.\nOK"
        ),
        "{r:?}"
    );
    let r = ok(run(&["unbind-running-security-group", "web"]));
    assert!(
        r.stdout.starts_with(
            "Unbinding security group web from defaults for running as admin...\nOK\n"
        ),
        "{r:?}"
    );
    assert!(cells(&server, "space-guid-1").is_empty());
    ok(run(&["bind-staging-security-group", "web"]));
    ok(run(&["unbind-staging-security-group", "web"]));

    // Without a Cloud Controller a binding names its space by GUID.
    let r = run(&["bind-security-group", "web", "my-org"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("--space SPACE_GUID"), "{r:?}");
    let r = run(&[
        "bind-security-group",
        "web",
        "my-org",
        "--space",
        "s",
        "--lifecycle",
        "sometimes",
    ]);
    assert_ne!(r.code, 0);

    let r = ok(run(&["delete-security-group", "web", "-f"]));
    assert_eq!(r.stdout, "Deleting security group web as admin...\nOK\n");
    let r = ok(run(&["delete-security-group", "web", "-f"]));
    assert_eq!(
        r.stdout,
        "Deleting security group web as admin...\nSecurity group 'web' does not exist.\nOK\n"
    );
    let r = run(&["security-group", "web"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Security group 'web' not found."),
        "{r:?}"
    );

    // Not an admin: refused with a tip.
    let r = netman(
        &["security-groups"],
        &[
            ("NETMAN_API", server.external.as_str()),
            ("NETMAN_TOKEN", WRITE_TOKEN),
        ],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("network.admin"), "{r:?}");
}

#[test]
fn org_and_space_names_resolve_through_the_cloud_controller() {
    let cf = FakeCf::start();
    cf.add_user(ADMIN_TOKEN, "admin-id", "admin", &["network.admin"]);
    cf.add_org("org-guid-1", "org-one");
    cf.add_space("space-guid-dev", "dev", "org-guid-1", &[]);
    cf.add_space("space-guid-prod", "prod", "org-guid-1", &[]);
    cf.add_org("org-guid-2", "org-two");
    cf.add_space("space-guid-other", "dev", "org-guid-2", &[]);
    let server = PolicyServer::start();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("NETMAN_API", server.external.as_str()),
        ("NETMAN_TOKEN", ADMIN_TOKEN),
        ("NETMAN_CC_API", cf.url.as_str()),
    ];
    let run = |args: &[&str]| netman(args, &env);
    let rules = rules_file(
        dir.path(),
        json!([{"protocol":"icmp","destination":"10.0.0.1-10.0.0.9","type":-1,"code":-1}]),
    );
    ok(run(&["create-security-group", "ping", &rules]));
    ok(run(&[
        "bind-security-group",
        "ping",
        "org-one",
        "--space",
        "dev",
    ]));
    assert_eq!(cells(&server, "space-guid-dev").len(), 1);
    assert!(
        cells(&server, "space-guid-other").is_empty(),
        "dev of the other org is another space"
    );
    // Without --space: every space of the org, for staging.
    ok(run(&[
        "bind-security-group",
        "ping",
        "org-one",
        "--lifecycle",
        "staging",
    ]));
    let g = &cells(&server, "space-guid-prod")[0];
    let mut staging: Vec<&str> = g["staging_space_guids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    staging.sort();
    assert_eq!(staging, ["space-guid-dev", "space-guid-prod"]);

    let r = ok(run(&["security-groups"]));
    assert_eq!(
        r.stdout,
        "Getting security groups as admin...\nOK\n\n\
         name   organization   space   lifecycle\n\
         ping   org-one        dev     running\n\
         ping   org-one        dev     staging\n\
         ping   org-one        prod    staging\n"
    );
    ok(run(&["unbind-security-group", "ping", "org-one", "dev"]));
    assert!(cells(&server, "space-guid-dev")[0]["running_space_guids"]
        .as_array()
        .unwrap()
        .is_empty());
    let r = run(&[
        "bind-security-group",
        "ping",
        "no-such-org",
        "--space",
        "dev",
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Organization 'no-such-org' not found."),
        "{r:?}"
    );
}
