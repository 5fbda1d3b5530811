//! The security-group store: [`AsgStore`], implemented once over [`Db`] for SQLite, PostgreSQL
//! and MySQL/MariaDB. Every change moves `security_groups_info.version` (Unix nanoseconds, or one
//! past the old value when the clock is behind) in its own transaction, first, so writers run one
//! at a time and a reader that sees the new version sees the change.

use super::schema::SCHEMA;
use crate::api::security_groups::SecurityGroup;
use crate::asg::Lifecycle;
use crate::db::{DatabaseConfig, Db, Dialect, Error as DbError, Options, Tx, TxError, Val};
use crate::policy::security_groups::{row, select};
use crate::policy::store::StoreError;
use std::collections::HashMap;
use std::fmt;

/// A group with its row id (the internal API pages by it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub id: i64,
    pub group: SecurityGroup,
}

/// Every group, ordered by id, and the version they were read at (one snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: i64,
    pub groups: Vec<StoredGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsgError {
    Db(DbError),
    /// No group has this guid.
    NotFound(String),
    /// Another group has this name (names are unique, as in the Cloud Controller).
    NameTaken(String),
    /// Another group has this guid.
    GuidTaken(String),
}

impl fmt::Display for AsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsgError::Db(e) => write!(f, "{}", StoreError::from(e.clone())),
            AsgError::NotFound(guid) => write!(f, "security group {guid:?} not found"),
            AsgError::NameTaken(name) => {
                write!(f, "a security group named {name:?} already exists")
            }
            AsgError::GuidTaken(guid) => {
                write!(f, "a security group with guid {guid:?} already exists")
            }
        }
    }
}

impl std::error::Error for AsgError {}

impl From<DbError> for AsgError {
    fn from(e: DbError) -> AsgError {
        AsgError::Db(e)
    }
}

impl TxError for AsgError {
    fn db(&self) -> Option<&DbError> {
        match self {
            AsgError::Db(e) => Some(e),
            _ => None,
        }
    }
}

/// What a replacing write changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replaced {
    pub inserted: usize,
    pub updated: usize,
    pub deleted: usize,
}

impl Replaced {
    pub fn changed(&self) -> bool {
        self.inserted + self.updated + self.deleted > 0
    }
}

/// The Cloud Controller timestamp the syncer last synced, and when that sync began (Unix ns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncMark {
    pub cc_last_update: String,
    pub synced_at: i64,
}

/// An edit of one group, run inside the write transaction on the current row.
pub type Edit<'a> = &'a (dyn Fn(&mut SecurityGroup) -> Result<(), AsgError> + Sync);

