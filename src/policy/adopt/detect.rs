//! Which schema a database holds, read-only: netman's own (by its `netman_migrations`), the
//! original's at HEAD (sql-migrate's `gorp_migrations` with exactly the ids 1..79 of a HEAD
//! install), the netman-era original (three tables, no bookkeeping), an adoption that stopped
//! half-way (its journal), an empty database, or something else, which is refused with the reason.
//! Written over [`Inspect`], one text query at a time, so it runs on any connection.

use crate::db::DatabaseType;
use std::collections::BTreeSet;
use std::fmt;

/// The one thing detection needs from a database: run a read-only query and get every value as
/// text (`None` for NULL).
pub trait Inspect {
    fn kind(&self) -> DatabaseType;
    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String>;
}

/// Name of the journal table a conversion keeps on MySQL, where DDL commits implicitly: one row
/// per finished step, so an interrupted run resumes where it stopped.
pub const JOURNAL_TABLE: &str = "netman_conversion";

/// Tables of netman's schema besides its bookkeeping (`netman_migrations`).
pub const NETMAN_TABLES: [&str; 4] = ["groups", "destinations", "policies", "policies_info"];

/// The original's dynamic-egress tables, dropped by its migrations 68-74.
const EGRESS_TABLES: [&str; 7] = [
    "terminals",
    "egress_policies",
    "ip_ranges",
    "apps",
    "spaces",
    "destination_metadatas",
    "defaults",
];

/// The migration ids sql-migrate records for a HEAD install of the original, in order: the
/// split first migrations and 4..=79 (88 ids).
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

/// Which generation of the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// cf-networking-release with sql-migrate records up to 79.
    Head,
    /// netman-release: no bookkeeping, no tag types, single ports, no policies_info.
    NetmanEra,
}

impl fmt::Display for Era {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Era::Head => "the cf-networking schema at HEAD (sql-migrate migrations up to 79)",
            Era::NetmanEra => "the netman-release schema (no migration table)",
        })
    }
}

/// An original database as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub era: Era,
    /// `security_groups` exists (HEAD only); it is kept as it is.
    pub security_groups: bool,
    pub security_group_rows: i64,
    /// Highest `groups.id`: the pool the original filled, 2^(8L)-1.
    pub pool_size: i64,
    pub tags_in_use: i64,
    /// Tags in use whose type is not `app` (e.g. the ingress router's).
    pub other_type_tags: i64,
    pub destinations: i64,
    pub policies: i64,
    /// `policies_info.last_updated` as the original's agents saw it, in nanoseconds (HEAD).
    pub last_updated: Option<i64>,
}

/// What a database holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// None of the policy store's tables (other programs' tables, such as the overlay's leases
    /// on a shared database, may be there): netman creates its schema.
    Empty,
    /// netman's schema at this version.
    Netman { version: i64 },
    /// The original's schema, recognised and consistent.
    Original(Original),
    /// A conversion that stopped half-way (MySQL); its journal names the direction.
    Interrupted {
        direction: String,
        done: Vec<String>,
    },
    /// Anything else; the reason says what did not match.
    Unknown(String),
}

type Rows = Vec<Vec<Option<String>>>;

fn text(rows: &Rows) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.first().cloned().flatten())
        .collect()
}

fn int(db: &mut dyn Inspect, sql: &str) -> Result<i64, String> {
    let rows = db.query(sql)?;
    match rows.first().and_then(|r| r.first()) {
        Some(Some(v)) => v
            .parse()
            .map_err(|_| format!("expected a number from {sql:?}, got {v:?}")),
        Some(None) => Ok(0),
        None => Err(format!("no row from {sql:?}")),
    }
}

/// The base tables of the connection's database (schema).
pub fn tables(db: &mut dyn Inspect) -> Result<BTreeSet<String>, String> {
    let sql = match db.kind() {
        DatabaseType::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
        DatabaseType::Mysql => {
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'"
        }
        DatabaseType::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
    };
    Ok(text(&db.query(sql)?).into_iter().collect())
}

