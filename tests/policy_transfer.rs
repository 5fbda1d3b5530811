//! Moving a policy store between databases (issue 19): `policy-server export` and `import`, run
//! as the real binary against real SQLite files and real PostgreSQL and MariaDB databases.
#![cfg(all(feature = "postgres", feature = "mysql"))]

mod support;
use netman::api::policy::Policy;
use netman::api::sd::InternalRoute;
use policy_server::PolicyServer;
use serde_json::{json, Value};
use support::{cf_networking, db, policy_server};

fn configured(db: &db::TestDb) -> PolicyServer {
    let database = db.config_json();
    PolicyServer::configure(|c, _| c["database"] = database)
}

/// The internal API's listing as the server sends it (bytes) and `policies_last_updated`.
fn served(ps: &mut PolicyServer) -> (String, i64) {
    ps.spawn();
    let (status, body) = ps.internal_get("/networking/v1/internal/policies");
    assert_eq!(status, 200, "{body}");
    let (status, version) = ps.internal_get("/networking/v1/internal/policies_last_updated");
    assert_eq!(status, 200, "{version}");
    ps.kill();
    (body, version.trim().parse().unwrap())
}

fn tags(db: &db::TestDb) -> Vec<netman::api::policy::Tag> {
    netman::policy::store::open_uncached(&db.config, 2)
        .unwrap()
        .tags()
        .unwrap()
}

/// A store used the way a foundation uses it: policies created in several requests, some
/// deleted (their tags go back to the pool and are handed out again), the ingress router's tag.
fn fill(db: &db::TestDb) {
    let store = netman::policy::store::open_uncached(&db.config, 2).unwrap();
    let policies = cf_networking::sample_policies(300, 70);
    for chunk in policies.chunks(40) {
        store.create(chunk).unwrap();
    }
    store.delete(&policies[50..120]).unwrap();
    store.create_tag("INGRESS_ROUTER", "router").unwrap();
    store.create(&policies[60..70]).unwrap();
    store
        .create(&[Policy::new("late-a", "late-b", "udp", 1, 65535)])
        .unwrap();
    let sd = netman::policy::sd::SdStore::open(&db.config).unwrap();
    sd.add_domains(&["svc.internal".into()]).unwrap();
    sd.map(&[
        InternalRoute::new("late-b", "backend", "apps.internal"),
        InternalRoute::new("late-a", "backend", "apps.internal"),
        InternalRoute::new("late-b", "api", "svc.internal"),
    ])
    .unwrap();
    sd.remove_domains(&["apps.internal".into()]).unwrap_err(); // in use: stays
}

/// Service discovery's domains and routes as stored.
fn internal_routes(db: &db::TestDb) -> (Vec<String>, Vec<InternalRoute>) {
    let sd = netman::policy::sd::SdStore::open(&db.config).unwrap();
    (sd.domains().unwrap(), sd.routes().unwrap())
}

#[test]
fn round_trip_sqlite_postgres_mysql_sqlite_ends_byte_identical_in_the_internal_listing() {
    let dbs = [db::sqlite(), db::postgres(), db::mariadb(), db::sqlite()];
    fill(&dbs[0]);
    let mut servers: Vec<PolicyServer> = dbs.iter().map(configured).collect();
    let (first, mut version) = served(&mut servers[0]);
    let first_tags = tags(&dbs[0]);
    assert!(first.contains("late-a") && first_tags.iter().any(|t| t.kind == "router"));
    let first_routes = internal_routes(&dbs[0]);
    assert_eq!(first_routes.0, ["apps.internal", "svc.internal"]);
    assert_eq!(first_routes.1.len(), 3);
    for hop in 0..3 {
        let (from, to) = (&servers[hop], &servers[hop + 1]);
        // Export to a file then import it by name, or export to standard output then import
        // from standard input.
        let (ok, out, err) = if hop == 1 {
            let (ok, doc, err) = from.command(&["export"]);
            assert!(ok, "hop {hop} export: {err}");
            to.command_with_input(&["import"], Some(doc.as_bytes()))
        } else {
            let file = from.dir.path().join("export.json");
            let (ok, _, err) = from.command(&["export", "--output", file.to_str().unwrap()]);
            assert!(ok, "hop {hop} export: {err}");
            to.command(&["import", file.to_str().unwrap()])
        };
        assert!(ok, "hop {hop} import: {err}");
        assert!(out.contains("imported"), "{out}");
        let (listing, v) = served(&mut servers[hop + 1]);
        assert_eq!(
            listing, first,
            "hop {hop}: the internal listing, byte for byte"
        );
        assert_eq!(
            tags(&dbs[hop + 1]),
            first_tags,
            "hop {hop}: every tag and type"
        );
        assert!(v > version, "hop {hop}: last_updated {v} <= {version}");
        assert_eq!(
            internal_routes(&dbs[hop + 1]),
            first_routes,
            "hop {hop}: internal domains and routes"
        );
        version = v;
    }
}