pub trait AsgStore: Send + Sync {
    /// The version: moves with every change.
    fn version(&self) -> Result<i64, AsgError>;
    fn snapshot(&self) -> Result<Snapshot, AsgError>;
    fn get(&self, guid: &str) -> Result<StoredGroup, AsgError>;
    /// Creates a group; its guid and name must be new.
    fn create(&self, group: &SecurityGroup) -> Result<StoredGroup, AsgError>;
    /// Runs `edit` on the group and stores the result (a rename must stay unique).
    fn modify(&self, guid: &str, edit: Edit<'_>) -> Result<StoredGroup, AsgError>;
    fn delete(&self, guid: &str) -> Result<(), AsgError>;
    /// Makes the table hold exactly `groups` (by guid: update, insert, delete the rest) in one
    /// transaction, with `mark` recorded in it; the version moves only if a group changed.
    fn replace(&self, groups: &[SecurityGroup], mark: &SyncMark) -> Result<Replaced, AsgError>;
    fn sync_mark(&self) -> Result<SyncMark, AsgError>;
    /// Takes or renews the syncer lease for `holder` until `now + ttl_ns`; false while another
    /// holder's lease runs.
    fn acquire_sync_lease(&self, holder: &str, ttl_ns: i64) -> Result<bool, AsgError>;
    /// Gives the lease up (if `holder` has it).
    fn release_sync_lease(&self, holder: &str) -> Result<(), AsgError>;
}

/// Adds `space` to the lifecycle's bound spaces (kept once).
pub fn bind(group: &mut SecurityGroup, lifecycle: Lifecycle, space: &str) {
    let spaces = spaces_mut(group, lifecycle);
    if !spaces.iter().any(|s| s == space) {
        spaces.push(space.to_string());
    }
}

/// Removes `space` from the lifecycle's bound spaces; false if it was not bound.
pub fn unbind(group: &mut SecurityGroup, lifecycle: Lifecycle, space: &str) -> bool {
    let spaces = spaces_mut(group, lifecycle);
    let before = spaces.len();
    spaces.retain(|s| s != space);
    spaces.len() != before
}

fn spaces_mut(group: &mut SecurityGroup, lifecycle: Lifecycle) -> &mut Vec<String> {
    match lifecycle {
        Lifecycle::Running => &mut group.running_space_guids,
        Lifecycle::Staging => &mut group.staging_space_guids,
    }
}

pub struct SqlAsgStore {
    db: Db,
}

impl SqlAsgStore {
    /// Connects (retrying until `connect_timeout_seconds`) and migrates the security-group
    /// tables. Opened after the policy store, which refuses a database still in the original's
    /// schema.
    pub fn open(config: &DatabaseConfig) -> Result<SqlAsgStore, AsgError> {
        let db = Db::open(config, Options { sqlite_readers: 4 }, |tx| {
            crate::policy::store::sql_store::refuse_foreign_schema(tx)?;
            crate::db::migrate::apply(tx, &SCHEMA).map(|_| ())
        })?;
        Ok(SqlAsgStore { db })
    }
}

/// Moves the version in the caller's transaction.
pub(crate) fn bump(tx: &mut dyn Tx) -> Result<(), DbError> {
    let now = crate::clock::unix_nanos();
    let n = tx.exec(
        "UPDATE security_groups_info SET version = CASE WHEN version < ? THEN ? \
         ELSE version + 1 END WHERE id = 1",
        &[Val::Int(now), Val::Int(now)],
    )?;
    if n != 1 {
        return Err(DbError::Database("security_groups_info row missing".into()));
    }
    Ok(())
}

/// Puts back the version read before [`bump`] (which ran first to lock the row), for a write
/// that turned out to change nothing.
fn restore_version(tx: &mut dyn Tx, version: i64) -> Result<(), DbError> {
    tx.exec(
        "UPDATE security_groups_info SET version = ? WHERE id = 1",
        &[Val::Int(version)],
    )?;
    Ok(())
}

fn version(tx: &mut dyn Tx) -> Result<i64, DbError> {
    let rows = tx.rows("SELECT version FROM security_groups_info WHERE id = 1", &[])?;
    match rows.first() {
        Some(r) => r[0].int(),
        None => Err(DbError::Database("security_groups_info row missing".into())),
    }
}

fn all(tx: &mut dyn Tx) -> Result<Vec<StoredGroup>, DbError> {
    let sql = format!("{} ORDER BY id", select(tx.dialect()));
    tx.rows(&sql, &[])?
        .iter()
        .map(|r| row(r).map(|(id, group)| StoredGroup { id, group }))
        .collect()
}

fn find(tx: &mut dyn Tx, guid: &str) -> Result<Option<StoredGroup>, DbError> {
    let sql = format!(
        "{} WHERE guid = ?{}",
        select(tx.dialect()),
        tx.dialect().for_update()
    );
    match tx.rows(&sql, &[Val::Str(guid)])?.first() {
        Some(r) => row(r).map(|(id, group)| Some(StoredGroup { id, group })),
        None => Ok(None),
    }
}

fn name_taken(tx: &mut dyn Tx, name: &str, except_guid: &str) -> Result<bool, DbError> {
    let rows = tx.rows(
        "SELECT 1 FROM security_groups WHERE name = ? AND guid <> ? LIMIT 1",
        &[Val::Str(name), Val::Str(except_guid)],
    )?;
    Ok(!rows.is_empty())
}

/// (json placeholder, boolean placeholder) of the dialect.
fn placeholders(dialect: Dialect) -> (&'static str, &'static str) {
    match dialect {
        Dialect::Postgres => ("CAST(CAST(? AS TEXT) AS JSONB)", "(CAST(? AS INTEGER) = 1)"),
        _ => ("?", "(? = 1)"),
    }
}

fn space_json(spaces: &[String]) -> String {
    serde_json::to_string(spaces).unwrap_or_else(|_| "[]".into())
}

fn insert(tx: &mut dyn Tx, g: &SecurityGroup) -> Result<i64, DbError> {
    let (json, flag) = placeholders(tx.dialect());
    let (staging, running) = (
        space_json(&g.staging_space_guids),
        space_json(&g.running_space_guids),
    );
    tx.exec(
        &format!(
            "INSERT INTO security_groups (guid, name, rules, staging_default, running_default, \
             staging_spaces, running_spaces) VALUES (?, ?, ?, {flag}, {flag}, {json}, {json})"
        ),
        &[
            Val::Str(&g.guid),
            Val::Str(&g.name),
            Val::Str(&g.rules),
            Val::Int(g.staging_default as i64),
            Val::Int(g.running_default as i64),
            Val::Str(&staging),
            Val::Str(&running),
        ],
    )?;
    let rows = tx.rows(
        "SELECT id FROM security_groups WHERE guid = ?",
        &[Val::Str(&g.guid)],
    )?;
    rows.first()
        .map(|r| r[0].int())
        .unwrap_or_else(|| Err(DbError::Database("inserted group not found".into())))
}

fn update(tx: &mut dyn Tx, id: i64, g: &SecurityGroup) -> Result<(), DbError> {
    let (json, flag) = placeholders(tx.dialect());
    let (staging, running) = (
        space_json(&g.staging_space_guids),
        space_json(&g.running_space_guids),
    );
    tx.exec(
        &format!(
            "UPDATE security_groups SET name = ?, rules = ?, staging_default = {flag}, \
             running_default = {flag}, staging_spaces = {json}, running_spaces = {json} \
             WHERE id = ?"
        ),
        &[
            Val::Str(&g.name),
            Val::Str(&g.rules),
            Val::Int(g.staging_default as i64),
            Val::Int(g.running_default as i64),
            Val::Str(&staging),
            Val::Str(&running),
            Val::Int(id),
        ],
    )?;
    Ok(())
}

impl AsgStore for SqlAsgStore {
    fn version(&self) -> Result<i64, AsgError> {
        Ok(self.db.read(version)?)
    }