/// The column names of `table` (one of ours: a fixed identifier), with their type names in lower
/// case.
pub fn columns(db: &mut dyn Inspect, table: &str) -> Result<Vec<(String, String)>, String> {
    assert!(table.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let sql = match db.kind() {
        DatabaseType::Postgres => format!(
            "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = '{table}' \
             ORDER BY ordinal_position"
        ),
        DatabaseType::Mysql => format!(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' ORDER BY ORDINAL_POSITION"
        ),
        DatabaseType::Sqlite => format!("SELECT name, type FROM pragma_table_info('{table}')"),
    };
    Ok(db
        .query(&sql)?
        .into_iter()
        .map(|r| {
            let mut it = r.into_iter();
            let name = it.next().flatten().unwrap_or_default();
            let kind = it.next().flatten().unwrap_or_default().to_lowercase();
            (name, kind)
        })
        .collect())
}

fn groups(kind: DatabaseType) -> &'static str {
    match kind {
        DatabaseType::Mysql => "`groups`",
        _ => "\"groups\"",
    }
}

/// Finds out what the database holds. Read-only.
pub fn detect(db: &mut dyn Inspect) -> Result<Found, String> {
    let tables = tables(db)?;
    if tables.contains(JOURNAL_TABLE) {
        let rows = db.query(&format!("SELECT step FROM {JOURNAL_TABLE} ORDER BY seq"))?;
        let mut done = text(&rows);
        let direction = if done.is_empty() {
            String::new()
        } else {
            done.remove(0)
        };
        return Ok(Found::Interrupted { direction, done });
    }
    if tables.contains("netman_migrations") {
        let version = int(
            db,
            "SELECT COALESCE(MAX(version), 0) FROM netman_migrations",
        )?;
        return Ok(Found::Netman { version });
    }
    if tables.contains("gorp_migrations") {
        return head(db, &tables);
    }
    let ours: Vec<&str> = POLICY_TABLE_NAMES
        .iter()
        .copied()
        .filter(|t| tables.contains(*t))
        .collect();
    let egress = tables.iter().any(|t| EGRESS_TABLES.contains(&t.as_str()));
    if ours.is_empty() && !egress {
        return Ok(Found::Empty);
    }
    if ours == ["groups", "destinations", "policies"] && !egress {
        return netman_era(db);
    }
    let known: BTreeSet<&str> = ["groups", "destinations", "policies"].into_iter().collect();
    let named: BTreeSet<String> = tables
        .iter()
        .filter(|t| POLICY_TABLE_NAMES.contains(&t.as_str()) || EGRESS_TABLES.contains(&t.as_str()))
        .cloned()
        .collect();
    Ok(Found::Unknown(format!(
        "{} (without sql-migrate's gorp_migrations or netman's netman_migrations)",
        unknown_tables(&named, &known)
    )))
}

/// Table names of the policy store in any generation (other tables are other programs').
const POLICY_TABLE_NAMES: [&str; 4] = ["groups", "destinations", "policies", "policies_info"];

/// Why the policy server must not open this database as its store, if it must not: the original's
/// schema (to be adopted first), or an interrupted conversion. An empty database or netman's own
/// schema is fine (read-only).
pub fn refuse_to_open(db: &mut dyn Inspect) -> Result<Option<String>, String> {
    let tables = tables(db)?;
    if tables.contains(JOURNAL_TABLE) {
        return Ok(Some(format!(
            "a conversion of this database was interrupted ({JOURNAL_TABLE} is there): run \
             `policy-server migrate` (or `migrate --to-original`, whichever was running) to \
             finish it"
        )));
    }
    if tables.contains("netman_migrations") {
        return Ok(None);
    }
    if tables.contains("gorp_migrations") {
        return Ok(Some(
            "the database holds the original cf-networking policy server's schema: run \
             `policy-server migrate` to adopt it (docs/store.md, \"Coming from cf-networking\")"
                .into(),
        ));
    }
    if POLICY_TABLE_NAMES.iter().any(|t| tables.contains(*t)) {
        return Ok(Some(
            "the database holds policy tables without netman's netman_migrations (the \
             netman-release schema?): run `policy-server migrate` to adopt it"
                .into(),
        ));
    }
    Ok(None)
}