/// Documents import must refuse whole, given as text.
fn bad_documents(good: &str) -> Vec<(&'static str, String, &'static str)> {
    let doc: Value = serde_json::from_str(good).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        f(&mut d);
        d.to_string()
    };
    vec![
        (
            "cut in half",
            good[..good.len() / 2].to_string(),
            "cut short",
        ),
        ("empty", String::new(), "not an export document"),
        (
            "a tag given twice",
            edit(&|d| d["tags"][1]["tag"] = d["tags"][0]["tag"].clone()),
            "is given to two ids",
        ),
        (
            "a policy to an app without a tag",
            edit(&|d| {
                let last = d["policies"].as_array().unwrap().len() - 1;
                d["policies"][last]["destination"]["id"] = json!("nobody");
            }),
            "has no entry in tags",
        ),
        (
            "a section this binary does not know",
            edit(&|d| d["network_policies_v2"] = json!([])),
            "network_policies_v2",
        ),
        (
            "a route under a domain the document does not have",
            edit(&|d| d["internal_routes"][0]["domain"] = json!("nowhere.internal")),
            "internal_routes[0].domain",
        ),
        (
            "another tag length",
            edit(&|d| d["tag_length"] = json!(1)),
            "tag_length",
        ),
        (
            "a bad port",
            edit(&|d| d["policies"][0]["destination"]["ports"]["start"] = json!(0)),
            "policies[0]",
        ),
    ]
}

#[test]
fn import_refuses_corrupt_or_partial_documents_and_writes_nothing() {
    let source = db::sqlite();
    fill(&source);
    let (ok, good, err) = configured(&source).command(&["export"]);
    assert!(ok, "{err}");
    let bad = bad_documents(&good);
    for target in [db::sqlite(), db::postgres(), db::mariadb()] {
        let kind = target.kind();
        let ps = configured(&target);
        let empty = match kind {
            netman::db::DatabaseType::Sqlite => String::new(),
            _ => cf_networking::dump(&mut target.raw()),
        };
        let untouched = |what: &str| match kind {
            // Not even the file was created.
            netman::db::DatabaseType::Sqlite => assert!(
                !std::path::Path::new(&target.config.connection_string).exists(),
                "{kind:?} {what}"
            ),
            _ => assert_eq!(cf_networking::dump(&mut target.raw()), empty, "{what}"),
        };
        for (what, text, expected) in &bad {
            for args in [&["import"][..], &["import", "--replace"][..]] {
                let (ok, _, err) = ps.command_with_input(args, Some(text.as_bytes()));
                assert!(!ok, "{kind:?} {what}: accepted");
                assert!(
                    err.contains(expected) && err.to_lowercase().contains("nothing was written"),
                    "{kind:?} {what}: {err}"
                );
                untouched(what);
            }
        }
        // --dry-run validates a good document and touches no database either.
        let (ok, out, err) = ps.command_with_input(&["import", "--dry-run"], Some(good.as_bytes()));
        assert!(
            ok && out.contains("nothing was written"),
            "{kind:?}: {out} {err}"
        );
        untouched("--dry-run");

        // A database with data: refused without --replace, and bad documents change nothing
        // with it either.
        let (ok, _, err) = ps.command_with_input(&["import"], Some(good.as_bytes()));
        assert!(ok, "{kind:?}: {err}");
        let loaded = cf_networking::dump(&mut target.raw());
        let (ok, _, err) = ps.command_with_input(&["import"], Some(good.as_bytes()));
        assert!(!ok && err.contains("not empty"), "{kind:?}: {err}");
        for (what, text, _) in &bad {
            let (ok, _, _) = ps.command_with_input(&["import", "--replace"], Some(text.as_bytes()));
            assert!(!ok, "{kind:?} {what}");
        }
        assert_eq!(cf_networking::dump(&mut target.raw()), loaded, "{kind:?}");

        // --replace with a good document: the data is the document's again.
        let (ok, _, err) = ps.command_with_input(&["import", "--replace"], Some(good.as_bytes()));
        assert!(ok, "{kind:?}: {err}");
        let (ok, again, err) = ps.command(&["export"]);
        assert!(ok, "{err}");
        let strip = |text: &str| {
            let mut d: Value = serde_json::from_str(text).unwrap();
            for k in ["exported_at", "exported_from", "last_updated"] {
                d.as_object_mut().unwrap().remove(k);
            }
            d
        };
        assert_eq!(strip(&again), strip(&good), "{kind:?}");
    }
}

