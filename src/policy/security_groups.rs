//! The original's `security_groups` table (its migrations 67, 75, 76), which netman keeps as it
//! is when it adopts a cf-networking database and carries through export and import: read for the
//! internal API's `GET /networking/:v/internal/security_groups` the way the original selects
//! (reference §3), for export, and written by import.

use crate::api::security_groups::{SecurityGroup, SecurityGroupsResponse};
use crate::db::error::database as db_error;
use crate::db::{Cell, Dialect, Error, Tx, Val};
use crate::policy::adopt::bridge::TxSql;
use crate::policy::adopt::detect;
use crate::policy::adopt::original_schema;

/// The internal API's query: groups bound to any of `space_guids` or globally (staging or running
/// default); `from` an id to start at (0: the start); `limit` the page size (0: no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityGroupsQuery {
    pub space_guids: Vec<String>,
    pub from: i64,
    pub limit: i64,
}

/// Whether the database has the table.
pub(crate) fn table_exists(tx: &mut dyn Tx) -> Result<bool, Error> {
    let tables = detect::tables(&mut TxSql::new(tx)).map_err(db_error)?;
    Ok(tables.contains("security_groups"))
}

/// Creates the table in the original's shape (SQLite: the same columns) if it is missing.
pub(crate) fn create_table(tx: &mut dyn Tx, dialect: Dialect) -> Result<(), Error> {
    match dialect {
        Dialect::Sqlite => tx.batch(
            "CREATE TABLE IF NOT EXISTS security_groups (id INTEGER PRIMARY KEY, \
             guid VARCHAR(36) NOT NULL UNIQUE, name VARCHAR(255) NOT NULL, rules TEXT, \
             staging_default BOOLEAN DEFAULT 0, running_default BOOLEAN DEFAULT 0, \
             staging_spaces TEXT, running_spaces TEXT)",
        ),
        Dialect::Postgres => tx.batch(original_schema::security_groups_statement(
            crate::db::DatabaseType::Postgres,
        )),
        Dialect::Mysql => tx.batch(original_schema::security_groups_statement(
            crate::db::DatabaseType::Mysql,
        )),
    }
}

/// A JSON column as text.
fn json_text(dialect: Dialect, column: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("CAST({column} AS TEXT)"),
        _ => column.to_string(),
    }
}

/// `column` (a JSON array of guids) holds any of `n` parameters.
fn overlaps(dialect: Dialect, column: &str, n: usize) -> String {
    match dialect {
        Dialect::Postgres => format!(
            "jsonb_exists_any({column}, ARRAY[{}])",
            vec!["CAST(? AS TEXT)"; n].join(", ")
        ),
        Dialect::Mysql => format!(
            "({})",
            vec![format!("JSON_CONTAINS({column}, JSON_QUOTE(?))"); n].join(" OR ")
        ),
        Dialect::Sqlite => format!(
            "EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.value IN ({}))",
            vec!["?"; n].join(", ")
        ),
    }
}

fn select(dialect: Dialect) -> String {
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
fn row(r: &[Cell]) -> Result<(i64, SecurityGroup), Error> {
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

/// One page as the original selects it: the defaults, plus groups bound to the spaces; ordered
/// by id from `from`; `next` is the id of the first group of the next page (0: none). `None`
/// when the database has no such table.
pub(crate) fn page(
    tx: &mut dyn Tx,
    dialect: Dialect,
    query: &SecurityGroupsQuery,
) -> Result<Option<SecurityGroupsResponse>, Error> {
    if !table_exists(tx)? {
        return Ok(None);
    }
    let mut sql = format!(
        "{} WHERE (staging_default = TRUE OR running_default = TRUE",
        select(dialect)
    );
    let mut params: Vec<Val<'_>> = Vec::new();
    let n = query.space_guids.len();
    if n > 0 {
        sql.push_str(&format!(
            " OR {} OR {}",
            overlaps(dialect, "staging_spaces", n),
            overlaps(dialect, "running_spaces", n)
        ));
        for _ in 0..2 {
            params.extend(query.space_guids.iter().map(|s| Val::Str(s)));
        }
    }
    sql.push(')');
    if query.from > 0 {
        sql.push_str(" AND id >= ?");
        params.push(Val::Int(query.from));
    }
    sql.push_str(" ORDER BY id");
    if query.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", query.limit + 1));
    }
    let rows = tx.rows(&sql, &params)?;
    let mut groups = rows.iter().map(|r| row(r)).collect::<Result<Vec<_>, _>>()?;
    let mut next = 0;
    if query.limit > 0 && groups.len() as i64 > query.limit {
        next = groups[query.limit as usize].0;
        groups.truncate(query.limit as usize);
    }
    Ok(Some(SecurityGroupsResponse {
        next,
        security_groups: groups.into_iter().map(|(_, g)| g).collect(),
    }))
}

/// Every group ordered by id, `None` when there is no table.
pub(crate) fn all(tx: &mut dyn Tx, dialect: Dialect) -> Result<Option<Vec<SecurityGroup>>, Error> {
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
pub(crate) fn replace_all(
    tx: &mut dyn Tx,
    dialect: Dialect,
    groups: &[SecurityGroup],
) -> Result<(), Error> {
    create_table(tx, dialect)?;
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
    Ok(())
}
