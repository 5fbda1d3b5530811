//! Writing a validated export document into netman's schema in one transaction: every tag onto
//! its own pool slot, destinations and policies in the document's order (so the internal API
//! lists them in that order), security groups, the release times of free tags (the quarantine
//! goes with the data), service discovery's domains and routes, and a version past both the
//! document's and the database's.

use super::document::Document;
use crate::db::error::database as db_error;
use crate::db::{Dialect, Error, Tx, Val};
use crate::policy::sd::store as sd_store;
use crate::policy::security_groups;
use std::collections::HashMap;

/// Rows per multi-row INSERT (parameters stay well below every dialect's limit).
const CHUNK: usize = 500;

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub tags: usize,
    pub destinations: usize,
    pub policies: usize,
    pub security_groups: Option<usize>,
    /// Free tags whose release time came with the document.
    pub released_tags: usize,
    /// Internal routes written (none: the document had no service discovery sections).
    pub internal_routes: Option<usize>,
    /// Internal routes the database held that `--replace` removed.
    pub internal_routes_removed: usize,
    /// `--replace` with a document without service discovery sections emptied the routes and
    /// reset the domains to the default one.
    pub internal_routes_reset: bool,
    pub last_updated: i64,
}

/// What the database holds already, if anything (an import refuses it without `--replace`).
pub(crate) fn existing_data(tx: &mut dyn Tx) -> Result<Option<String>, Error> {
    let count = |tx: &mut dyn Tx, sql: &str| -> Result<i64, Error> {
        tx.rows(sql, &[])?
            .first()
            .map(|r| r[0].int())
            .unwrap_or(Ok(0))
    };
    let policies = count(tx, "SELECT COUNT(*) FROM policies")?;
    let tags = count(tx, "SELECT COUNT(*) FROM \"groups\" WHERE guid IS NOT NULL")?;
    let groups = if security_groups::table_exists(tx)? {
        count(tx, "SELECT COUNT(*) FROM security_groups")?
    } else {
        0
    };
    let (routes, domains) = sd_store::held(tx)?;
    Ok((policies + tags + groups + routes + domains > 0).then(|| {
        format!(
            "{policies} policies, {tags} tags in use, {groups} security groups, {routes} \
             internal routes, {domains} internal domains besides {}",
            crate::api::sd::DEFAULT_DOMAIN
        )
    }))
}

/// Inserts `rows` (each `width` parameters) with multi-row statements `head VALUES (...), ...
/// tail`.
fn insert_rows(
    tx: &mut dyn Tx,
    head: &str,
    tail: &str,
    width: usize,
    rows: &[Vec<Val<'_>>],
) -> Result<(), Error> {
    let one = format!("({})", vec!["?"; width].join(", "));
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "{head} VALUES {}{tail}",
            vec![one.as_str(); chunk.len()].join(", ")
        );
        let params: Vec<Val<'_>> = chunk.iter().flatten().copied().collect();
        tx.exec(&sql, &params)?;
    }
    Ok(())
}

