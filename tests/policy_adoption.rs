//! Adoption of the original's databases (issue 19): detection of what a database holds, on real
//! PostgreSQL and MariaDB databases built by `tests/support/cf_networking.rs`.
#![cfg(all(feature = "postgres", feature = "mysql"))]

mod support;
use cf_networking::{build, sample_policies, SecurityGroupRow, Shape};
use support::{cf_networking, db, policy_server};

use netman::db::{Cell, DatabaseType, Dialect, Error as DbError, Tx, Val};
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

/// netman's SQL layer over the test's own connection (autocommit; parameters written inline), so
/// the conversion engine's "create netman's schema" step runs on the connection the conversion
/// uses, as `policy-server migrate` runs it.
impl Tx for db::RawSql {
    fn dialect(&self) -> Dialect {
        Dialect::of(self.kind())
    }
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64, DbError> {
        let sql = inline(self.kind(), sql, params);
        self.try_exec(&sql).map(|_| 0).map_err(DbError::Database)
    }
    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Vec<Cell>>, DbError> {
        let sql = inline(self.kind(), sql, params);
        Ok(db::RawSql::rows(self, &sql)
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| match v {
                        None => Cell::Null,
                        Some(s) => s.parse().map(Cell::Int).unwrap_or(Cell::Str(s)),
                    })
                    .collect()
            })
            .collect())
    }
    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let sql = inline(self.kind(), sql, &[]);
        self.try_exec(&sql).map_err(DbError::Database)
    }
}