    fn snapshot(&self) -> Result<Snapshot, AsgError> {
        Ok(self.db.snapshot(|tx| {
            Ok::<_, DbError>(Snapshot {
                version: version(tx)?,
                groups: all(tx)?,
            })
        })?)
    }

    fn get(&self, guid: &str) -> Result<StoredGroup, AsgError> {
        let sql = format!("{} WHERE guid = ?", select(self.db.dialect()));
        self.db
            .read(|tx| match tx.rows(&sql, &[Val::Str(guid)])?.first() {
                Some(r) => Ok(row(r).map(|(id, group)| StoredGroup { id, group })?),
                None => Err(AsgError::NotFound(guid.to_string())),
            })
    }

    fn create(&self, group: &SecurityGroup) -> Result<StoredGroup, AsgError> {
        self.db.write(|tx| {
            bump(tx)?;
            if find(tx, &group.guid)?.is_some() {
                return Err(AsgError::GuidTaken(group.guid.clone()));
            }
            if name_taken(tx, &group.name, &group.guid)? {
                return Err(AsgError::NameTaken(group.name.clone()));
            }
            let id = insert(tx, group)?;
            Ok(StoredGroup {
                id,
                group: group.clone(),
            })
        })
    }

    fn modify(&self, guid: &str, edit: Edit<'_>) -> Result<StoredGroup, AsgError> {
        self.db.write(|tx| {
            let version_before = version(tx)?;
            bump(tx)?;
            let Some(mut stored) = find(tx, guid)? else {
                return Err(AsgError::NotFound(guid.to_string()));
            };
            let before = stored.group.clone();
            edit(&mut stored.group)?;
            stored.group.guid = before.guid.clone();
            if stored.group.name != before.name && name_taken(tx, &stored.group.name, guid)? {
                return Err(AsgError::NameTaken(stored.group.name.clone()));
            }
            if stored.group == before {
                // Nothing changed (an unbind of an unbound space, a PATCH to the same values):
                // the version stays, so no cell refetches and recompiles for it.
                restore_version(tx, version_before)?;
                return Ok(stored);
            }
            update(tx, stored.id, &stored.group)?;
            Ok(stored)
        })
    }

