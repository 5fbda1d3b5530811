//! The policy store's SQL, written once over [`Tx`] for every dialect ([`crate::db::Dialect`]
//! covers the differences). Create and delete follow the reference §4.3, tags §4.2, except that a
//! released tag rests in quarantine before it is handed out again (see [`Engine::allocate`]).
//!
//! Concurrency (PostgreSQL and MySQL, READ COMMITTED): every create/delete first updates the one
//! `policies_info` row, so writers of policies run one at a time. Tag allocation and release
//! additionally lock the `groups` row they use (`FOR UPDATE`), so a concurrent `create_tag` can never
//! take a slot that is being released or assigned, and `groups.guid` is UNIQUE: a lost race ends in a
//! unique-key error, which [`crate::db::Db`] retries ([`DbError::LostRace`]).

use super::{LoggedChange, PolicyFilter, StoreError, TagPool};
use crate::api::policy::{Destination, Policy, Ports, Source, Tag};
use crate::db::{Dialect, Error as DbError, Param, Tx, TxError, Val};
use std::collections::{BTreeSet, HashMap};

/// What a policy transaction ends in besides its value: the database's error, or an answer of the
/// store (tag pool exhausted, tag type conflict).
#[derive(Debug)]
pub(crate) enum Error {
    Db(DbError),
    Store(StoreError),
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Error {
        Error::Db(e)
    }
}

impl TxError for Error {
    fn db(&self) -> Option<&DbError> {
        match self {
            Error::Db(e) => Some(e),
            Error::Store(_) => None,
        }
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> StoreError {
        match e {
            Error::Db(e) => e.into(),
            Error::Store(e) => e,
        }
    }
}

fn lost_race(msg: impl Into<String>) -> Error {
    Error::Db(DbError::LostRace(msg.into()))
}

/// The algorithms for one database and tag pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Engine {
    pub dialect: Dialect,
    pub tag_length: u8,
    /// How long a released tag is not handed out again, in milliseconds.
    pub quarantine_ms: i64,
}

const LIST_SELECT: &str =
    "SELECT sg.guid, sg.id, dg.guid, dg.id, d.start_port, d.end_port, d.protocol, p.id \
     FROM policies p \
     JOIN \"groups\" sg ON sg.id = p.group_id \
     JOIN destinations d ON d.id = p.destination_id \
     JOIN \"groups\" dg ON dg.id = d.group_id";

/// How long a change stays in `policy_changes`: a server that has not looked for longer wakes all
/// of its watches once instead.
const CHANGE_LOG_NANOS: i64 = 10 * 60 * 1_000_000_000;
/// Changes read at once; a server further behind wakes all of its watches.
const MAX_CHANGES_READ: usize = 1000;
/// Ids logged with one change at most (in JSON bytes); a larger batch is logged as unknown, and
/// the servers reading it wake all of their watches.
const MAX_LOGGED_IDS: usize = 1 << 20;

/// The app ids a batch touches as `policy_changes.ids` stores them: a JSON array, or `""` when
/// too large to log.
fn logged_ids(policies: &[Policy]) -> String {
    let ids: BTreeSet<&str> = policies
        .iter()
        .flat_map(|p| [p.source.id.as_str(), p.destination.id.as_str()])
        .collect();
    let json = serde_json::to_string(&ids).unwrap_or_default();
    if json.len() > MAX_LOGGED_IDS {
        String::new()
    } else {
        json
    }
}

/// `?, ?, ?` for n parameters.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn unique(ids: &[String]) -> Vec<&str> {
    ids.iter()
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Whether a row of `table` has `column = id`.
fn referenced(tx: &mut dyn Tx, table: &str, column: &str, id: i64) -> Result<bool, DbError> {
    let sql = format!("SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1");
    Ok(!tx.rows(&sql, &[Val::Int(id)])?.is_empty())
}

impl Engine {
    pub fn new(dialect: Dialect, pool: TagPool) -> Engine {
        Engine {
            dialect,
            tag_length: pool.length,
            quarantine_ms: pool.quarantine.as_millis().min(i64::MAX as u128) as i64,
        }
    }

    /// The highest tag of the pool: 2^(8L) - 1.
    pub fn max_tag(&self) -> i64 {
        (1i64 << (8 * self.tag_length as i64)) - 1
    }

    /// Upper-case hex, zero-padded to 2L characters.
    pub fn tag(&self, id: i64) -> String {
        format!("{:0width$X}", id, width = 2 * self.tag_length as usize)
    }

