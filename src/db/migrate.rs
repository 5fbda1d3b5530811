//! Versioned schema migrations. Each store's tables form a [`Schema`] whose applied versions are
//! recorded in a table of its own (`netman_migrations` for the policy tables, `overlay_migrations`
//! for the leases); [`crate::db::Db::open`] runs [`apply`] under the database's migration lock
//! ([`crate::db::Dialect::migration_lock`]), so one migrator runs at a time. Every statement is
//! written to be re-runnable (`IF NOT EXISTS`), because MySQL commits DDL implicitly and a migrator
//! may die half-way.

use super::dialect::Dialect;
use super::error::{context, Error};
use super::tx::{Tx, Val};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: Vec<&'static str>,
}

/// One store's tables: where their versions are recorded, the newest version this binary knows,
/// and the migrations in each dialect.
pub struct Schema {
    pub table: &'static str,
    pub known: i64,
    pub migrations: fn(Dialect) -> Vec<Migration>,
}

/// The newest version recorded in the migrations table `table` (created if missing).
fn version_in(tx: &mut dyn Tx, table: &str) -> Result<i64, Error> {
    tx.batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL PRIMARY KEY, \
         name VARCHAR(255) NOT NULL, applied_at BIGINT NOT NULL)"
    ))?;
    let rows = tx.rows(
        &format!("SELECT COALESCE(MAX(version), 0) FROM {table}"),
        &[],
    )?;
    rows.first()
        .map(|r| r[0].int())
        .transpose()
        .map(|v| v.unwrap_or(0))
}

/// Applies the migrations newer than the version recorded for `schema`, recording each; refuses a
/// schema newer than it knows. The caller holds the migration lock. Returns the version found.
pub fn apply(tx: &mut dyn Tx, schema: &Schema) -> Result<i64, Error> {
    let found = version_in(tx, schema.table)?;
    if found > schema.known {
        return Err(Error::SchemaTooNew {
            found,
            known: schema.known,
        });
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let migrations = (schema.migrations)(tx.dialect());
    for m in migrations.into_iter().filter(|m| m.version > found) {
        log::info!("store: applying migration {} ({})", m.version, m.name);
        for s in &m.statements {
            tx.batch(s)
                .map_err(|e| context(e, &format!("migration {}", m.version)))?;
        }
        tx.exec(
            &format!(
                "INSERT INTO {} (version, name, applied_at) VALUES (?, ?, ?)",
                schema.table
            ),
            &[Val::Int(m.version), Val::Str(m.name), Val::Int(now)],
        )?;
    }
    Ok(found)
}