fn unknown_tables(tables: &BTreeSet<String>, known: &BTreeSet<&str>) -> String {
    let extra: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| !known.contains(t))
        .collect();
    let egress: Vec<&str> = extra
        .iter()
        .copied()
        .filter(|t| EGRESS_TABLES.contains(t))
        .collect();
    let mut reason = format!("unexpected tables: {}", extra.join(", "));
    if !egress.is_empty() {
        reason.push_str(&format!(
            " ({} are leftovers of the original's removed dynamic-egress feature, which its \
             migrations 68-74 drop: finish the original's upgrade, or drop them once they are \
             confirmed empty)",
            egress.join(", ")
        ));
    }
    reason
}

/// Compares the column names of each table with what the original has.
fn expect_columns(
    db: &mut dyn Inspect,
    expected: &[(&str, &[&str])],
) -> Result<Option<String>, String> {
    for (table, want) in expected {
        let have: BTreeSet<String> = columns(db, table)?.into_iter().map(|(n, _)| n).collect();
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        if have != want {
            let missing: Vec<&String> = want.difference(&have).collect();
            let extra: Vec<&String> = have.difference(&want).collect();
            return Ok(Some(format!(
                "table {table} has columns that do not match the original's (missing: {missing:?}, \
                 unexpected: {extra:?})"
            )));
        }
    }
    Ok(None)
}

const HEAD_COLUMNS: [(&str, &[&str]); 4] = [
    ("groups", &["id", "guid", "type"]),
    (
        "destinations",
        &[
            "id",
            "group_id",
            "port",
            "protocol",
            "start_port",
            "end_port",
        ],
    ),
    ("policies", &["id", "group_id", "destination_id"]),
    ("policies_info", &["id", "last_updated"]),
];

const SECURITY_GROUP_COLUMNS: (&str, &[&str]) = (
    "security_groups",
    &[
        "id",
        "guid",
        "name",
        "rules",
        "staging_default",
        "running_default",
        "staging_spaces",
        "running_spaces",
    ],
);

