//! Adoption of the original's databases (issue 19): detection of what a database holds, on real
//! PostgreSQL and MariaDB databases built by `tests/common/cf_networking.rs`.
#![cfg(all(feature = "postgres", feature = "mysql"))]

#[path = "common/db.rs"]
mod db;

#[path = "common/cf_networking.rs"]
mod cf_networking;

use cf_networking::{build, sample_policies, SecurityGroupRow, Shape};

use netman::db::DatabaseType;
use netman::policy::adopt::{detect, Era, Found, Inspect};

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
    filled_original_with(db, shape, 2)
}

fn filled_original_with(
    db: &db::TestDb,
    shape: Shape,
    tag_length: u8,
) -> cf_networking::OriginalDb {
    let mut o = build(db, shape, tag_length);
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
    o.create(&[netman::api::policy::Policy::new(
        "late-1", "late-2", "tcp", 1, end,
    )]);
    if shape == Shape::Head {
        o.add_security_group(&security_group(0));
        o.add_security_group(&security_group(1));
    }
    o
}

/// The store's view after the conversion: every policy with its tags (sorted) and every tag.
fn netman_view(
    config: &netman::db::DatabaseConfig,
) -> (
    Vec<netman::api::policy::Policy>,
    Vec<(String, String, String)>,
    i64,
) {
    netman_view_with(config, 2)
}