    /// Moves `last_updated` to now, or one nanosecond past its value if the clock is behind, and
    /// logs the move with the app ids of `policies` in `policy_changes` (pruned to
    /// [`CHANGE_LOG_NANOS`]). The locked read of the version serialises writers of policies.
    fn touch(&self, tx: &mut dyn Tx, policies: &[Policy]) -> Result<(), DbError> {
        let sql = format!(
            "SELECT last_updated FROM policies_info WHERE id = 1{}",
            self.dialect.for_update()
        );
        let Some(row) = tx.rows(&sql, &[])?.into_iter().next() else {
            return Err(DbError::Database("policies_info row missing".into()));
        };
        let prev = row[0].int()?;
        let version = crate::clock::unix_nanos().max(prev.saturating_add(1));
        tx.exec(
            "UPDATE policies_info SET last_updated = ? WHERE id = 1",
            &[Val::Int(version)],
        )?;
        let ids = logged_ids(policies);
        tx.exec(
            "INSERT INTO policy_changes (version, prev_version, ids) VALUES (?, ?, ?)",
            &[Val::Int(version), Val::Int(prev), Val::Str(&ids)],
        )?;
        tx.exec(
            "DELETE FROM policy_changes WHERE version < ?",
            &[Val::Int(version.saturating_sub(CHANGE_LOG_NANOS))],
        )?;
        Ok(())
    }

    /// The logged changes after version `after`, oldest first, at most [`MAX_CHANGES_READ`].
    pub fn changes_since(&self, tx: &mut dyn Tx, after: i64) -> Result<Vec<LoggedChange>, DbError> {
        let sql = format!(
            "SELECT version, prev_version, ids FROM policy_changes WHERE version > ? \
             ORDER BY version LIMIT {MAX_CHANGES_READ}"
        );
        tx.rows(&sql, &[Val::Int(after)])?
            .iter()
            .map(|r| {
                let ids = r[2].text()?;
                Ok(LoggedChange {
                    version: r[0].int()?,
                    prev: r[1].int()?,
                    ids: serde_json::from_str(&ids).ok(),
                })
            })
            .collect()
    }

    /// The group row of `guid`, locked: (id, type).
    fn find_group(&self, tx: &mut dyn Tx, guid: &str) -> Result<Option<(i64, String)>, DbError> {
        let sql = format!(
            "SELECT id, type FROM \"groups\" WHERE guid = ?{}",
            self.dialect.for_update()
        );
        let rows = tx.rows(&sql, &[Val::Str(guid)])?;
        match rows.first() {
            Some(r) => Ok(Some((r[0].int()?, r[1].opt_text().unwrap_or_default()))),
            None => Ok(None),
        }
    }

    /// The tag id of (guid, kind), assigning a free slot if it has none: the one released longest
    /// ago (never-used slots count as released at the epoch, lowest first), and never one released
    /// less than the quarantine ago. A cell that has not yet seen the release still marks the old
    /// app's packets with that tag; handing it to another app at once would let the old app pass
    /// as the new one there (issue 18).
    fn allocate(&self, tx: &mut dyn Tx, guid: &str, kind: &str) -> Result<i64, Error> {
        if let Some((id, existing)) = self.find_group(tx, guid)? {
            if existing != kind {
                return Err(Error::Store(StoreError::TagTypeConflict {
                    id: guid.to_string(),
                    existing,
                }));
            }
            return Ok(id);
        }
        let released_before = crate::clock::unix_millis().saturating_sub(self.quarantine_ms);
        let sql = format!(
            "SELECT id FROM \"groups\"{} WHERE guid IS NULL AND released_at <= ? AND id <= ? \
             ORDER BY released_at, id LIMIT 1{}",
            self.dialect.force_index("idx_groups_free_since"),
            self.dialect.for_update()
        );
        let rows = tx.rows(&sql, &[Val::Int(released_before), Val::Int(self.max_tag())])?;
        let id = match rows.first() {
            Some(row) => row[0].int()?,
            None => return Err(self.no_free_slot(tx, released_before)?),
        };
        let n = tx.exec(
            "UPDATE \"groups\" SET guid = ?, type = ? WHERE id = ? AND guid IS NULL",
            &[Val::Str(guid), Val::Str(kind), Val::Int(id)],
        )?;
        if n != 1 {
            return Err(lost_race(format!("tag slot {id} was taken concurrently")));
        }
        Ok(id)
    }

