//! `policy-server export` and `policy-server import` on the configured database.

use super::document::{rfc3339, Document, ReleasedTag, FORMAT, VERSION};
use super::import::{self, existing_data, Imported};
use crate::db::{DatabaseConfig, Db, Dialect, Error, Options, Tx};
use crate::policy::adopt::bridge::TxSql;
use crate::policy::adopt::detect::{detect, Found};
use crate::policy::sd::store as sd_store;
use crate::policy::security_groups;
use crate::policy::store::sql_store::refuse_foreign_schema;
use crate::policy::store::{
    migrate_locked, validate_tag_length, Engine, PolicyFilter, SCHEMA_VERSION,
};

/// Reads everything the policy store holds into one document, from one snapshot (the server may
/// keep running). The database must hold netman's schema; nothing is written.
pub fn export(config: &DatabaseConfig, tag_length: u8) -> Result<Document, String> {
    validate_tag_length(tag_length).map_err(|e| e.to_string())?;
    let db =
        Db::open(config, Options::default(), |tx| exportable(tx)).map_err(|e| e.to_string())?;
    let engine = Engine::new(db.dialect(), tag_length.into());
    let doc = db
        .snapshot(|tx| -> Result<Document, Error> {
            check_pool(tx, tag_length)?;
            let (internal_domains, internal_routes) = match sd_store::exported(tx)? {
                Some((domains, routes)) => (Some(domains), Some(routes)),
                None => (None, None),
            };
            Ok(Document {
                format: FORMAT.into(),
                version: VERSION,
                exported_at: rfc3339(crate::clock::unix_secs()),
                exported_from: db.dialect().name().into(),
                tag_length,
                last_updated: engine.last_updated(tx)?,
                tags: engine.tags(tx)?,
                policies: engine.list(tx, &PolicyFilter::All)?,
                security_groups: security_groups::all(tx)?,
                released_tags: engine
                    .released_tags(tx)?
                    .into_iter()
                    .map(|(tag, released_at)| ReleasedTag { tag, released_at })
                    .collect(),
                internal_domains,
                internal_routes,
            })
        })
        .map_err(|e| e.to_string())?;
    // What import would refuse is not written out as if it were a good export.
    doc.validate(tag_length).map_err(|problems| {
        format!(
            "the database holds data an import would refuse:\n  {}",
            problems.join("\n  ")
        )
    })?;
    Ok(doc)
}

/// Export reads only netman's own schema at the version this binary knows.
fn exportable(tx: &mut dyn Tx) -> Result<(), Error> {
    let found = detect(&mut TxSql::new(tx)).map_err(Error::Database)?;
    let refuse = |m: String| Err(Error::Refused(format!("{m}. Nothing was exported")));
    match found {
        Found::Netman { version } if version == SCHEMA_VERSION => Ok(()),
        Found::Netman { version } if version > SCHEMA_VERSION => refuse(format!(
            "netman's schema is at version {version}, newer than this binary knows \
             ({SCHEMA_VERSION}): export with a newer policy-server"
        )),
        Found::Netman { version } => refuse(format!(
            "netman's schema is at version {version}: run `policy-server migrate` first"
        )),
        Found::Empty => refuse("the database holds no policy tables".into()),
        Found::Original(o) => refuse(format!(
            "the database holds {}: run `policy-server migrate` to adopt it first",
            o.era
        )),
        Found::Interrupted { direction, .. } => refuse(format!(
            "a conversion ({direction}) of this database stopped half-way: finish it with \
             `policy-server migrate` first"
        )),
        Found::Unknown(reason) => refuse(format!("unknown schema: {reason}")),
    }
}

/// The tag pool must be the one `tag_length` gives (2^(8L)-1 slots): otherwise tags would be
/// read with the wrong width.
fn check_pool(tx: &mut dyn Tx, tag_length: u8) -> Result<(), Error> {
    let pool = tx
        .rows("SELECT COALESCE(MAX(id), 0) FROM \"groups\"", &[])?
        .first()
        .map(|r| r[0].int())
        .transpose()?
        .unwrap_or(0);
    let want = (1i64 << (8 * tag_length as i64)) - 1;
    if pool != want {
        return Err(Error::Refused(format!(
            "the database's tag pool has {pool} slots but tag_length {tag_length} gives {want}: \
             set tag_length to the one the database was created with"
        )));
    }
    Ok(())
}

/// Parses and validates a document as [`import`] does, without touching any database; returns
/// it for a summary.
pub fn check(tag_length: u8, bytes: &[u8]) -> Result<Document, String> {
    validate_tag_length(tag_length).map_err(|e| e.to_string())?;
    let doc = Document::parse(bytes).map_err(|e| format!("{e}. Nothing was written"))?;
    doc.validate(tag_length).map_err(|problems| {
        format!(
            "the document is refused, nothing was written:\n  {}",
            problems.join("\n  ")
        )
    })?;
    Ok(doc)
}

/// Loads an export document into the configured database. The whole document is parsed and
/// validated before the database is touched; the data goes in as one transaction, into a
/// database without policies, tags, security groups or internal routes, or, with `replace`,
/// replacing them.
pub fn import(
    config: &DatabaseConfig,
    tag_length: u8,
    bytes: &[u8],
    replace: bool,
) -> Result<Imported, String> {
    let doc = check(tag_length, bytes)?;
    let db = Db::open(config, Options::default(), |tx| {
        refuse_foreign_schema(tx)?;
        migrate_locked(tx, tag_length)?;
        // MySQL commits DDL at once: the table is created here, before the import's
        // transaction, and only when the import is going to run.
        if tx.dialect() == Dialect::Mysql
            && doc.security_groups.is_some()
            && !security_groups::table_exists(tx)?
        {
            if let (Some(what), false) = (existing_data(tx)?, replace) {
                return Err(not_empty(&what));
            }
            security_groups::create_table(tx)?;
        }
        // Service discovery's tables, as a policy server makes them at start, when the document
        // brings routes and the import is going to run.
        if doc.internal_routes.is_some() && !sd_store::has_tables(tx)? {
            if let (Some(what), false) = (existing_data(tx)?, replace) {
                return Err(not_empty(&what));
            }
            sd_store::migrate(tx)?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    db.write(|tx| import::import(tx, &doc, replace))
        .map_err(|e| e.to_string())
}

pub(crate) fn not_empty(what: &str) -> Error {
    Error::Refused(format!(
        "the database is not empty ({what}); import refuses to mix a document with existing \
         data (--replace overwrites it). Nothing was written"
    ))
}
