//! Databases as the original policy server leaves them (cf-networking-release at HEAD, with
//! sql-migrate's bookkeeping up to migration 79, and the older netman-release schema), built on
//! real PostgreSQL and MariaDB from `tests/fixtures/cf_networking/` and filled the way the
//! original fills them: tags are the lowest free `groups.id`, every create/delete is one
//! transaction that also moves `policies_info.last_updated`, freed tags go back to the pool.
//!
//! This is test-side code on purpose: it shares nothing with netman's store, so a test that
//! adopts such a database checks netman against an independent description of the original.
//!
//! Use from a test file: `#[path = "common/db.rs"] mod db;` and
//! `#[path = "common/cf_networking.rs"] mod cf_networking;`.
#![allow(dead_code)]

use super::db::{quote, RawSql, TestDb};
use netman::api::policy::{Destination, Policy, Ports, Source};
use netman::db::DatabaseType;

const HEAD_POSTGRES: &str = include_str!("../fixtures/cf_networking/head_postgres.sql");
const HEAD_MYSQL: &str = include_str!("../fixtures/cf_networking/head_mysql.sql");
const NETMAN_ERA_POSTGRES: &str = include_str!("../fixtures/cf_networking/netman_era_postgres.sql");
const NETMAN_ERA_MYSQL: &str = include_str!("../fixtures/cf_networking/netman_era_mysql.sql");

/// Every migration id sql-migrate records on a fresh HEAD install (88), in the order it applies them
/// (a fresh database takes the "modified" variants 1-1b, 2-2f, 3-3a, then 4 to 79).
pub fn head_migration_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "1", "1a", "1b", "2", "2a", "2b", "2c", "2d", "2e", "2f", "3", "3a",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ids.extend((4..=79).map(|i| i.to_string()));
    ids
}

/// Which original schema to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// cf-networking-release HEAD: gorp_migrations 1..79, gorp_lock, security_groups.
    Head,
    /// HEAD with the `security_groups` table dropped (an operator who never used ASG syncing
    /// and cleaned it away; the bookkeeping still says 67 ran).
    HeadWithoutSecurityGroups,
    /// netman-release: three tables, no bookkeeping, no tag types, no policies_info.
    NetmanEra,
}

/// One row of the original's `security_groups` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupRow {
    pub guid: String,
    pub name: String,
    /// The CAPI rule array, as a JSON string (the original stores it that way).
    pub rules: String,
    pub staging_default: bool,
    pub running_default: bool,
    pub staging_spaces: Vec<String>,
    pub running_spaces: Vec<String>,
}

/// An original database under construction.
pub struct OriginalDb {
    pub raw: RawSql,
    pub shape: Shape,
    pub tag_length: u8,
    kind: DatabaseType,
}

/// The statements of each `-- migration <id>` section of a fixture file, in file order.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("-- migration ") {
            out.push((id.trim().to_string(), Vec::new()));
            continue;
        }
        let Some((_, statements)) = out.last_mut() else {
            continue;
        };
        if let Some(step) = line.strip_prefix("-- @") {
            statements.push(format!("@{}", step.trim()));
            continue;
        }
        if line.trim_start().starts_with("--") || line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            statements.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    out
}

/// Builds the original schema in the (empty) test database, as the original's migrator leaves
/// it on a fresh install, including the pool of 2^(8L)-1 free tags.
pub fn build(db: &TestDb, shape: Shape, tag_length: u8) -> OriginalDb {
    assert!((1..=2).contains(&tag_length));
    let kind = db.kind();
    let mut o = OriginalDb {
        raw: db.raw(),
        shape,
        tag_length,
        kind,
    };
    let text = match (shape, kind) {
        (Shape::NetmanEra, DatabaseType::Postgres) => NETMAN_ERA_POSTGRES,
        (Shape::NetmanEra, DatabaseType::Mysql) => NETMAN_ERA_MYSQL,
        (_, DatabaseType::Postgres) => HEAD_POSTGRES,
        (_, DatabaseType::Mysql) => HEAD_MYSQL,
        (_, other) => panic!("the original never ran on {other:?}"),
    };
    let files = sections(text);
    if shape == Shape::NetmanEra {
        for (_, statements) in &files {
            for s in statements {
                o.raw.exec(s);
            }
        }
    } else {
        o.migrate_like_sql_migrate(&files);
        if shape == Shape::HeadWithoutSecurityGroups {
            o.raw.exec("DROP TABLE security_groups");
        }
    }
    o.populate_groups();
    o
}

