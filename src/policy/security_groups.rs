//! The original's `security_groups` table (its migrations 67, 75, 76), which netman keeps as it
//! is when it adopts a cf-networking database and carries through export and import: read in
//! full for export, written by import. (Serving it on the internal API, `GET
//! /networking/:v/internal/security_groups`, belongs to the dynamic-ASG work.)

use crate::api::security_groups::SecurityGroup;
use crate::db::error::database as db_error;
use crate::db::{Cell, Dialect, Error, Tx, Val};
use crate::policy::adopt::bridge::TxSql;
use crate::policy::adopt::detect;
use crate::policy::adopt::original_schema;

/// Whether the database has the table.
pub(crate) fn table_exists(tx: &mut dyn Tx) -> Result<bool, Error> {
    crate::policy::adopt::bridge::has_table(tx, "security_groups")
}

/// The table on SQLite: the original's columns.
pub(crate) const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS security_groups (\
     id INTEGER PRIMARY KEY, guid VARCHAR(36) NOT NULL UNIQUE, name VARCHAR(255) NOT NULL, \
     rules TEXT, staging_default BOOLEAN DEFAULT 0, running_default BOOLEAN DEFAULT 0, \
     staging_spaces TEXT, running_spaces TEXT)";

/// Creates the table in the original's shape (SQLite: the same columns) if it is missing.
pub(crate) fn create_table(tx: &mut dyn Tx) -> Result<(), Error> {
    match tx.dialect() {
        Dialect::Sqlite => tx.batch(SQLITE_TABLE),
        Dialect::Postgres => tx.batch(original_schema::security_groups_statement(
            crate::db::DatabaseType::Postgres,
        )),
        Dialect::Mysql => tx.batch(original_schema::security_groups_statement(
            crate::db::DatabaseType::Mysql,
        )),
    }
}

/// A JSON column as text.
pub(crate) fn json_text(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("CAST({column} AS TEXT)"),
        _ => column.to_string(),
    }
}

pub(crate) fn select(dialect: Dialect) -> String {
    format!(
        "SELECT id, guid, name, rules, staging_default, running_default, {}, {} \
         FROM security_groups",
        json_text(dialect, "staging_spaces"),
        json_text(dialect, "running_spaces")
    )
}

fn spaces(cell: &Cell, guid: &str, column: &str) -> Result<Vec<String>, Error> {
    match cell {
        Cell::Null => Ok(Vec::new()),
        other => serde_json::from_str(&other.text()?).map_err(|e| {
            db_error(format!(
                "security_groups row {guid:?}: {column} is not a JSON array of guids: {e}"
            ))
        }),
    }
}

/// One row as the API shows it; a damaged row is an error, never an empty group.
pub(crate) fn row(r: &[Cell]) -> Result<(i64, SecurityGroup), Error> {
    let guid = r[1].text()?;
    let rules = match &r[3] {
        Cell::Null => {
            return Err(db_error(format!(
                "security_groups row {guid:?} has no rules"
            )))
        }
        c => c.text()?,
    };
    let flag = |c: &Cell| -> Result<bool, Error> {
        Ok(match c {
            Cell::Null => false,
            Cell::Int(i) => *i != 0,
            Cell::Str(s) => matches!(s.as_str(), "1" | "t" | "true"),
        })
    };
    Ok((
        r[0].int()?,
        SecurityGroup {
            name: r[2].text()?,
            rules,
            staging_default: flag(&r[4])?,
            running_default: flag(&r[5])?,
            staging_space_guids: spaces(&r[6], &guid, "staging_spaces")?,
            running_space_guids: spaces(&r[7], &guid, "running_spaces")?,
            guid,
        },
    ))
}

/// Every group ordered by id, `None` when there is no table.
pub(crate) fn all(tx: &mut dyn Tx) -> Result<Option<Vec<SecurityGroup>>, Error> {
    let dialect = tx.dialect();
    if !table_exists(tx)? {
        return Ok(None);
    }
    let rows = tx.rows(&format!("{} ORDER BY id", select(dialect)), &[])?;
    rows.iter()
        .map(|r| row(r).map(|(_, g)| g))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Writes `groups` (ids in their order) into the table, creating it if needed, after deleting
/// what was there.
pub(crate) fn replace_all(tx: &mut dyn Tx, groups: &[SecurityGroup]) -> Result<(), Error> {
    let dialect = tx.dialect();
    // On MySQL the caller creates it before the import's transaction (DDL would commit it).
    if !table_exists(tx)? {
        create_table(tx)?;
    }
    tx.exec("DELETE FROM security_groups", &[])?;
    let (json, flag) = match dialect {
        Dialect::Postgres => ("CAST(? AS JSONB)", "(CAST(? AS INTEGER) = 1)"),
        _ => ("?", "(? = 1)"),
    };
    let sql = format!(
        "INSERT INTO security_groups (id, guid, name, rules, staging_default, running_default, \
         staging_spaces, running_spaces) VALUES (?, ?, ?, ?, {flag}, {flag}, {json}, {json})"
    );
    for (i, g) in groups.iter().enumerate() {
        let (staging, running) = (
            serde_json::to_string(&g.staging_space_guids).unwrap_or_default(),
            serde_json::to_string(&g.running_space_guids).unwrap_or_default(),
        );
        tx.exec(
            &sql,
            &[
                Val::Int(i as i64 + 1),
                Val::Str(&g.guid),
                Val::Str(&g.name),
                Val::Str(&g.rules),
                Val::Int(g.staging_default as i64),
                Val::Int(g.running_default as i64),
                Val::Str(&staging),
                Val::Str(&running),
            ],
        )?;
    }
    if dialect == Dialect::Postgres {
        tx.batch(
            "SELECT setval(pg_get_serial_sequence('security_groups', 'id'), \
             (SELECT COALESCE(MAX(id), 0) + 1 FROM security_groups), false)",
        )?;
    }
    // Cells that read the groups before the import see the version move and read again.
    let tables = detect::tables(&mut TxSql::new(tx)).map_err(db_error)?;
    if tables.contains("security_groups_info") {
        crate::policy::asg::store::bump(tx)?;
    }
    Ok(())
}