fn head(db: &mut dyn Inspect, tables: &BTreeSet<String>) -> Result<Found, String> {
    let known: BTreeSet<&str> = [
        "groups",
        "destinations",
        "policies",
        "policies_info",
        "security_groups",
        "gorp_migrations",
        "gorp_lock",
    ]
    .into_iter()
    .collect();
    // The bookkeeping first: a newer or older original says so more precisely than its tables.
    let recorded: BTreeSet<String> = text(&db.query("SELECT id FROM gorp_migrations")?)
        .into_iter()
        .collect();
    let head: BTreeSet<String> = head_migration_ids().into_iter().collect();
    if recorded != head {
        let newer: Vec<&String> = recorded.difference(&head).collect();
        let missing: Vec<&String> = head.difference(&recorded).collect();
        return Ok(Found::Unknown(if !newer.is_empty() {
            format!(
                "gorp_migrations records migrations this binary does not know ({}): a newer \
                 cf-networking schema than HEAD at migration 79. Export from the original \
                 (or go back to a release at migration 79) first",
                list(&newer)
            )
        } else {
            format!(
                "gorp_migrations lacks migrations {} of a HEAD install: an older cf-networking \
                 schema. Upgrade the original to a release at migration 79 first",
                list(&missing)
            )
        }));
    }
    if tables.iter().any(|t| !known.contains(t.as_str())) {
        return Ok(Found::Unknown(unknown_tables(tables, &known)));
    }
    for t in ["groups", "destinations", "policies", "policies_info"] {
        if !tables.contains(t) {
            return Ok(Found::Unknown(format!(
                "gorp_migrations says migration 79 ran, but table {t} is missing"
            )));
        }
    }
    if tables.contains("gorp_lock") && int(db, "SELECT COUNT(*) FROM gorp_lock")? > 0 {
        return Ok(Found::Unknown(
            "gorp_lock holds a lock: the original's migrator is running (or died while \
             running). Stop every original policy-server first; a lock older than a minute \
             is stale and may be deleted"
                .into(),
        ));
    }
    let mut expected: Vec<(&str, &[&str])> = HEAD_COLUMNS.to_vec();
    let security_groups = tables.contains("security_groups");
    if security_groups {
        expected.push(SECURITY_GROUP_COLUMNS);
    }
    if let Some(reason) = expect_columns(db, &expected)? {
        return Ok(Found::Unknown(reason));
    }
    let info_type = columns(db, "policies_info")?
        .into_iter()
        .find(|(n, _)| n == "last_updated")
        .map(|(_, t)| t)
        .unwrap_or_default();
    if !info_type.starts_with("timestamp") {
        return Ok(Found::Unknown(format!(
            "policies_info.last_updated is {info_type}, the original's is a TIMESTAMP"
        )));
    }
    let info_rows = int(db, "SELECT COUNT(*) FROM policies_info")?;
    if info_rows != 1 {
        return Ok(Found::Unknown(format!(
            "policies_info has {info_rows} rows, the original keeps exactly one"
        )));
    }
    let mut original = counts(db, Era::Head)?;
    original.security_groups = security_groups;
    if security_groups {
        original.security_group_rows = int(db, "SELECT COUNT(*) FROM security_groups")?;
    }
    original.last_updated = Some(original_last_updated(db)?);
    finish(db, original)
}