    /// Why no slot was found: a locking read that lost its row to a concurrent allocator may come
    /// back empty although other slots are free, so only plain reads decide.
    fn no_free_slot(&self, tx: &mut dyn Tx, released_before: i64) -> Result<Error, DbError> {
        let count = |tx: &mut dyn Tx, sql: &str, params: &[Val<'_>]| -> Result<i64, DbError> {
            let rows = tx.rows(sql, params)?;
            rows.first().map(|r| r[0].int()).unwrap_or(Ok(0))
        };
        let max = Val::Int(self.max_tag());
        let usable = count(
            tx,
            "SELECT COUNT(*) FROM \"groups\" WHERE guid IS NULL AND released_at <= ? AND id <= ?",
            &[Val::Int(released_before), max],
        )?;
        if usable > 0 {
            return Ok(lost_race("free tag slot taken concurrently"));
        }
        let resting = count(
            tx,
            "SELECT COUNT(*) FROM \"groups\" WHERE guid IS NULL AND id <= ?",
            &[max],
        )?;
        Ok(Error::Store(if resting > 0 {
            StoreError::TagsInQuarantine { resting }
        } else {
            StoreError::TagPoolExhausted
        }))
    }

    /// Locks row `id` of `table` until the transaction ends.
    fn lock_row(&self, tx: &mut dyn Tx, table: &str, id: i64) -> Result<(), DbError> {
        let sql = format!(
            "SELECT id FROM {table} WHERE id = ?{}",
            self.dialect.for_update()
        );
        tx.rows(&sql, &[Val::Int(id)]).map(|_| ())
    }

    /// Frees the group's slot when no policy and no destination refers to it any more.
    fn release(&self, tx: &mut dyn Tx, group: i64) -> Result<(), DbError> {
        self.lock_row(tx, "\"groups\"", group)?;
        let used = referenced(tx, "policies", "group_id", group)?
            || referenced(tx, "destinations", "group_id", group)?;
        if !used {
            tx.exec(
                "UPDATE \"groups\" SET guid = NULL, type = NULL, released_at = ? WHERE id = ?",
                &[Val::Int(crate::clock::unix_millis()), Val::Int(group)],
            )?;
        }
        Ok(())
    }

    fn destination_id(
        &self,
        tx: &mut dyn Tx,
        group: i64,
        p: &Policy,
        lock: bool,
    ) -> Result<Option<i64>, DbError> {
        let sql = format!(
            "SELECT id FROM destinations WHERE group_id = ? AND start_port = ? AND end_port = ? \
             AND protocol = ?{}",
            if lock { self.dialect.for_update() } else { "" }
        );
        let ports = &p.destination.ports;
        let rows = tx.rows(
            &sql,
            &[
                Val::Int(group),
                Val::Int(ports.start),
                Val::Int(ports.end),
                Val::Str(&p.destination.protocol),
            ],
        )?;
        rows.first().map(|r| r[0].int()).transpose()
    }

    pub fn create(&self, tx: &mut dyn Tx, policies: &[Policy]) -> Result<(), Error> {
        if policies.is_empty() {
            return Ok(());
        }
        self.touch(tx, policies)?;
        use Param::{Int, Text};
        let insert_destination = self.dialect.insert_unless_exists(
            "destinations (group_id, port, start_port, end_port, protocol)",
            &[Int, Int, Int, Int, Text],
            "SELECT 1 FROM destinations \
             WHERE group_id = ? AND start_port = ? AND end_port = ? AND protocol = ?",
        );
        let insert_policy = self.dialect.insert_unless_exists(
            "policies (group_id, destination_id)",
            &[Int, Int],
            "SELECT 1 FROM policies WHERE group_id = ? AND destination_id = ?",
        );
        for p in policies {
            let src = self.allocate(tx, &p.source.id, "app")?;
            let dst = self.allocate(tx, &p.destination.id, "app")?;
            let ports = p.destination.ports;
            let port = if ports.start == ports.end {
                ports.start
            } else {
                0
            };
            let proto = p.destination.protocol.as_str();
            tx.exec(
                &insert_destination,
                &[
                    Val::Int(dst),
                    Val::Int(port),
                    Val::Int(ports.start),
                    Val::Int(ports.end),
                    Val::Str(proto),
                    Val::Int(dst),
                    Val::Int(ports.start),
                    Val::Int(ports.end),
                    Val::Str(proto),
                ],
            )?;
            let Some(dest) = self.destination_id(tx, dst, p, true)? else {
                return Err(lost_race("destination removed concurrently"));
            };
            tx.exec(
                &insert_policy,
                &[Val::Int(src), Val::Int(dest), Val::Int(src), Val::Int(dest)],
            )?;
        }
        Ok(())
    }