    fn delete(&self, guid: &str) -> Result<(), AsgError> {
        self.db.write(|tx| {
            bump(tx)?;
            let n = tx.exec(
                "DELETE FROM security_groups WHERE guid = ?",
                &[Val::Str(guid)],
            )?;
            if n == 0 {
                return Err(AsgError::NotFound(guid.to_string()));
            }
            Ok(())
        })
    }

    fn replace(&self, groups: &[SecurityGroup], mark: &SyncMark) -> Result<Replaced, AsgError> {
        self.db.write(|tx| {
            // Locks the version row first: replacing writers and admin writes run one at a time.
            let before = version(tx)?;
            bump(tx)?;
            let existing: HashMap<String, StoredGroup> = all(tx)?
                .into_iter()
                .map(|g| (g.group.guid.clone(), g))
                .collect();
            let mut done = Replaced::default();
            let mut wanted = std::collections::HashSet::new();
            for g in groups {
                wanted.insert(g.guid.as_str());
                match existing.get(&g.guid) {
                    Some(old) if old.group == *g => {}
                    Some(old) => {
                        update(tx, old.id, g)?;
                        done.updated += 1;
                    }
                    None => {
                        insert(tx, g)?;
                        done.inserted += 1;
                    }
                }
            }
            for (guid, _) in existing
                .iter()
                .filter(|(g, _)| !wanted.contains(g.as_str()))
            {
                tx.exec(
                    "DELETE FROM security_groups WHERE guid = ?",
                    &[Val::Str(guid)],
                )?;
                done.deleted += 1;
            }
            if !done.changed() {
                restore_version(tx, before)?;
            }
            tx.exec(
                "UPDATE security_groups_info SET cc_last_update = ?, cc_synced_at = ? WHERE id = 1",
                &[Val::Str(&mark.cc_last_update), Val::Int(mark.synced_at)],
            )?;
            Ok(done)
        })
    }

    fn sync_mark(&self) -> Result<SyncMark, AsgError> {
        self.db.read(|tx| {
            let rows = tx.rows(
                "SELECT cc_last_update, cc_synced_at FROM security_groups_info WHERE id = 1",
                &[],
            )?;
            let r = rows
                .first()
                .ok_or_else(|| DbError::Database("security_groups_info row missing".into()))?;
            Ok(SyncMark {
                cc_last_update: r[0].text()?,
                synced_at: r[1].int()?,
            })
        })
    }

    fn acquire_sync_lease(&self, holder: &str, ttl_ns: i64) -> Result<bool, AsgError> {
        self.db.write(|tx| {
            let now = crate::clock::unix_nanos();
            let n = tx.exec(
                "UPDATE asg_syncer_lock SET holder = ?, expires_at = ? \
                 WHERE id = 1 AND (holder = ? OR expires_at < ?)",
                &[
                    Val::Str(holder),
                    Val::Int(now.saturating_add(ttl_ns)),
                    Val::Str(holder),
                    Val::Int(now),
                ],
            )?;
            Ok::<_, AsgError>(n == 1)
        })
    }

    fn release_sync_lease(&self, holder: &str) -> Result<(), AsgError> {
        self.db.write(|tx| {
            tx.exec(
                "UPDATE asg_syncer_lock SET expires_at = 0 WHERE id = 1 AND holder = ?",
                &[Val::Str(holder)],
            )?;
            Ok::<_, AsgError>(())
        })
    }
}