fn list(ids: &[&String]) -> String {
    ids.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn netman_era(db: &mut dyn Inspect) -> Result<Found, String> {
    let expected: [(&str, &[&str]); 3] = [
        ("groups", &["id", "guid"]),
        ("destinations", &["id", "group_id", "port", "protocol"]),
        ("policies", &["id", "group_id", "destination_id"]),
    ];
    if let Some(reason) = expect_columns(db, &expected)? {
        return Ok(Found::Unknown(reason));
    }
    let original = counts(db, Era::NetmanEra)?;
    finish(db, original)
}

fn counts(db: &mut dyn Inspect, era: Era) -> Result<Original, String> {
    let g = groups(db.kind());
    let other_type_tags = match era {
        Era::Head => int(
            db,
            &format!("SELECT COUNT(*) FROM {g} WHERE guid IS NOT NULL AND COALESCE(type, 'app') <> 'app'"),
        )?,
        Era::NetmanEra => 0,
    };
    Ok(Original {
        era,
        security_groups: false,
        security_group_rows: 0,
        pool_size: int(db, &format!("SELECT COALESCE(MAX(id), 0) FROM {g}"))?,
        tags_in_use: int(
            db,
            &format!("SELECT COUNT(*) FROM {g} WHERE guid IS NOT NULL"),
        )?,
        other_type_tags,
        destinations: int(db, "SELECT COUNT(*) FROM destinations")?,
        policies: int(db, "SELECT COUNT(*) FROM policies")?,
        last_updated: None,
    })
}

/// Rows the conversion could not carry over faithfully: a NULL where netman's columns are NOT
/// NULL, or a reference to a row that does not exist (the original had no foreign key there on
/// MySQL). The original's own listing would fail on such rows too.
fn finish(db: &mut dyn Inspect, original: Original) -> Result<Found, String> {
    let g = groups(db.kind());
    let ports = match original.era {
        Era::Head => "start_port IS NULL OR end_port IS NULL",
        Era::NetmanEra => "port IS NULL",
    };
    let checks = [
        (
            format!("SELECT COUNT(*) FROM destinations WHERE group_id IS NULL OR protocol IS NULL OR {ports}"),
            "destinations with a NULL group, protocol or port",
        ),
        (
            "SELECT COUNT(*) FROM policies WHERE group_id IS NULL OR destination_id IS NULL".to_string(),
            "policies with a NULL source group or destination",
        ),
        (
            format!(
                "SELECT COUNT(*) FROM destinations d WHERE NOT EXISTS \
                 (SELECT 1 FROM {g} x WHERE x.id = d.group_id AND x.guid IS NOT NULL)"
            ),
            "destinations whose group is missing or free",
        ),
        (
            format!(
                "SELECT COUNT(*) FROM policies p WHERE NOT EXISTS \
                 (SELECT 1 FROM {g} x WHERE x.id = p.group_id AND x.guid IS NOT NULL)"
            ),
            "policies whose source group is missing or free",
        ),
        (
            "SELECT COUNT(*) FROM policies p WHERE NOT EXISTS \
             (SELECT 1 FROM destinations d WHERE d.id = p.destination_id)"
                .to_string(),
            "policies whose destination row is missing",
        ),
        (
            format!("SELECT COUNT(*) FROM {g} WHERE id < 1"),
            "tag rows with an id below 1",
        ),
    ];
    let mut problems = Vec::new();
    for (sql, what) in &checks {
        let n = int(db, sql)?;
        if n > 0 {
            problems.push(format!("{n} {what}"));
        }
    }
    if !problems.is_empty() {
        return Ok(Found::Unknown(format!(
            "{} holds rows netman cannot carry over exactly: {}",
            original.era,
            problems.join("; ")
        )));
    }
    Ok(Found::Original(original))
}

/// The original's `policies_info.last_updated` in nanoseconds, as high as any reader could have
/// seen it: its Go driver reads the TIMESTAMP's wall-clock value as UTC; where the session's time
/// zone is not UTC the true instant differs, and the larger of the two is taken so that the value
/// netman continues from is never below what a cell has cached.
fn original_last_updated(db: &mut dyn Inspect) -> Result<i64, String> {
    let sql = match db.kind() {
        DatabaseType::Postgres => {
            "SELECT GREATEST(\
             CAST(EXTRACT(EPOCH FROM last_updated) * 1000000 AS BIGINT), \
             CAST(EXTRACT(EPOCH FROM (last_updated AT TIME ZONE current_setting('TimeZone'))) \
             * 1000000 AS BIGINT)) FROM policies_info"
        }
        _ => {
            "SELECT GREATEST(\
             TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', last_updated), \
             CAST(UNIX_TIMESTAMP(last_updated) * 1000000 AS SIGNED)) FROM policies_info"
        }
    };
    Ok(int(db, sql)? * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lite(rusqlite::Connection);

    impl Inspect for Lite {
        fn kind(&self) -> DatabaseType {
            DatabaseType::Sqlite
        }
        fn query(&mut self, sql: &str) -> Result<Rows, String> {
            let mut stmt = self.0.prepare(sql).map_err(|e| e.to_string())?;
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Some(String::from_utf8_lossy(t).into_owned())
                                }
                                other => Some(format!("{other:?}")),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
        }
    }

    fn lite(sql: &str) -> Lite {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(sql).unwrap();
        Lite(c)
    }

    #[test]
    fn an_empty_database_is_empty() {
        assert_eq!(detect(&mut lite("")).unwrap(), Found::Empty);
    }

    #[test]
    fn netman_is_known_by_its_migrations_table() {
        let mut db = lite(
            "CREATE TABLE netman_migrations (version INTEGER, name TEXT, applied_at INTEGER); \
             INSERT INTO netman_migrations VALUES (1, 'x', 0), (2, 'y', 0);",
        );
        assert_eq!(detect(&mut db).unwrap(), Found::Netman { version: 2 });
    }

    #[test]
    fn a_journal_means_an_interrupted_conversion() {
        let mut db = lite(&format!(
            "CREATE TABLE {JOURNAL_TABLE} (seq INTEGER, step TEXT); \
             INSERT INTO {JOURNAL_TABLE} VALUES (0, 'adopt'), (1, 'snapshot'); \
             CREATE TABLE netman_migrations (version INTEGER);"
        ));
        assert_eq!(
            detect(&mut db).unwrap(),
            Found::Interrupted {
                direction: "adopt".into(),
                done: vec!["snapshot".into()]
            }
        );
    }

    #[test]
    fn unknown_tables_are_named_and_egress_leftovers_explained() {
        let mut db = lite(
            "CREATE TABLE terminals (guid TEXT); CREATE TABLE other (x INTEGER); \
             CREATE TABLE policies (id INTEGER);",
        );
        let Found::Unknown(reason) = detect(&mut db).unwrap() else {
            panic!("not unknown")
        };
        assert!(reason.contains("unexpected tables: terminals"), "{reason}");
        assert!(reason.contains("dynamic-egress"), "{reason}");
        assert!(!reason.contains("other"), "{reason}");
    }

    #[test]
    fn other_programs_tables_leave_the_database_empty_for_the_store() {
        let mut db = lite("CREATE TABLE overlay_leases (x INTEGER);");
        assert_eq!(detect(&mut db).unwrap(), Found::Empty);
        assert_eq!(refuse_to_open(&mut db).unwrap(), None);
    }

    #[test]
    fn the_server_refuses_to_open_an_original_or_half_converted_database() {
        let mut db = lite("CREATE TABLE gorp_migrations (id TEXT);");
        assert!(refuse_to_open(&mut db)
            .unwrap()
            .unwrap()
            .contains("policy-server migrate"));
        let mut db = lite("CREATE TABLE groups (id INTEGER, guid TEXT);");
        assert!(refuse_to_open(&mut db).unwrap().is_some());
        let mut db = lite(&format!(
            "CREATE TABLE netman_migrations (version INTEGER); CREATE TABLE {JOURNAL_TABLE} (x INT);"
        ));
        assert!(refuse_to_open(&mut db)
            .unwrap()
            .unwrap()
            .contains("interrupted"));
        let mut db =
            lite("CREATE TABLE netman_migrations (version INTEGER); CREATE TABLE groups (id INT);");
        assert_eq!(refuse_to_open(&mut db).unwrap(), None);
    }

    fn gorp(ids: &[String]) -> String {
        let values: Vec<String> = ids.iter().map(|i| format!("('{i}')")).collect();
        format!(
            "CREATE TABLE gorp_migrations (id TEXT PRIMARY KEY, applied_at TEXT); \
             INSERT INTO gorp_migrations (id) VALUES {};",
            values.join(", ")
        )
    }

    #[test]
    fn a_newer_or_older_original_is_refused_by_its_bookkeeping() {
        let mut ids = head_migration_ids();
        ids.push("80".into());
        let Found::Unknown(reason) = detect(&mut lite(&gorp(&ids))).unwrap() else {
            panic!()
        };
        assert!(
            reason.contains("(80)") && reason.contains("newer"),
            "{reason}"
        );
        let ids = head_migration_ids();
        let older: Vec<String> = ids[..ids.len() - 3].to_vec();
        let Found::Unknown(reason) = detect(&mut lite(&gorp(&older))).unwrap() else {
            panic!()
        };
        assert!(
            reason.contains("77, 78, 79") && reason.contains("older"),
            "{reason}"
        );
    }

    #[test]
    fn head_ids_are_the_88_of_a_fresh_install() {
        let ids = head_migration_ids();
        assert_eq!(ids.len(), 88);
        assert_eq!(ids[0], "1");
        assert_eq!(ids[11], "3a");
        assert_eq!(ids.last().unwrap(), "79");
    }
}