    pub fn delete(&self, tx: &mut dyn Tx, policies: &[Policy]) -> Result<(), DbError> {
        if policies.is_empty() {
            return Ok(());
        }
        self.touch(tx, policies)?;
        let find = "SELECT id FROM \"groups\" WHERE guid = ?";
        for p in policies {
            let Some(src) = tx.rows(find, &[Val::Str(&p.source.id)])?.first().cloned() else {
                continue;
            };
            let Some(dst) = tx
                .rows(find, &[Val::Str(&p.destination.id)])?
                .first()
                .cloned()
            else {
                continue;
            };
            let (src, dst) = (src[0].int()?, dst[0].int()?);
            let Some(dest) = self.destination_id(tx, dst, p, false)? else {
                continue;
            };
            let deleted = tx.exec(
                "DELETE FROM policies WHERE group_id = ? AND destination_id = ?",
                &[Val::Int(src), Val::Int(dest)],
            )?;
            if deleted == 0 {
                continue;
            }
            self.lock_row(tx, "destinations", dest)?;
            if !referenced(tx, "policies", "destination_id", dest)? {
                tx.exec("DELETE FROM destinations WHERE id = ?", &[Val::Int(dest)])?;
            }
            self.release(tx, src)?;
            if dst != src {
                self.release(tx, dst)?;
            }
        }
        Ok(())
    }

    pub fn list(&self, tx: &mut dyn Tx, filter: &PolicyFilter) -> Result<Vec<Policy>, DbError> {
        use PolicyFilter as F;
        let mut params: Vec<Val<'_>> = Vec::new();
        let sql = match filter {
            F::All => format!("{LIST_SELECT} ORDER BY p.id"),
            F::Source(ids) | F::Destination(ids) => {
                let ids = unique(ids);
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let column = if matches!(filter, F::Source(_)) {
                    "sg.guid"
                } else {
                    "dg.guid"
                };
                params.extend(ids.iter().map(|s| Val::Str(s)));
                format!(
                    "{LIST_SELECT} WHERE {column} IN ({})",
                    placeholders(ids.len())
                )
            }
            F::SourceAndDestination(src, dst) => {
                let (src, dst) = (unique(src), unique(dst));
                if src.is_empty() || dst.is_empty() {
                    return Ok(Vec::new());
                }
                params.extend(src.iter().map(|s| Val::Str(s)));
                params.extend(dst.iter().map(|s| Val::Str(s)));
                format!(
                    "{LIST_SELECT} WHERE sg.guid IN ({}) AND dg.guid IN ({})",
                    placeholders(src.len()),
                    placeholders(dst.len())
                )
            }
            F::Either(ids) => {
                let ids = unique(ids);
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                params.extend(ids.iter().map(|s| Val::Str(s)));
                params.extend(ids.iter().map(|s| Val::Str(s)));
                // Two index lookups joined by UNION instead of an OR across two joined tables,
                // which no planner turns into index use.
                let marks = placeholders(ids.len());
                format!(
                    "SELECT sg.guid, sg.id, dg.guid, dg.id, d.start_port, d.end_port, d.protocol, \
                     p.id FROM (SELECT p1.id FROM policies p1 JOIN \"groups\" g1 ON g1.id = p1.group_id \
                     WHERE g1.guid IN ({marks}) \
                     UNION SELECT p2.id FROM policies p2 \
                     JOIN destinations d2 ON d2.id = p2.destination_id \
                     JOIN \"groups\" g2 ON g2.id = d2.group_id WHERE g2.guid IN ({marks})) m \
                     JOIN policies p ON p.id = m.id \
                     JOIN \"groups\" sg ON sg.id = p.group_id \
                     JOIN destinations d ON d.id = p.destination_id \
                     JOIN \"groups\" dg ON dg.id = d.group_id"
                )
            }
        };
        // Filtered queries have no ORDER BY (it makes MariaDB walk all policies in id order
        // instead of using the filter's indexes); every list is sorted here, in creation order.
        let mut rows = tx.rows(&sql, &params)?;
        rows.sort_by_key(|r| r[7].int().unwrap_or(0));
        rows.into_iter()
            .map(|mut r| {
                Ok(Policy {
                    source: Source {
                        id: r[0].take_text()?,
                        tag: Some(self.tag(r[1].int()?)),
                    },
                    destination: Destination {
                        id: r[2].take_text()?,
                        tag: Some(self.tag(r[3].int()?)),
                        protocol: r[6].take_text()?,
                        ports: Ports {
                            start: r[4].int()?,
                            end: r[5].int()?,
                        },
                    },
                })
            })
            .collect()
    }