fn netman_view_with(
    config: &netman::db::DatabaseConfig,
    tag_length: u8,
) -> (
    Vec<netman::api::policy::Policy>,
    Vec<(String, String, String)>,
    i64,
) {
    let store = netman::policy::store::open_uncached(config, tag_length).unwrap();
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
        for shape in [
            Shape::Head,
            Shape::HeadWithoutSecurityGroups,
            Shape::NetmanEra,
        ] {
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
                .create(&[netman::api::policy::Policy::new(
                    "new-app", "late-1", "udp", 9, 9,
                )])
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

/// A connection that dies after `left` statements: every later statement fails and the
/// connection is dropped (the server rolls back what was open), as a killed migrator leaves it.
struct Dying {
    raw: Option<db::RawSql>,
    left: usize,
}

impl Inspect for Dying {
    fn kind(&self) -> DatabaseType {
        DatabaseType::Mysql
    }
    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        match &mut self.raw {
            Some(raw) => Ok(raw.rows(sql)),
            None => Err("connection lost".into()),
        }
    }
}

impl netman::policy::adopt::convert::Sql for Dying {
    fn execute(&mut self, sql: &str) -> Result<(), String> {
        if self.left == 0 {
            self.raw = None;
            return Err("connection lost".into());
        }
        self.left -= 1;
        self.raw.as_mut().unwrap().try_exec(sql)
    }
}

#[test]
fn an_interrupted_mysql_adoption_completes_on_the_next_run_wherever_it_stopped() {
    use netman::policy::adopt::convert;
    let mut cut = 0;
    loop {
        // A pool of 255 tags keeps each round short.
        let db = server(DatabaseType::Mysql);
        let mut o = filled_original_with(&db, Shape::Head, 1);
        let (listing, tags) = (o.listing(), o.tags());
        let before = o.last_updated_nanos();
        let config = db.config.clone();
        let mut create =
            |_: &mut Dying| netman::policy::store::migrate(&config, 1).map_err(|e| e.to_string());
        let mut dying = Dying {
            raw: Some(db.raw()),
            left: cut,
        };
        let first = convert::adopt(&mut dying, 1, false, &mut create);
        if first.is_ok() {
            assert!(cut > 5, "the adoption has more than {cut} statements");
            break;
        }
        // Whatever it left: the original untouched, or a recorded conversion to finish.
        match detect(&mut o.raw).unwrap() {
            Found::Original(_) | Found::Interrupted { .. } => {}
            other => panic!("cut after {cut} statements left {other:?}"),
        }
        let mut create = |_: &mut db::RawSql| {
            netman::policy::store::migrate(&config, 1).map_err(|e| e.to_string())
        };
        convert::adopt(&mut o.raw, 1, false, &mut create)
            .unwrap_or_else(|e| panic!("rerun after a cut at {cut}: {e}"));
        let (after, after_tags, version) = netman_view_with(&db.config, 1);
        assert_eq!(after, listing, "cut at {cut}");
        assert_eq!(after_tags, tags, "cut at {cut}");
        assert!(version > before, "cut at {cut}");
        assert!(!netman::policy::adopt::detect::tables(&mut o.raw)
            .unwrap()
            .iter()
            .any(|t| t.starts_with("netman_conversion")));
        cut += 1;
    }
}

#[test]
fn switching_back_restores_the_originals_schema_tags_and_policies() {
    use netman::policy::adopt::convert;
    for kind in SERVERS {
        for shape in [Shape::Head, Shape::HeadWithoutSecurityGroups] {
            let db = server(kind);
            let mut o = filled_original(&db, shape);
            let (listing, tags) = (o.listing(), o.tags());
            let config = db.config.clone();
            convert::adopt(&mut o.raw, 2, false, &mut |_| {
                netman::policy::store::migrate(&config, 2).map_err(|e| e.to_string())
            })
            .unwrap();
            // netman works on it for a while.
            let store = netman::policy::store::open_uncached(&db.config, 2).unwrap();
            let added = netman::api::policy::Policy::new("netman-app", "late-2", "tcp", 7, 8);
            store.create(std::slice::from_ref(&added)).unwrap();
            let netman_version = store.last_updated().unwrap();
            let (listing_netman, tags_netman, _) = netman_view(&db.config);
            drop(store);

            let schema = cf_networking::describe_schema(&mut o.raw);
            let dry =
                convert::to_original(&mut o.raw, 2, netman::policy::store::SCHEMA_VERSION, true)
                    .unwrap();
            assert!(dry.lines.last().unwrap().contains("nothing was changed"));
            assert_eq!(cf_networking::describe_schema(&mut o.raw), schema);

            let report =
                convert::to_original(&mut o.raw, 2, netman::policy::store::SCHEMA_VERSION, false)
                    .unwrap_or_else(|e| panic!("{kind:?} {shape:?}: {e}"));
            eprintln!("{kind:?} {shape:?}:\n{}", report.lines.join("\n"));

            // The schema of a fresh HEAD install (security_groups created where it was missing).
            let fresh_db = server(kind);
            let mut fresh = build(&fresh_db, Shape::Head, 2);
            assert_eq!(
                cf_networking::describe_schema(&mut o.raw),
                cf_networking::describe_schema(&mut fresh.raw),
                "{kind:?} {shape:?}"
            );
            let mut back = cf_networking::attach(&db, Shape::Head, 2);
            let mut recorded: Vec<String> = back
                .raw
                .rows("SELECT id FROM gorp_migrations")
                .into_iter()
                .map(|r| r[0].clone().unwrap())
                .collect();
            recorded.sort();
            let mut head = cf_networking::head_migration_ids();
            head.sort();
            assert_eq!(recorded, head);
            assert_eq!(back.raw.value("SELECT COUNT(*) FROM gorp_lock"), "0");
            assert_eq!(back.listing(), listing_netman, "{kind:?} {shape:?}");
            assert_eq!(back.tags(), tags_netman, "{kind:?} {shape:?}");
            assert!(listing_netman.len() == listing.len() + 1);
            assert!(tags_netman.len() >= tags.len());
            // What the original's agents read never went backwards.
            assert!(
                back.last_updated_nanos() > netman_version,
                "{kind:?} {shape:?}"
            );
            // The original keeps working on it: a delete frees the tag, the next app takes it.
            back.delete(std::slice::from_ref(&added));
            back.create(&[netman::api::policy::Policy::new(
                "original-app",
                "late-2",
                "tcp",
                1,
                1,
            )]);
            let t = back.tags();
            let freed = tags_netman
                .iter()
                .find(|t| t.0 == "netman-app")
                .unwrap()
                .1
                .clone();
            assert!(
                t.contains(&("original-app".into(), freed, "app".into())),
                "{t:?}"
            );
            // And netman can adopt it again.
            convert::adopt(&mut back.raw, 2, false, &mut |_| {
                netman::policy::store::migrate(&config, 2).map_err(|e| e.to_string())
            })
            .unwrap();
        }
    }
}