/// Loads `doc` (validated against this tag length) into the database. The caller runs this in
/// one transaction, on a database that holds nothing or, with `replace`, whose data is replaced.
pub(crate) fn import(tx: &mut dyn Tx, doc: &Document, replace: bool) -> Result<Imported, Error> {
    let dialect = tx.dialect();
    // First, as every policy writer does: writers of the store wait for this transaction.
    let before: i64 = tx
        .rows(
            &format!(
                "SELECT last_updated FROM policies_info WHERE id = 1{}",
                dialect.for_update()
            ),
            &[],
        )?
        .first()
        .map(|r| r[0].int())
        .ok_or_else(|| db_error("policies_info row missing"))??;
    let mut internal_routes_removed = 0;
    let mut internal_routes_reset = false;
    if let Some(what) = existing_data(tx)? {
        if !replace {
            return Err(super::command::not_empty(&what));
        }
        tx.exec("DELETE FROM policies", &[])?;
        tx.exec("DELETE FROM destinations", &[])?;
        // Tags the document does not give back are released now: cells may still mark with
        // them, so they rest in quarantine like any other release.
        tx.exec(
            "UPDATE \"groups\" SET guid = NULL, type = NULL, released_at = ? \
             WHERE guid IS NOT NULL",
            &[Val::Int(crate::clock::unix_nanos() / 1_000_000)],
        )?;
        if doc.security_groups.is_none() && security_groups::table_exists(tx)? {
            tx.exec("DELETE FROM security_groups", &[])?;
        }
        // A document without service discovery sections replaces the routes with none and the
        // domains with the default one.
        if doc.internal_routes.is_none() && sd_store::has_tables(tx)? {
            internal_routes_removed =
                sd_store::import(tx, &[crate::api::sd::DEFAULT_DOMAIN.to_string()], &[])?;
            internal_routes_reset = true;
        }
    }

    // Tags onto their slots: the pool holds every id up to 2^(8L)-1 already.
    let ids: Vec<i64> = doc
        .tags
        .iter()
        .map(|t| i64::from_str_radix(&t.tag, 16).map_err(|e| db_error(e.to_string())))
        .collect::<Result<_, _>>()?;
    let tag_rows: Vec<Vec<Val<'_>>> = doc
        .tags
        .iter()
        .zip(&ids)
        .map(|(t, id)| vec![Val::Int(*id), Val::Str(&t.id), Val::Str(&t.kind)])
        .collect();
    let upsert = match dialect {
        Dialect::Mysql => " ON DUPLICATE KEY UPDATE guid = VALUES(guid), type = VALUES(type)",
        _ => " ON CONFLICT (id) DO UPDATE SET guid = excluded.guid, type = excluded.type",
    };
    insert_rows(
        tx,
        "INSERT INTO \"groups\" (id, guid, type)",
        upsert,
        3,
        &tag_rows,
    )?;
    let tag_of: HashMap<&str, i64> = doc
        .tags
        .iter()
        .zip(&ids)
        .map(|(t, id)| (t.id.as_str(), *id))
        .collect();

    // Destinations in order of first use, policies in the document's order, with ids from 1.
    let mut destinations: HashMap<(i64, i64, i64, &str), i64> = HashMap::new();
    let mut destination_rows: Vec<Vec<Val<'_>>> = Vec::new();
    let mut policy_rows: Vec<Vec<Val<'_>>> = Vec::new();
    for p in &doc.policies {
        let d = &p.destination;
        let group = tag_of[d.id.as_str()];
        let next = destinations.len() as i64 + 1;
        let key = (group, d.ports.start, d.ports.end, d.protocol.as_str());
        let id = *destinations.entry(key).or_insert_with(|| {
            let port = if d.ports.start == d.ports.end {
                d.ports.start
            } else {
                0
            };
            destination_rows.push(vec![
                Val::Int(next),
                Val::Int(group),
                Val::Int(port),
                Val::Str(&d.protocol),
                Val::Int(d.ports.start),
                Val::Int(d.ports.end),
            ]);
            next
        });
        policy_rows.push(vec![
            Val::Int(policy_rows.len() as i64 + 1),
            Val::Int(tag_of[p.source.id.as_str()]),
            Val::Int(id),
        ]);
    }
    insert_rows(
        tx,
        "INSERT INTO destinations (id, group_id, port, protocol, start_port, end_port)",
        "",
        6,
        &destination_rows,
    )?;
    insert_rows(
        tx,
        "INSERT INTO policies (id, group_id, destination_id)",
        "",
        3,
        &policy_rows,
    )?;
    if dialect == Dialect::Postgres {
        for t in ["destinations", "policies"] {
            tx.batch(&format!(
                "SELECT setval(pg_get_serial_sequence('{t}', 'id'), \
                 (SELECT COALESCE(MAX(id), 0) + 1 FROM {t}), false)"
            ))?;
        }
    }
    // Release times onto the free slots, keeping the later one where this database released the
    // slot itself (its cells may still mark with it).
    let released_rows: Vec<Vec<Val<'_>>> = doc
        .released_tags
        .iter()
        .map(|r| {
            let id = i64::from_str_radix(&r.tag, 16).map_err(|e| db_error(e.to_string()))?;
            Ok(vec![Val::Int(id), Val::Int(r.released_at)])
        })
        .collect::<Result<_, Error>>()?;
    let keep_later = match dialect {
        Dialect::Mysql => {
            " ON DUPLICATE KEY UPDATE released_at = CASE WHEN VALUES(released_at) > released_at \
             THEN VALUES(released_at) ELSE released_at END"
        }
        _ => {
            " ON CONFLICT (id) DO UPDATE SET released_at = CASE WHEN excluded.released_at > \
             \"groups\".released_at THEN excluded.released_at ELSE \"groups\".released_at END"
        }
    };
    insert_rows(
        tx,
        "INSERT INTO \"groups\" (id, released_at)",
        keep_later,
        2,
        &released_rows,
    )?;
    let security_groups = match &doc.security_groups {
        Some(groups) => {
            security_groups::replace_all(tx, groups)?;
            Some(groups.len())
        }
        None => None,
    };
    let internal_routes = match (&doc.internal_domains, &doc.internal_routes) {
        (Some(domains), Some(routes)) => {
            internal_routes_removed = sd_store::import(tx, domains, routes)?;
            Some(routes.len())
        }
        _ => None,
    };
    let version = crate::clock::unix_nanos()
        .max(doc.last_updated + 1)
        .max(before + 1);
    tx.exec(
        "UPDATE policies_info SET last_updated = ? WHERE id = 1",
        &[Val::Int(version)],
    )?;
    Ok(Imported {
        tags: doc.tags.len(),
        destinations: destination_rows.len(),
        policies: policy_rows.len(),
        security_groups,
        released_tags: released_rows.len(),
        internal_routes,
        internal_routes_removed,
        internal_routes_reset,
        last_updated: version,
    })
}
