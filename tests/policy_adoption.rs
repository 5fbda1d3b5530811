//! Adoption of the original's databases (issue 19): detection of what a database holds, on real
//! PostgreSQL and MariaDB databases built by `tests/common/cf_networking.rs`.
#![cfg(all(feature = "postgres", feature = "mysql"))]

#[path = "common/db.rs"]
mod db;

#[path = "common/cf_networking.rs"]
mod cf_networking;

use cf_networking::{build, sample_policies, SecurityGroupRow, Shape};
use netman::policy::adopt::{detect, Era, Found, Inspect};
use netman::policy::store::DatabaseType;

impl Inspect for db::RawSql {
    fn kind(&self) -> DatabaseType {
        db::RawSql::kind(self)
    }
    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        Ok(self.rows(sql))
    }
}

fn server(kind: DatabaseType) -> db::TestDb {
    match kind {
        DatabaseType::Postgres => db::postgres(),
        DatabaseType::Mysql => db::mariadb(),
        other => panic!("no server for {other:?}"),
    }
}

const SERVERS: [DatabaseType; 2] = [DatabaseType::Postgres, DatabaseType::Mysql];

fn security_group(n: usize) -> SecurityGroupRow {
    SecurityGroupRow {
        guid: format!("sg-{n}"),
        name: format!("group {n}"),
        rules: format!(r#"[{{"protocol":"tcp","destination":"10.0.{n}.0/24","ports":"443"}}]"#),
        staging_default: n == 0,
        running_default: n.is_multiple_of(2),
        staging_spaces: vec![],
        running_spaces: vec![format!("space-{n}")],
    }
}

#[test]
fn detects_head_with_and_without_security_groups_and_the_netman_era() {
    for kind in SERVERS {
        let db = server(kind);
        let mut o = build(&db, Shape::Head, 2);
        o.create(&sample_policies(40, 12));
        o.create_tag("INGRESS_ROUTER", "router");
        o.add_security_group(&security_group(0));
        o.add_security_group(&security_group(1));
        let seen = o.last_updated_nanos();
        let Found::Original(found) = detect(&mut o.raw).unwrap() else {
            panic!("{kind:?}: HEAD not recognised: {:?}", detect(&mut o.raw))
        };
        assert_eq!(found.era, Era::Head);
        assert!(found.security_groups);
        assert_eq!(found.security_group_rows, 2);
        assert_eq!(found.pool_size, 65535);
        assert_eq!(found.tags_in_use, 13);
        assert_eq!(found.other_type_tags, 1);
        assert_eq!(found.policies, 40);
        assert!(found.last_updated.unwrap() >= seen, "{kind:?}");

        let db = server(kind);
        let mut o = build(&db, Shape::HeadWithoutSecurityGroups, 1);
        let Found::Original(found) = detect(&mut o.raw).unwrap() else {
            panic!("{kind:?}: HEAD without security_groups not recognised")
        };
        assert!(!found.security_groups);
        assert_eq!(found.pool_size, 255);

        let db = server(kind);
        let mut o = build(&db, Shape::NetmanEra, 2);
        o.create(&[netman::api::policy::Policy::new("a", "b", "tcp", 80, 80)]);
        let Found::Original(found) = detect(&mut o.raw).unwrap() else {
            panic!("{kind:?}: netman-era not recognised")
        };
        assert_eq!(found.era, Era::NetmanEra);
        assert_eq!((found.tags_in_use, found.policies), (2, 1));
        assert_eq!(found.last_updated, None);
    }
}

fn unknown(raw: &mut db::RawSql) -> String {
    match detect(raw).unwrap() {
        Found::Unknown(reason) => reason,
        other => panic!("expected an unknown schema, got {other:?}"),
    }
}

#[test]
fn refuses_to_recognise_what_it_does_not_know() {
    for kind in SERVERS {
        // Leftovers of the removed dynamic-egress tables.
        let db = server(kind);
        let mut o = build(&db, Shape::Head, 2);
        o.raw
            .exec("CREATE TABLE terminals (guid varchar(36) PRIMARY KEY)");
        let reason = unknown(&mut o.raw);
        assert!(
            reason.contains("terminals") && reason.contains("egress"),
            "{reason}"
        );

        // A newer original: migration 80 and its table.
        let db = server(kind);
        let mut o = build(&db, Shape::Head, 2);
        o.raw
            .exec("CREATE TABLE security_groups_info (id int PRIMARY KEY, last_updated TIMESTAMP)");
        o.raw
            .exec("INSERT INTO gorp_migrations (id, applied_at) VALUES ('80', CURRENT_TIMESTAMP)");
        let reason = unknown(&mut o.raw);
        assert!(
            reason.contains("(80)") && reason.contains("newer"),
            "{reason}"
        );

        // The original's migrator holds its lock.
        let db = server(kind);
        let mut o = build(&db, Shape::Head, 2);
        let lock = if kind == DatabaseType::Mysql {
            "`lock`"
        } else {
            "\"lock\""
        };
        o.raw.exec(&format!(
            "INSERT INTO gorp_lock ({lock}, acquired_at) VALUES ('sql-migrate', CURRENT_TIMESTAMP)"
        ));
        assert!(unknown(&mut o.raw).contains("gorp_lock"));

        // A row netman could not carry over (the original allowed NULL here).
        let db = server(kind);
        let mut o = build(&db, Shape::Head, 2);
        o.create(&sample_policies(3, 3));
        o.raw
            .exec("UPDATE destinations SET protocol = NULL WHERE id = 1");
        let reason = unknown(&mut o.raw);
        assert!(reason.contains("1 destinations with a NULL"), "{reason}");

        // A column the original does not have.
        let db = server(kind);
        let mut o = build(&db, Shape::Head, 2);
        o.raw
            .exec("ALTER TABLE policies ADD COLUMN note varchar(10)");
        assert!(unknown(&mut o.raw).contains("note"));
    }
}

/// The final-state DDL `migrate --to-original` writes gives, on each server, the schema a fresh
/// install of the original leaves there (built migration by migration by the fixture).
#[test]
fn the_original_schema_netman_writes_is_the_one_a_fresh_install_leaves() {
    use netman::policy::adopt::original_schema::{create_statements, security_groups_statement};
    for kind in SERVERS {
        let fresh_db = server(kind);
        let mut fresh = build(&fresh_db, Shape::Head, 2);
        let written_db = server(kind);
        let mut written = written_db.raw();
        for s in create_statements(kind) {
            written.exec(s);
        }
        written.exec(security_groups_statement(kind));
        // Twice: every statement is re-runnable.
        for s in create_statements(kind) {
            written.exec(s);
        }
        assert_eq!(
            cf_networking::describe_schema(&mut written),
            cf_networking::describe_schema(&mut fresh.raw),
            "{kind:?}"
        );
    }
}

impl netman::policy::adopt::convert::Sql for db::RawSql {
    fn execute(&mut self, sql: &str) -> Result<(), String> {
        self.try_exec(sql)
    }
}

/// An original database filled the way the original fills it: policies created in several
/// requests, some deleted (their tags go back to the pool and are reused), the ingress router's
/// tag, security groups.
fn filled_original(db: &db::TestDb, shape: Shape) -> cf_networking::OriginalDb {
    let mut o = build(db, shape, 2);
    let policies: Vec<netman::api::policy::Policy> = sample_policies(120, 30)
        .into_iter()
        .map(|mut p| {
            if shape == Shape::NetmanEra {
                p.destination.ports.end = p.destination.ports.start;
            }
            p
        })
        .collect();
    for chunk in policies.chunks(25) {
        o.create(chunk);
    }
    o.delete(&policies[10..40]);
    if shape != Shape::NetmanEra {
        o.create_tag("INGRESS_ROUTER", "router");
    }
    o.create(&policies[15..20]);
    let end = if shape == Shape::NetmanEra { 1 } else { 65535 };
    o.create(&[netman::api::policy::Policy::new("late-1", "late-2", "tcp", 1, end)]);
    if shape == Shape::Head {
        o.add_security_group(&security_group(0));
        o.add_security_group(&security_group(1));
    }
    o
}

/// The store's view after the conversion: every policy with its tags (sorted) and every tag.
fn netman_view(
    config: &netman::policy::store::DatabaseConfig,
) -> (Vec<netman::api::policy::Policy>, Vec<(String, String, String)>, i64) {
    let store = netman::policy::store::open_uncached(config, 2).unwrap();
    let mut listing = store
        .list(&netman::policy::store::PolicyFilter::All)
        .unwrap();
    listing.sort();
    let tags = store
        .tags()
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.tag, t.kind))
        .collect();
    (listing, tags, store.last_updated().unwrap())
}