/// A database whose only data is internal routes (or a domain of its own) is not empty; `--replace`
/// with a document from before service discovery says what it removes; every import moves the
/// resolvers' table version past the old one.
#[test]
fn internal_routes_count_as_data_and_a_replace_without_them_says_what_it_removes() {
    let source = db::sqlite();
    fill(&source);
    let (ok, good, err) = configured(&source).command(&["export"]);
    assert!(ok, "{err}");
    let mut old: Value = serde_json::from_str(&good).unwrap();
    for k in ["internal_domains", "internal_routes"] {
        old.as_object_mut().unwrap().remove(k);
    }
    let old = old.to_string();

    let target = db::sqlite();
    let sd = netman::policy::sd::SdStore::open(&target.config).unwrap();
    sd.add_domains(&["mine.internal".into()]).unwrap();
    let ps = configured(&target);
    let (ok, _, err) = ps.command_with_input(&["import"], Some(good.as_bytes()));
    assert!(
        !ok && err.contains("not empty") && err.contains("1 internal domains"),
        "{err}"
    );
    sd.map(&[InternalRoute::new("app-x", "x", "mine.internal")])
        .unwrap();
    let (ok, _, err) = ps.command_with_input(&["import"], Some(good.as_bytes()));
    assert!(!ok && err.contains("1 internal routes"), "{err}");
    assert_eq!(
        sd.routes().unwrap().len(),
        1,
        "a refused import changes nothing"
    );

    let before = sd.version().unwrap();
    let (ok, out, err) = ps.command_with_input(&["import", "--replace"], Some(old.as_bytes()));
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "the 1 the database held were removed and the internal domains reset to apps.internal"
        ),
        "{out}"
    );
    assert_eq!(
        internal_routes(&target),
        (vec!["apps.internal".to_string()], vec![])
    );
    let reset = sd.version().unwrap();
    assert!(reset > before, "{reset} <= {before}");

    let (ok, out, err) = ps.command_with_input(&["import", "--replace"], Some(good.as_bytes()));
    assert!(ok, "{err}");
    assert!(out.contains("3 internal routes"), "{out}");
    assert_eq!(internal_routes(&target), internal_routes(&source));
    // Past the source's version too: a resolver that followed the source fetches this table.
    let source_version = netman::policy::sd::SdStore::open(&source.config)
        .unwrap()
        .version()
        .unwrap();
    let now = sd.version().unwrap();
    assert!(
        now > reset && now > source_version,
        "{now} {reset} {source_version}"
    );
}