/// An original database that is there already (e.g. after `migrate --to-original`).
pub fn attach(db: &TestDb, shape: Shape, tag_length: u8) -> OriginalDb {
    OriginalDb {
        raw: db.raw(),
        shape,
        tag_length,
        kind: db.kind(),
    }
}

impl OriginalDb {
    pub fn kind(&self) -> DatabaseType {
        self.kind
    }

    /// `groups` spelled for this dialect.
    fn groups(&self) -> &'static str {
        match self.kind {
            DatabaseType::Mysql => "`groups`",
            _ => "groups",
        }
    }

    fn q(&self, s: &str) -> String {
        quote(self.kind, s)
    }

    /// sql-migrate with its lock: create the two bookkeeping tables (gorp's types for the
    /// dialect), take the lock row, apply each migration and record it, release the lock.
    fn migrate_like_sql_migrate(&mut self, files: &[(String, Vec<String>)]) {
        let ids = head_migration_ids();
        for (id, _) in files {
            assert!(
                ids.contains(id),
                "fixture section {id} is not a HEAD migration id"
            );
        }
        match self.kind {
            DatabaseType::Postgres => {
                self.raw.exec(
                    "create table if not exists \"gorp_migrations\" (\"id\" text not null primary key, \
                     \"applied_at\" timestamp with time zone) ;",
                );
                self.raw.exec(
                    "create table if not exists \"gorp_lock\" (\"lock\" text not null primary key unique, \
                     \"acquired_at\" timestamp with time zone) ;",
                );
            }
            _ => {
                self.raw.exec(
                    "create table if not exists `gorp_migrations` (`id` varchar(255) not null primary key, \
                     `applied_at` datetime) engine=InnoDB charset=UTF8;",
                );
                self.raw.exec(
                    "create table if not exists `gorp_lock` (`lock` varchar(255) not null primary key unique, \
                     `acquired_at` datetime) engine=InnoDB charset=UTF8;",
                );
            }
        }
        let lock_table = if self.kind == DatabaseType::Mysql {
            "`gorp_lock` (`lock`, `acquired_at`)"
        } else {
            "\"gorp_lock\" (\"lock\", \"acquired_at\")"
        };
        self.raw.exec(&format!(
            "insert into {lock_table} values ('sql-migrate', CURRENT_TIMESTAMP)"
        ));
        for id in &ids {
            if self.kind == DatabaseType::Postgres {
                self.raw.exec("BEGIN");
            }
            if let Some((_, statements)) = files.iter().find(|(f, _)| f == id) {
                for s in statements {
                    match s.as_str() {
                        "@drop_port_unique_key" => self.drop_port_unique_key(),
                        other if other.starts_with('@') => panic!("unknown fixture step {other}"),
                        sql => self.raw.exec(sql),
                    }
                }
            }
            self.raw.exec(&format!(
                "insert into gorp_migrations (id, applied_at) values ('{id}', CURRENT_TIMESTAMP)"
            ));
            if self.kind == DatabaseType::Postgres {
                self.raw.exec("COMMIT");
            }
        }
        let lock = if self.kind == DatabaseType::Mysql {
            "`lock`"
        } else {
            "\"lock\""
        };
        self.raw.exec(&format!(
            "delete from gorp_lock where {lock} = 'sql-migrate'"
        ));
    }

    /// MySQL migration 2d/2e: drop the first foreign key on destinations.group_id (MariaDB made
    /// one from the column's REFERENCES; it lives on the unique key's index) and then the unique
    /// key that holds `port`.
    fn drop_port_unique_key(&mut self) {
        let unique = self.raw.value(
            "SELECT CONSTRAINT_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'destinations' AND COLUMN_NAME = 'port'",
        );
        let fk = self.raw.rows(
            "SELECT CONSTRAINT_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'destinations' \
             AND COLUMN_NAME = 'group_id' AND REFERENCED_TABLE_NAME IS NOT NULL LIMIT 1",
        );
        if let Some(Some(fk)) = fk
            .into_iter()
            .next()
            .map(|r| r.into_iter().next().flatten())
        {
            self.raw
                .exec(&format!("ALTER TABLE destinations DROP FOREIGN KEY {fk}"));
        }
        self.raw
            .exec(&format!("ALTER TABLE destinations DROP INDEX {unique}"));
    }

    /// The second half of the original's migrate-db: an empty `groups` gets 2^(8L)-1 free rows,
    /// in one statement.
    fn populate_groups(&mut self) {
        let count: i64 = self
            .raw
            .value(&format!("SELECT COUNT(*) FROM {}", self.groups()))
            .parse()
            .unwrap();
        if count > 0 {
            return;
        }
        let n = (1usize << (8 * self.tag_length as usize)) - 1;
        let values = vec!["(NULL)"; n].join(", ");
        self.raw.exec(&format!(
            "INSERT INTO {} (guid) VALUES {values}",
            self.groups()
        ));
    }

    fn has_types(&self) -> bool {
        self.shape != Shape::NetmanEra
    }

    fn begin(&mut self) {
        self.raw.exec(match self.kind {
            DatabaseType::Mysql => "START TRANSACTION",
            _ => "BEGIN",
        });
    }

    fn first_int(&mut self, sql: &str) -> Option<i64> {
        self.raw
            .rows(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .map(|v| v.parse().unwrap())
    }

    /// The original's GroupTable.Create inside the caller's transaction: the existing row of
    /// (guid, type), else the lowest free slot, locked, then claimed.
    fn allocate(&mut self, guid: &str, kind: &str) -> i64 {
        let g = self.groups();
        let existing = if self.has_types() {
            format!(
                "SELECT id FROM {g} WHERE guid = {} AND type = {}",
                self.q(guid),
                self.q(kind)
            )
        } else {
            format!("SELECT id FROM {g} WHERE guid = {}", self.q(guid))
        };
        if let Some(id) = self.first_int(&existing) {
            return id;
        }
        let id = self
            .first_int(&format!(
                "SELECT id FROM {g} WHERE guid IS NULL ORDER BY id LIMIT 1 FOR UPDATE"
            ))
            .expect("failed to find available tag");
        let set_type = if self.has_types() {
            format!(", type = {}", self.q(kind))
        } else {
            String::new()
        };
        self.raw.exec(&format!(
            "UPDATE {g} SET guid = {}{set_type} WHERE id = {id}",
            self.q(guid)
        ));
        id
    }

    fn touch(&mut self) {
        if self.shape != Shape::NetmanEra {
            self.raw
                .exec("UPDATE policies_info SET last_updated = CURRENT_TIMESTAMP(6)");
        }
    }

    /// The original's store.Create: one transaction for the whole batch.
    pub fn create(&mut self, policies: &[Policy]) {
        self.begin();
        self.touch();
        for p in policies {
            let src = self.allocate(&p.source.id, "app");
            let dst = self.allocate(&p.destination.id, "app");
            let proto = self.q(&p.destination.protocol);
            let Ports { start, end } = p.destination.ports;
            let dual = if self.kind == DatabaseType::Mysql {
                " FROM DUAL"
            } else {
                ""
            };
            let (insert, find) = if self.has_types() {
                let port = if start == end { start } else { 0 };
                (
                    format!(
                        "INSERT INTO destinations (group_id, port, start_port, end_port, protocol) \
                         SELECT {dst}, {port}, {start}, {end}, {proto}{dual} WHERE NOT EXISTS \
                         (SELECT 1 FROM destinations WHERE group_id = {dst} AND start_port = {start} \
                         AND end_port = {end} AND protocol = {proto})"
                    ),
                    format!(
                        "SELECT id FROM destinations WHERE group_id = {dst} AND start_port = {start} \
                         AND end_port = {end} AND protocol = {proto}{}",
                        if self.kind == DatabaseType::Mysql {
                            " LOCK IN SHARE MODE"
                        } else {
                            " FOR UPDATE"
                        }
                    ),
                )
            } else {
                assert_eq!(start, end, "the netman-era schema holds single ports only");
                (
                    format!(
                        "INSERT INTO destinations (group_id, port, protocol) \
                         SELECT {dst}, {start}, {proto}{dual} WHERE NOT EXISTS \
                         (SELECT 1 FROM destinations WHERE group_id = {dst} AND port = {start} \
                         AND protocol = {proto})"
                    ),
                    format!(
                        "SELECT id FROM destinations WHERE group_id = {dst} AND port = {start} \
                         AND protocol = {proto}"
                    ),
                )
            };
            self.raw.exec(&insert);
            let dest = self.first_int(&find).unwrap();
            self.raw.exec(&format!(
                "INSERT INTO policies (group_id, destination_id) SELECT {src}, {dest}{dual} \
                 WHERE NOT EXISTS (SELECT 1 FROM policies WHERE group_id = {src} \
                 AND destination_id = {dest})"
            ));
        }
        self.raw.exec("COMMIT");
    }

    /// The original's store.Delete: one transaction; missing policies are skipped; a destination
    /// without policies is deleted; unreferenced groups go back to the pool (`guid = NULL`, as
    /// GroupTable.Delete does; the row's type stays).
    pub fn delete(&mut self, policies: &[Policy]) {
        let g = self.groups();
        self.begin();
        self.touch();
        for p in policies {
            let Some(src) = self.first_int(&format!(
                "SELECT id FROM {g} WHERE guid = {}",
                self.q(&p.source.id)
            )) else {
                continue;
            };
            let Some(dst) = self.first_int(&format!(
                "SELECT id FROM {g} WHERE guid = {}",
                self.q(&p.destination.id)
            )) else {
                continue;
            };
            let proto = self.q(&p.destination.protocol);
            let Ports { start, end } = p.destination.ports;
            let find = if self.has_types() {
                format!(
                    "SELECT id FROM destinations WHERE group_id = {dst} AND start_port = {start} \
                     AND end_port = {end} AND protocol = {proto}"
                )
            } else {
                format!(
                    "SELECT id FROM destinations WHERE group_id = {dst} AND port = {start} \
                     AND protocol = {proto}"
                )
            };
            let Some(dest) = self.first_int(&find) else {
                continue;
            };
            self.raw.exec(&format!(
                "DELETE FROM policies WHERE group_id = {src} AND destination_id = {dest}"
            ));
            let left = self
                .first_int(&format!(
                    "SELECT COUNT(*) FROM policies WHERE destination_id = {dest}"
                ))
                .unwrap();
            if left == 0 {
                self.raw
                    .exec(&format!("DELETE FROM destinations WHERE id = {dest}"));
            }
            for group in [src, dst] {
                let used = self
                    .first_int(&format!(
                        "SELECT (SELECT COUNT(*) FROM policies WHERE group_id = {group}) + \
                         (SELECT COUNT(*) FROM destinations WHERE group_id = {group})"
                    ))
                    .unwrap();
                if used == 0 {
                    self.raw
                        .exec(&format!("UPDATE {g} SET guid = NULL WHERE id = {group}"));
                }
            }
        }
        self.raw.exec("COMMIT");
    }

    /// The internal `PUT tags` of the original: the tag of (id, type), allocated if needed.
    pub fn create_tag(&mut self, id: &str, kind: &str) -> String {
        assert!(self.has_types(), "the netman-era schema has no tag types");
        self.begin();
        let tag = self.allocate(id, kind);
        self.raw.exec("COMMIT");
        self.tag(tag)
    }

    /// Adds a row to `security_groups` as the original's ASG syncer writes it.
    pub fn add_security_group(&mut self, sg: &SecurityGroupRow) {
        assert_eq!(
            self.shape,
            Shape::Head,
            "this shape has no security_groups table"
        );
        let spaces = |s: &[String]| self.q(&serde_json::to_string(s).unwrap());
        let sql = format!(
            "INSERT INTO security_groups (guid, name, rules, staging_default, running_default, \
             staging_spaces, running_spaces) VALUES ({}, {}, {}, {}, {}, {}, {})",
            self.q(&sg.guid),
            self.q(&sg.name),
            self.q(&sg.rules),
            sg.staging_default,
            sg.running_default,
            spaces(&sg.staging_spaces),
            spaces(&sg.running_spaces),
        );
        self.raw.exec(&sql);
    }

    /// The tag string of a group id: upper-case hex padded to 2L characters.
    pub fn tag(&self, id: i64) -> String {
        format!("{:0w$X}", id, w = 2 * self.tag_length as usize)
    }

    /// What the original's internal API lists: every policy with both tags, computed here
    /// from the original tables (the original's own join), sorted.
    pub fn listing(&mut self) -> Vec<Policy> {
        let g = self.groups();
        let ports = if self.has_types() {
            "d.start_port, d.end_port"
        } else {
            "d.port, d.port"
        };
        let sql = format!(
            "SELECT sg.guid, sg.id, dg.guid, dg.id, {ports}, d.protocol FROM policies p \
             LEFT OUTER JOIN {g} sg ON p.group_id = sg.id \
             LEFT OUTER JOIN destinations d ON d.id = p.destination_id \
             LEFT OUTER JOIN {g} dg ON d.group_id = dg.id"
        );
        let mut out: Vec<Policy> = self
            .raw
            .rows(&sql)
            .into_iter()
            .map(|r| {
                let text = |i: usize| r[i].clone().expect("a listed column is NULL");
                let int = |i: usize| text(i).parse::<i64>().unwrap();
                Policy {
                    source: Source {
                        id: text(0),
                        tag: Some(self.tag(int(1))),
                    },
                    destination: Destination {
                        id: text(2),
                        tag: Some(self.tag(int(3))),
                        protocol: text(6),
                        ports: Ports {
                            start: int(4),
                            end: int(5),
                        },
                    },
                }
            })
            .collect();
        out.sort();
        out
    }

    /// Every assigned tag: (id, tag, type), ordered by tag.
    pub fn tags(&mut self) -> Vec<(String, String, String)> {
        let g = self.groups();
        let kind = if self.has_types() { "type" } else { "'app'" };
        let sql = format!("SELECT guid, id, {kind} FROM {g} WHERE guid IS NOT NULL ORDER BY id");
        self.raw
            .rows(&sql)
            .into_iter()
            .map(|r| {
                (
                    r[0].clone().unwrap(),
                    self.tag(r[1].clone().unwrap().parse().unwrap()),
                    r[2].clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// `policies_last_updated` as the original's internal API answers it: the stored timestamp
    /// read by the Go driver as UTC wall time, in nanoseconds (microsecond precision).
    pub fn last_updated_nanos(&mut self) -> i64 {
        let sql = match self.kind {
            DatabaseType::Postgres => {
                "SELECT CAST(EXTRACT(EPOCH FROM last_updated) * 1000000 AS BIGINT) FROM policies_info"
            }
            _ => {
                "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', last_updated) \
                 FROM policies_info"
            }
        };
        self.first_int(sql).expect("policies_info row") * 1000
    }

    /// The same end state as `create` called once per policy in order on a database with no
    /// deletes (tags handed out in first-appearance order from 1), written with a few large
    /// statements: for benchmarks of big databases.
    pub fn bulk_fill(&mut self, policies: &[Policy]) {
        use std::collections::HashMap;
        let g = self.groups();
        let used = self
            .first_int(&format!("SELECT COUNT(*) FROM {g} WHERE guid IS NOT NULL"))
            .unwrap();
        assert_eq!(used, 0, "bulk_fill needs an unused database");
        let mut tags: HashMap<&str, i64> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        let mut dests: HashMap<(i64, i64, i64, &str), i64> = HashMap::new();
        let mut dest_rows: Vec<String> = Vec::new();
        let mut policy_rows: Vec<String> = Vec::new();
        let mut seen_policies = std::collections::HashSet::new();
        for p in policies {
            for id in [p.source.id.as_str(), p.destination.id.as_str()] {
                if !tags.contains_key(id) {
                    tags.insert(id, order.len() as i64 + 1);
                    order.push(id);
                }
            }
            let (src, dst) = (tags[p.source.id.as_str()], tags[p.destination.id.as_str()]);
            let Ports { start, end } = p.destination.ports;
            let proto = p.destination.protocol.as_str();
            let next = dests.len() as i64 + 1;
            let dest = *dests.entry((dst, start, end, proto)).or_insert_with(|| {
                let port = if start == end { start } else { 0 };
                dest_rows.push(if self.shape == Shape::NetmanEra {
                    format!("({next}, {dst}, {port}, {})", quote(self.kind, proto))
                } else {
                    format!(
                        "({next}, {dst}, {port}, {start}, {end}, {})",
                        quote(self.kind, proto)
                    )
                });
                next
            });
            if seen_policies.insert((src, dest)) {
                policy_rows.push(format!("({}, {src}, {dest})", policy_rows.len() + 1));
            }
        }
        self.begin();
        self.raw.exec(
            "CREATE TEMPORARY TABLE fixture_tags (id int PRIMARY KEY, guid varchar(255) NOT NULL)",
        );
        for chunk in order.chunks(2000).enumerate() {
            let (n, ids) = chunk;
            let rows: Vec<String> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| format!("({}, {})", n * 2000 + i + 1, quote(self.kind, id)))
                .collect();
            self.raw.exec(&format!(
                "INSERT INTO fixture_tags (id, guid) VALUES {}",
                rows.join(", ")
            ));
        }
        let set_type = if self.has_types() {
            ", type = 'app'"
        } else {
            ""
        };
        self.raw.exec(&match self.kind {
            DatabaseType::Mysql => format!(
                "UPDATE {g} g JOIN fixture_tags t ON t.id = g.id SET g.guid = t.guid{}",
                set_type.replace("type", "g.type")
            ),
            _ => format!(
                "UPDATE {g} SET guid = t.guid{set_type} FROM fixture_tags t WHERE t.id = {g}.id"
            ),
        });
        self.raw.exec("DROP TABLE fixture_tags");
        let dest_columns = if self.shape == Shape::NetmanEra {
            "(id, group_id, port, protocol)"
        } else {
            "(id, group_id, port, start_port, end_port, protocol)"
        };
        for chunk in dest_rows.chunks(2000) {
            self.raw.exec(&format!(
                "INSERT INTO destinations {dest_columns} VALUES {}",
                chunk.join(", ")
            ));
        }
        for chunk in policy_rows.chunks(2000) {
            self.raw.exec(&format!(
                "INSERT INTO policies (id, group_id, destination_id) VALUES {}",
                chunk.join(", ")
            ));
        }
        if self.kind == DatabaseType::Postgres {
            // Explicit ids do not move SERIAL sequences; the original's next insert must not
            // collide with them.
            self.raw.exec(
                "SELECT setval('destinations_id_seq', (SELECT MAX(id) FROM destinations)); \
                 SELECT setval('policies_id_seq', (SELECT MAX(id) FROM policies))",
            );
        }
        self.touch();
        self.raw.exec("COMMIT");
    }
}

/// A description of the database's schema, one line per fact, sorted: tables and columns with
/// type, nullability and default; indexes and constraints with their names and columns;
/// sequences; stored routines. Two databases with the same description have the same schema.
pub fn describe_schema(raw: &mut RawSql) -> String {
    let queries: &[(&str, &str)] = match raw.kind() {
        DatabaseType::Postgres => &[
            (
                "column",
                "SELECT table_name, column_name, data_type, \
                 COALESCE(character_maximum_length::text, ''), is_nullable, \
                 COALESCE(column_default, '') FROM information_schema.columns \
                 WHERE table_schema = 'public'",
            ),
            (
                "index",
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
            ),
            (
                "constraint",
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) \
                 FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
            ),
            (
                "sequence",
                "SELECT sequencename, data_type::text, max_value::text FROM pg_sequences \
                 WHERE schemaname = 'public'",
            ),
            (
                "routine",
                "SELECT routine_name FROM information_schema.routines \
                 WHERE routine_schema = 'public'",
            ),
        ],
        DatabaseType::Mysql => &[
            (
                "column",
                "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, \
                 COALESCE(COLUMN_DEFAULT, ''), EXTRA FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE()",
            ),
            (
                "index",
                "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, \
                 GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) \
                 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
                 GROUP BY TABLE_NAME, INDEX_NAME, NON_UNIQUE",
            ),
            (
                "foreign key",
                "SELECT TABLE_NAME, CONSTRAINT_NAME, \
                 GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION), REFERENCED_TABLE_NAME, \
                 GROUP_CONCAT(REFERENCED_COLUMN_NAME ORDER BY ORDINAL_POSITION) \
                 FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() \
                 AND REFERENCED_TABLE_NAME IS NOT NULL GROUP BY TABLE_NAME, CONSTRAINT_NAME, \
                 REFERENCED_TABLE_NAME",
            ),
            (
                "check",
                "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE \
                 FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()",
            ),
            (
                "routine",
                "SELECT ROUTINE_NAME FROM information_schema.ROUTINES \
                 WHERE ROUTINE_SCHEMA = DATABASE()",
            ),
        ],
        DatabaseType::Sqlite => &[(
            "object",
            "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%'",
        )],
    };
    let mut lines = Vec::new();
    for (what, sql) in queries {
        for row in raw.rows(sql) {
            let fields: Vec<String> = row.into_iter().map(|v| v.unwrap_or_default()).collect();
            lines.push(format!("{what} {}", fields.join(" | ")));
        }
    }
    lines.sort();
    lines.join("\n") + "\n"
}

/// Sample policies over `apps` app guids, deterministic: policy i goes from app i%apps to app
/// (i*7+1)%apps on a tcp port or small range, with a udp policy every fifth.
pub fn sample_policies(count: usize, apps: usize) -> Vec<Policy> {
    (0..count)
        .map(|i| {
            let src = format!("app-{:08}", i % apps);
            let dst = format!("app-{:08}", (i * 7 + 1) % apps);
            let port = 1000 + (i / apps) as i64;
            let (proto, end) = if i % 5 == 4 {
                ("udp", port)
            } else if i % 3 == 2 {
                ("tcp", port + 10)
            } else {
                ("tcp", port)
            };
            Policy::new(&src, &dst, proto, port, end)
        })
        .collect()
}

/// The whole database, schema and data: [`describe_schema`] and every row of every table
/// (sorted). Two equal dumps mean nothing was changed.
pub fn dump(raw: &mut RawSql) -> String {
    let tables_sql = match raw.kind() {
        DatabaseType::Postgres => {
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        }
        DatabaseType::Mysql => {
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'"
        }
        DatabaseType::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
    };
    let mut tables: Vec<String> = raw
        .rows(tables_sql)
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    tables.sort();
    let quote = if raw.kind() == DatabaseType::Mysql {
        '`'
    } else {
        '"'
    };
    let mut out = describe_schema(raw);
    for t in tables {
        let mut rows: Vec<String> = raw
            .rows(&format!("SELECT * FROM {quote}{t}{quote}"))
            .into_iter()
            .map(|r| {
                let fields: Vec<String> = r
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".into()))
                    .collect();
                format!("{t}: {}", fields.join(" | "))
            })
            .collect();
        rows.sort();
        out.push_str(&format!("table {t}: {} rows\n", rows.len()));
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}
