//! `policy-server migrate [--dry-run] [--to-original]`: bring the database to netman's schema,
//! whatever it holds, under the migration lock and, on PostgreSQL, in one transaction.
//!
//! | the database holds | `migrate` | `migrate --to-original` |
//! |---|---|---|
//! | nothing of the policy store | creates netman's schema | refused (nothing to convert) |
//! | netman's schema | applies missing migrations (none: changes nothing) | converts to the original's HEAD |
//! | the original's (HEAD or netman-era) | adopts it in place | refused (it is the original's) |
//! | an interrupted conversion | finishes it, if it was an adoption | finishes it, if it was a switch back |
//! | anything else | refused, nothing changed | refused, nothing changed |

use super::bridge::TxSql;
use super::convert;
use super::detect::{detect, Found};
use crate::db::{DatabaseConfig, DatabaseType, Db, Error, Options, Tx};
use crate::policy::store::{migrate_locked, validate_tag_length, SCHEMA_VERSION};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Report what would be done; write nothing.
    pub dry_run: bool,
    /// Convert netman's schema back to the original's (the way back).
    pub to_original: bool,
}

/// Runs `migrate` on the configured database (retrying until it answers, as the server does)
/// and returns the report: what was found and what was (or would be) done.
pub fn migrate(
    config: &DatabaseConfig,
    tag_length: u8,
    options: MigrateOptions,
) -> Result<Vec<String>, String> {
    validate_tag_length(tag_length).map_err(|e| e.to_string())?;
    let path = std::path::Path::new(&config.connection_string);
    if options.dry_run && config.kind == DatabaseType::Sqlite && !path.exists() {
        // Opening would create the file.
        return Ok(vec![
            format!(
                "{} does not exist: migrate would create it with netman's schema (version \
                 {SCHEMA_VERSION})",
                path.display()
            ),
            "nothing was changed (--dry-run)".into(),
        ]);
    }
    let report = Mutex::new(Vec::new());
    Db::open(config, Options::default(), |tx| {
        let lines = run(tx, tag_length, options).map_err(Error::Refused)?;
        *report.lock().unwrap_or_else(|e| e.into_inner()) = lines;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(report.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// The decision and the work, on the migration connection (in its transaction on PostgreSQL).
fn run(tx: &mut dyn Tx, tag_length: u8, options: MigrateOptions) -> Result<Vec<String>, String> {
    let MigrateOptions {
        dry_run,
        to_original,
    } = options;
    let mut sql = TxSql::new(tx);
    let found = detect(&mut sql)?;
    if to_original {
        return convert::to_original(&mut sql, tag_length, SCHEMA_VERSION, dry_run)
            .map(|r| r.lines);
    }
    let mut create = |s: &mut TxSql<'_>| -> Result<i64, String> {
        migrate_locked(s.tx, tag_length).map_err(|e| e.to_string())?;
        Ok(SCHEMA_VERSION)
    };
    match found {
        Found::Empty if dry_run => Ok(vec![
            format!(
                "the database holds no policy tables: migrate would create netman's schema \
                 (version {SCHEMA_VERSION}) with a pool of {} tags",
                (1u32 << (8 * tag_length as u32)) - 1
            ),
            "nothing was changed (--dry-run)".into(),
        ]),
        Found::Empty => {
            create(&mut sql)?;
            Ok(vec![format!(
                "created netman's schema (version {SCHEMA_VERSION})"
            )])
        }
        Found::Netman { version } if version > SCHEMA_VERSION => Err(format!(
            "netman's schema in the database is at version {version}, newer than this binary \
             knows ({SCHEMA_VERSION}): use a newer policy-server. Nothing was changed"
        )),
        Found::Netman { version } if version == SCHEMA_VERSION => {
            if !dry_run {
                // Re-runnable: refills tag slots only if some are missing.
                create(&mut sql)?;
            }
            Ok(vec![format!(
                "netman's schema is at version {version}, the newest this binary knows: \
                 nothing to do"
            )])
        }
        Found::Netman { version } if dry_run => Ok(vec![
            format!(
                "netman's schema is at version {version}: migrate would apply migrations {} \
                 to {SCHEMA_VERSION}",
                version + 1
            ),
            "nothing was changed (--dry-run)".into(),
        ]),
        Found::Netman { version } => {
            create(&mut sql)?;
            Ok(vec![format!(
                "migrated netman's schema from version {version} to {SCHEMA_VERSION}"
            )])
        }
        Found::Original(_) | Found::Interrupted { .. } => {
            convert::adopt(&mut sql, tag_length, dry_run, &mut create).map(|r| r.lines)
        }
        Found::Unknown(reason) => Err(format!(
            "refusing to migrate a schema this binary does not know: {reason}. Nothing was \
             changed"
        )),
    }
}