#[test]
fn security_groups_and_tag_types_of_an_adopted_foundation_travel_to_every_backend() {
    let pg = db::postgres();
    let mut o = cf_networking::build(&pg, cf_networking::Shape::Head, 2);
    o.create(&cf_networking::sample_policies(60, 20));
    o.create_tag("INGRESS_ROUTER", "router");
    for n in 0..3 {
        o.add_security_group(&cf_networking::SecurityGroupRow {
            guid: format!("sg-{n}"),
            name: format!("group {n}"),
            rules: format!(r#"[{{"protocol":"tcp","destination":"10.0.{n}.0/24","ports":"443"}}]"#),
            staging_default: n == 0,
            running_default: n == 1,
            staging_spaces: vec![format!("space-{n}")],
            running_spaces: vec![format!("space-{n}"), "space-x".into()],
        });
    }
    let source = configured(&pg);
    let (ok, _, err) = source.command(&["migrate"]);
    assert!(ok, "{err}");
    let (ok, doc, err) = source.command(&["export"]);
    assert!(ok, "{err}");
    let exported: Value = serde_json::from_str(&doc).unwrap();
    let groups = exported["security_groups"].clone();
    assert_eq!(groups.as_array().unwrap().len(), 3, "{groups}");
    assert_eq!(
        groups[1]["running_space_guids"],
        json!(["space-1", "space-x"])
    );
    assert_eq!(groups[0]["staging_default"], json!(true));
    for target in [db::mariadb(), db::sqlite()] {
        let ps = configured(&target);
        let (ok, out, err) = ps.command_with_input(&["import"], Some(doc.as_bytes()));
        assert!(ok, "{:?}: {err}", target.kind());
        assert!(out.contains("3 security groups"), "{out}");
        let (ok, again, err) = ps.command(&["export"]);
        assert!(ok, "{err}");
        let again: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(again["security_groups"], groups, "{:?}", target.kind());
        assert_eq!(again["tags"], exported["tags"], "{:?}", target.kind());
        assert_eq!(
            again["policies"],
            exported["policies"],
            "{:?}",
            target.kind()
        );
    }
}

#[test]
fn export_refuses_what_is_not_netmans_schema() {
    let pg = db::postgres();
    let mut o = cf_networking::build(&pg, cf_networking::Shape::Head, 2);
    o.create(&cf_networking::sample_policies(5, 4));
    let before = cf_networking::dump(&mut o.raw);
    let (ok, _, err) = configured(&pg).command(&["export"]);
    assert!(!ok && err.contains("policy-server migrate"), "{err}");
    assert_eq!(cf_networking::dump(&mut o.raw), before);
    let empty = db::sqlite();
    let ps = configured(&empty);
    let (ok, out, err) = ps.command(&["migrate", "--dry-run"]);
    assert!(ok && out.contains("nothing was changed"), "{out} {err}");
    let file = std::path::Path::new(&empty.config.connection_string);
    assert!(!file.exists(), "migrate --dry-run created the SQLite file");
    let (ok, _, err) = ps.command(&["export"]);
    assert!(!ok && err.contains("no policy tables"), "{err}");
}

/// The tag numbers of these apps in the store.
fn tag_numbers(db: &db::TestDb, apps: &[&str]) -> Vec<String> {
    let all = tags(db);
    apps.iter()
        .map(|a| {
            all.iter()
                .find(|t| t.id == *a)
                .map(|t| t.tag.clone())
                .unwrap_or_else(|| panic!("{a} has no tag in {all:?}"))
        })
        .collect()
}

/// `policy_server_quarantined_tags` as a running server reports it.
fn quarantined_gauge(ps: &mut PolicyServer) -> String {
    ps.spawn();
    let mut resp = ureq::get(format!("{}/metrics", ps.debug)).call().unwrap();
    let text = netman::http::client::body_string(&mut resp, 1 << 20).unwrap();
    ps.kill();
    text.lines()
        .find(|l| l.starts_with("policy_server_quarantined_tags "))
        .unwrap_or_else(|| panic!("no quarantine gauge in:\n{text}"))
        .to_string()
}

/// Issue 18 with 19: a tag released shortly before an export rests out its quarantine in the
/// database the document is imported into, instead of going to the next new app at once (a stale
/// cell may still mark the old app with it); and tags an `import --replace` takes away rest too.
fn released_tags_stay_quarantined_across_export_and_import(target: &db::TestDb) {
    let source = db::sqlite();
    let store = netman::policy::store::open_uncached(&source.config, 2).unwrap();
    let first = Policy::new("app-a", "app-b", "tcp", 8080, 8080);
    store.create(std::slice::from_ref(&first)).unwrap();
    store
        .create(&[Policy::new("app-c", "app-d", "tcp", 8080, 8080)])
        .unwrap();
    store.delete(&[first]).unwrap();
    assert_eq!(tag_numbers(&source, &["app-c", "app-d"]), ["0003", "0004"]);
    assert_eq!(store.quarantined_tags().unwrap(), 2);

    let (ok, doc, err) = configured(&source).command(&["export"]);
    assert!(ok, "{err}");
    let exported: Value = serde_json::from_str(&doc).unwrap();
    let released: Vec<&str> = exported["released_tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no released_tags in {doc}"))
        .iter()
        .map(|r| r["tag"].as_str().unwrap())
        .collect();
    assert_eq!(released, ["0001", "0002"], "{doc}");

    let mut ps = configured(target);
    let (ok, out, err) = ps.command_with_input(&["import"], Some(doc.as_bytes()));
    assert!(ok, "{err}");
    assert!(out.contains("2 release times"), "{out}");
    let imported = netman::policy::store::open_uncached(&target.config, 2).unwrap();
    assert_eq!(imported.quarantined_tags().unwrap(), 2);
    assert_eq!(
        quarantined_gauge(&mut ps),
        "policy_server_quarantined_tags 2"
    );
    // The next new apps get fresh tags, not the two released before the export.
    imported
        .create(&[Policy::new("app-e", "app-f", "tcp", 8080, 8080)])
        .unwrap();
    assert_eq!(tag_numbers(target, &["app-e", "app-f"]), ["0005", "0006"]);

    // Replacing the data releases the tags the document does not give back (0005, 0006) now.
    let (ok, _, err) = ps.command_with_input(&["import", "--replace"], Some(doc.as_bytes()));
    assert!(ok, "{err}");
    assert_eq!(imported.quarantined_tags().unwrap(), 4);
    imported
        .create(&[Policy::new("app-g", "app-h", "tcp", 8080, 8080)])
        .unwrap();
    assert_eq!(tag_numbers(target, &["app-g", "app-h"]), ["0007", "0008"]);

    // The same document into a database whose quarantine is over for those release times: with
    // `tag_quarantine_seconds` 0 the released tags are handed out again in release order.
    let lax = netman::policy::store::open_uncached(
        &target.config,
        netman::policy::store::TagPool::new(2, std::time::Duration::ZERO),
    )
    .unwrap();
    assert_eq!(lax.quarantined_tags().unwrap(), 0);
}

mod quarantine {
    use super::*;
    db::suite!(released_tags_stay_quarantined_across_export_and_import);
}