    pub fn tags(&self, tx: &mut dyn Tx) -> Result<Vec<Tag>, DbError> {
        let rows = tx.rows(
            "SELECT guid, id, type FROM \"groups\" WHERE guid IS NOT NULL ORDER BY id",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Tag {
                    id: r[0].text()?,
                    tag: self.tag(r[1].int()?),
                    kind: r[2].opt_text().unwrap_or_default(),
                })
            })
            .collect()
    }

    pub fn create_tag(&self, tx: &mut dyn Tx, id: &str, kind: &str) -> Result<Tag, Error> {
        let tag = self.allocate(tx, id, kind)?;
        Ok(Tag {
            id: id.to_string(),
            tag: self.tag(tag),
            kind: kind.to_string(),
        })
    }

    /// Free slots released less than the quarantine ago: not handed out until it ends.
    pub fn quarantined(&self, tx: &mut dyn Tx) -> Result<usize, DbError> {
        let sql = format!(
            "SELECT COUNT(*) FROM \"groups\"{} WHERE guid IS NULL AND released_at > ? AND id <= ?",
            self.dialect.force_index("idx_groups_free_since")
        );
        let rows = tx.rows(
            &sql,
            &[
                Val::Int(crate::clock::unix_millis().saturating_sub(self.quarantine_ms)),
                Val::Int(self.max_tag()),
            ],
        )?;
        Ok(rows.first().map(|r| r[0].int()).unwrap_or(Ok(0))? as usize)
    }

    /// Free slots that were released at some time, with when (Unix milliseconds), by tag: what
    /// an export carries so that the quarantine survives a move to another database.
    pub fn released_tags(&self, tx: &mut dyn Tx) -> Result<Vec<(String, i64)>, DbError> {
        let rows = tx.rows(
            "SELECT id, released_at FROM \"groups\" WHERE guid IS NULL AND released_at > 0 \
             AND id <= ? ORDER BY id",
            &[Val::Int(self.max_tag())],
        )?;
        rows.iter()
            .map(|r| Ok((self.tag(r[0].int()?), r[1].int()?)))
            .collect()
    }

    pub fn last_updated(&self, tx: &mut dyn Tx) -> Result<i64, DbError> {
        let rows = tx.rows("SELECT last_updated FROM policies_info WHERE id = 1", &[])?;
        match rows.first() {
            Some(r) => r[0].int(),
            None => Err(DbError::Database("policies_info row missing".into())),
        }
    }

    pub fn source_policy_counts(
        &self,
        tx: &mut dyn Tx,
        ids: &[String],
    ) -> Result<HashMap<String, usize>, DbError> {
        let mut counts: HashMap<String, usize> = ids.iter().map(|i| (i.clone(), 0)).collect();
        let ids = unique(ids);
        if ids.is_empty() {
            return Ok(counts);
        }
        let sql = format!(
            "SELECT g.guid, COUNT(*) FROM policies p JOIN \"groups\" g ON g.id = p.group_id \
             WHERE g.guid IN ({}) GROUP BY g.guid",
            placeholders(ids.len())
        );
        let params: Vec<Val<'_>> = ids.iter().map(|s| Val::Str(s)).collect();
        for r in tx.rows(&sql, &params)? {
            counts.insert(r[0].text()?, r[1].int()? as usize);
        }
        Ok(counts)
    }

    pub fn count(&self, tx: &mut dyn Tx) -> Result<usize, DbError> {
        let rows = tx.rows("SELECT COUNT(*) FROM policies", &[])?;
        Ok(rows.first().map(|r| r[0].int()).transpose()?.unwrap_or(0) as usize)
    }

    pub fn check(&self, tx: &mut dyn Tx) -> Result<(), DbError> {
        tx.rows("SELECT 1", &[])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_upper_hex_padded_to_twice_the_length() {
        let pool = |length| TagPool {
            length,
            quarantine: std::time::Duration::ZERO,
        };
        let e1 = Engine::new(Dialect::Sqlite, pool(1));
        let e2 = Engine::new(Dialect::Sqlite, pool(2));
        assert_eq!(e1.max_tag(), 255);
        assert_eq!(e2.max_tag(), 65535);
        assert_eq!(e1.tag(10), "0A");
        assert_eq!(e2.tag(1), "0001");
        assert_eq!(e2.tag(65535), "FFFF");
    }
}
