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