fn without_security_groups(schema: &str) -> String {
    schema
        .lines()
        .filter(|l| !l.contains("security_groups"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_conversion_engine_adopts_in_place_keeping_every_tag() {
    use netman::policy::adopt::convert;
    for kind in SERVERS {
        for shape in [Shape::Head, Shape::HeadWithoutSecurityGroups, Shape::NetmanEra] {
            let db = server(kind);
            let mut o = filled_original(&db, shape);
            let (listing, tags) = (o.listing(), o.tags());
            let before = if shape == Shape::NetmanEra {
                0
            } else {
                o.last_updated_nanos()
            };
            let schema_before = cf_networking::describe_schema(&mut o.raw);

            let report = convert::adopt(&mut o.raw, 2, true, &mut |_| panic!("dry run")).unwrap();
            assert!(report.lines.last().unwrap().contains("nothing was changed"));
            assert_eq!(cf_networking::describe_schema(&mut o.raw), schema_before);
            assert_eq!(o.listing(), listing);

            let config = db.config.clone();
            let report = convert::adopt(&mut o.raw, 2, false, &mut |_| {
                netman::policy::store::migrate(&config, 2).map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| panic!("{kind:?} {shape:?}: {e}"));
            eprintln!("{kind:?} {shape:?}:\n{}", report.lines.join("\n"));

            let (after, after_tags, version) = netman_view(&db.config);
            assert_eq!(after, listing, "{kind:?} {shape:?}: policies with tags");
            assert_eq!(after_tags, tags, "{kind:?} {shape:?}: tags");
            assert!(version > before, "{kind:?} {shape:?}: last_updated grew");

            // The schema is netman's, plus the original's security_groups where it was.
            let fresh = server(kind);
            netman::policy::store::migrate(&fresh.config, 2).unwrap();
            let adopted = cf_networking::describe_schema(&mut o.raw);
            assert_eq!(
                without_security_groups(&adopted),
                cf_networking::describe_schema(&mut fresh.raw()),
                "{kind:?} {shape:?}"
            );
            assert_eq!(
                adopted.contains("security_groups"),
                shape == Shape::Head,
                "{kind:?} {shape:?}"
            );
            if shape == Shape::Head {
                assert_eq!(o.raw.value("SELECT COUNT(*) FROM security_groups"), "2");
            }
            // netman keeps writing: the next app takes the lowest free tag.
            let store = netman::policy::store::open_uncached(&db.config, 2).unwrap();
            store
                .create(&[netman::api::policy::Policy::new("new-app", "late-1", "udp", 9, 9)])
                .unwrap();
            let free = tags
                .iter()
                .map(|(_, t, _)| u32::from_str_radix(t, 16).unwrap())
                .collect::<std::collections::BTreeSet<_>>();
            let lowest_free = (1..).find(|n| !free.contains(n)).unwrap();
            let new_tag = store
                .tags()
                .unwrap()
                .into_iter()
                .find(|t| t.id == "new-app")
                .unwrap()
                .tag;
            assert_eq!(u32::from_str_radix(&new_tag, 16).unwrap(), lowest_free);
        }
    }
}