/// `sql` with its `?` parameters written as literals, in the dialect's quoting.
fn inline(kind: DatabaseType, sql: &str, params: &[Val<'_>]) -> String {
    let mut out = String::new();
    let (mut literal, mut next) = (false, params.iter());
    for c in sql.chars() {
        if c == '\'' {
            literal = !literal;
        }
        match (c, literal) {
            ('?', false) => match next.next().expect("a parameter for every ?") {
                Val::Int(i) => out.push_str(&i.to_string()),
                Val::Str(s) => out.push_str(&db::quote(kind, s)),
            },
            _ => out.push(c),
        }
    }
    if kind == DatabaseType::Mysql {
        out = Dialect::Mysql.native(&out).into_owned();
    }
    out
}

/// netman's schema on the conversion's own connection.
fn create_netman(tx: &mut dyn Tx, tag_length: u8) -> Result<i64, String> {
    netman::policy::store::create_schema(tx, tag_length)
        .map(|_| netman::policy::store::SCHEMA_VERSION)
        .map_err(|e| e.to_string())
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

            let report = convert::adopt(&mut o.raw, 2, false, &mut |raw: &mut db::RawSql| {
                create_netman(raw, 2)
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

/// Every statement counts against the budget, also those of netman's migrations.
impl Tx for Dying {
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64, DbError> {
        let sql = inline(DatabaseType::Mysql, sql, params);
        netman::policy::adopt::convert::Sql::execute(self, &sql)
            .map(|_| 0)
            .map_err(DbError::Database)
    }
    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Vec<Cell>>, DbError> {
        match &mut self.raw {
            Some(raw) => Tx::rows(raw, sql, params),
            None => Err(DbError::Database("connection lost".into())),
        }
    }
    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.exec(sql, &[]).map(|_| ())
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
        let mut create = |dying: &mut Dying| create_netman(dying, 1);
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
        let mut create = |raw: &mut db::RawSql| create_netman(raw, 1);
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
            convert::adopt(&mut o.raw, 2, false, &mut |raw: &mut db::RawSql| {
                create_netman(raw, 2)
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
            convert::adopt(&mut back.raw, 2, false, &mut |raw: &mut db::RawSql| {
                create_netman(raw, 2)
            })
            .unwrap();
        }
    }
}

// ------------------------------------------------------------ `policy-server migrate`, end to end

/// The real policy server configured on `db` (not started).
fn configured(db: &db::TestDb, tag_length: u8) -> policy_server::PolicyServer {
    let database = db.config_json();
    policy_server::PolicyServer::configure(|c, _| {
        c["database"] = database;
        c["tag_length"] = serde_json::json!(tag_length);
    })
}

/// What the started server's internal API lists: (policies sorted, policies_last_updated).
fn served(ps: &mut policy_server::PolicyServer) -> (Vec<netman::api::policy::Policy>, i64) {
    ps.spawn();
    let (status, body) = ps.internal_get("/networking/v1/internal/policies");
    assert_eq!(status, 200, "{body}");
    let mut listed: netman::api::policy::PoliciesResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.total_policies, listed.policies.len());
    listed.policies.sort();
    let (status, version) = ps.internal_get("/networking/v1/internal/policies_last_updated");
    assert_eq!(status, 200, "{version}");
    ps.kill();
    (listed.policies, version.trim().parse().unwrap())
}

fn security_group_rows(dump: &str) -> Vec<&str> {
    dump.lines()
        .filter(|l| l.starts_with("security_groups:"))
        .collect()
}

#[test]
fn migrate_adopts_each_original_keeping_every_policy_tag_and_security_group() {
    for kind in SERVERS {
        for shape in [
            Shape::Head,
            Shape::HeadWithoutSecurityGroups,
            Shape::NetmanEra,
        ] {
            let case = format!("{kind:?} {shape:?}");
            let db = server(kind);
            let mut o = filled_original(&db, shape);
            let (listing, tags) = (o.listing(), o.tags());
            let before = if shape == Shape::NetmanEra {
                0
            } else {
                o.last_updated_nanos()
            };
            let original = cf_networking::dump(&mut o.raw);
            let mut ps = configured(&db, 2);

            // The server will not start on it, says what to run, and leaves it as it was.
            let refused = ps.start_refused();
            assert!(
                refused.contains("policy-server migrate"),
                "{case}: {refused}"
            );
            assert_eq!(cf_networking::dump(&mut o.raw), original, "{case}");

            let (ok, out, err) = ps.command(&["migrate", "--dry-run"]);
            assert!(ok, "{case}: {err}");
            assert!(
                out.contains("nothing was changed (--dry-run)"),
                "{case}: {out}"
            );
            assert!(
                out.contains(&format!("{} policies", listing.len())),
                "{case}: {out}"
            );
            assert_eq!(cf_networking::dump(&mut o.raw), original, "{case}: dry run");

            let (ok, out, err) = ps.command(&["migrate"]);
            assert!(ok, "{case}: {err}");
            assert!(out.contains("adopted: done"), "{case}: {out}");

            let (served_listing, version) = served(&mut ps);
            assert_eq!(
                served_listing, listing,
                "{case}: the internal API's listing"
            );
            assert_eq!(
                netman_view(&db.config).1,
                tags,
                "{case}: every tag and type"
            );
            assert!(
                version > before,
                "{case}: last_updated {version} <= {before}"
            );
            let adopted = cf_networking::dump(&mut o.raw);
            assert_eq!(
                security_group_rows(&adopted),
                security_group_rows(&original),
                "{case}: security_groups"
            );
            if shape == Shape::Head {
                assert_eq!(security_group_rows(&adopted).len(), 2, "{case}");
            }

            // Again: nothing to do, nothing changed (not even last_updated).
            for args in [&["migrate"][..], &["migrate", "--dry-run"][..]] {
                let (ok, out, err) = ps.command(args);
                assert!(ok, "{case} {args:?}: {err}");
                assert!(out.contains("nothing to do"), "{case} {args:?}: {out}");
                assert_eq!(cf_networking::dump(&mut o.raw), adopted, "{case} {args:?}");
            }
        }
    }
}

#[test]
fn migrate_refuses_unknown_schemas_and_changes_nothing() {
    for kind in SERVERS {
        let leftovers = server(kind);
        let mut o = build(&leftovers, Shape::Head, 2);
        o.create(&sample_policies(5, 4));
        o.raw
            .exec("CREATE TABLE terminals (guid varchar(36) PRIMARY KEY)");
        let newer = server(kind);
        let mut n = build(&newer, Shape::Head, 2);
        n.create(&sample_policies(5, 4));
        n.raw
            .exec("INSERT INTO gorp_migrations (id, applied_at) VALUES ('80', CURRENT_TIMESTAMP)");
        for (db, raw, expected) in [
            (&leftovers, &mut o.raw, "terminals"),
            (&newer, &mut n.raw, "(80)"),
        ] {
            let before = cf_networking::dump(raw);
            let ps = configured(db, 2);
            for args in [&["migrate"][..], &["migrate", "--dry-run"][..]] {
                let (ok, _, err) = ps.command(args);
                assert!(!ok, "{kind:?} {args:?} accepted");
                assert!(
                    err.contains(expected) && err.contains("Nothing was changed"),
                    "{kind:?} {args:?}: {err}"
                );
                assert_eq!(cf_networking::dump(raw), before, "{kind:?} {args:?}");
            }
            let refused = ps.start_refused();
            assert!(refused.contains("policy-server migrate"), "{refused}");
            assert_eq!(cf_networking::dump(raw), before, "{kind:?}: server start");
        }
    }
}

#[test]
fn an_interrupted_mysql_adoption_stops_the_server_and_migrate_finishes_it() {
    use netman::policy::adopt::convert;
    let mut interrupted = 0;
    for cut in [1, 4, 9, 15, 25] {
        let db = server(DatabaseType::Mysql);
        let mut o = filled_original_with(&db, Shape::Head, 1);
        let (listing, tags) = (o.listing(), o.tags());
        let before = o.last_updated_nanos();
        let mut dying = Dying {
            raw: Some(db.raw()),
            left: cut,
        };
        let mut create = |dying: &mut Dying| create_netman(dying, 1);
        assert!(
            convert::adopt(&mut dying, 1, false, &mut create).is_err(),
            "the adoption has more than {cut} statements"
        );
        let mut ps = configured(&db, 1);
        if let Found::Interrupted { .. } = detect(&mut o.raw).unwrap() {
            interrupted += 1;
            let refused = ps.start_refused();
            assert!(
                refused.contains("interrupted") && refused.contains("policy-server migrate"),
                "cut at {cut}: {refused}"
            );
        }
        let (ok, out, err) = ps.command(&["migrate"]);
        assert!(ok, "cut at {cut}: {err}");
        assert!(out.contains("adopted: done"), "cut at {cut}: {out}");
        let (served_listing, version) = served(&mut ps);
        assert_eq!(served_listing, listing, "cut at {cut}");
        assert_eq!(netman_view_with(&db.config, 1).1, tags, "cut at {cut}");
        assert!(version > before, "cut at {cut}");
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} cuts left a conversion to finish"
    );
}

#[test]
fn migrate_to_original_switches_back_and_migrate_adopts_again() {
    for kind in SERVERS {
        let db = server(kind);
        let mut o = filled_original(&db, Shape::Head);
        let mut ps = configured(&db, 2);
        let (ok, _, err) = ps.command(&["migrate"]);
        assert!(ok, "{kind:?}: {err}");
        // netman works on it for a while.
        let store = netman::policy::store::open_uncached(&db.config, 2).unwrap();
        store
            .create(&[netman::api::policy::Policy::new(
                "netman-app",
                "late-2",
                "tcp",
                7,
                8,
            )])
            .unwrap();
        store.create_tag("netman-router", "router").unwrap();
        drop(store);
        let (listing, version) = served(&mut ps);
        let tags = netman_view(&db.config).1;
        let security_groups = security_group_rows(&cf_networking::dump(&mut o.raw))
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();

        let netman = cf_networking::dump(&mut o.raw);
        let (ok, out, err) = ps.command(&["migrate", "--to-original", "--dry-run"]);
        assert!(ok, "{kind:?}: {err}");
        assert!(out.contains("nothing was changed"), "{out}");
        assert_eq!(cf_networking::dump(&mut o.raw), netman, "{kind:?}: dry run");

        let (ok, out, err) = ps.command(&["migrate", "--to-original"]);
        assert!(ok, "{kind:?}: {err}");
        assert!(out.contains("switched back"), "{out}");
        let fresh_db = server(kind);
        let mut fresh = build(&fresh_db, Shape::Head, 2);
        assert_eq!(
            cf_networking::describe_schema(&mut o.raw),
            cf_networking::describe_schema(&mut fresh.raw),
            "{kind:?}: the original's schema"
        );
        let mut back = cf_networking::attach(&db, Shape::Head, 2);
        assert_eq!(back.listing(), listing, "{kind:?}");
        assert_eq!(back.tags(), tags, "{kind:?}");
        assert!(back.last_updated_nanos() > version, "{kind:?}");
        let original = cf_networking::dump(&mut back.raw);
        assert_eq!(security_group_rows(&original), security_groups, "{kind:?}");

        // Switching back twice is refused, untouched; the server refuses the original again.
        let (ok, _, err) = ps.command(&["migrate", "--to-original"]);
        assert!(!ok && err.contains("nothing to convert"), "{kind:?}: {err}");
        assert_eq!(cf_networking::dump(&mut back.raw), original, "{kind:?}");
        assert!(ps.start_refused().contains("policy-server migrate"));

        let (ok, _, err) = ps.command(&["migrate"]);
        assert!(ok, "{kind:?}: {err}");
        let (again, _) = served(&mut ps);
        assert_eq!(again, listing, "{kind:?}: adopted again");
    }
}
