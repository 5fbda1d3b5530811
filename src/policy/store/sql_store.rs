//! The policy store on a SQL database: [`Store`] implemented once over [`Db`] for every dialect;
//! the SQL is the [`Engine`]'s.

use super::engine::Engine;
use super::migrations;
use super::{LoggedChange, PolicyFilter, Store, StoreError, TagPool};
use crate::api::policy::{Policy, Tag};
use crate::db::{DatabaseConfig, Db, Error as DbError, Options, Tx};
use crate::policy::adopt::bridge::TxSql;
use crate::policy::adopt::detect::refuse_to_open;
use std::collections::HashMap;

/// SQLite reader connections (bounded by `max_open_connections`): one per concurrent request
/// thread of a policy server, so a reader descheduled on a busy machine never makes others queue
/// behind it for a connection. Cheap: each is a file handle and a small page cache.
const SQLITE_READERS: usize = 16;

pub(crate) struct SqlStore {
    db: Db,
    engine: Engine,
}

impl SqlStore {
    /// Checks the config, connects (retrying until `connect_timeout_seconds`) and migrates.
    pub(crate) fn open(config: &DatabaseConfig, pool: TagPool) -> Result<SqlStore, StoreError> {
        let options = Options {
            sqlite_readers: SQLITE_READERS,
        };
        let db = Db::open(config, options, |tx| {
            refuse_foreign_schema(tx)?;
            migrations::migrate_locked(tx, pool.length)
        })?;
        Ok(SqlStore {
            engine: Engine::new(db.dialect(), pool),
            db,
        })
    }
}

/// Refuses a database holding the original policy server's schema (or a conversion that stopped
/// half-way) before netman's migrations could write into it: `policy-server migrate` converts it.
pub(crate) fn refuse_foreign_schema(tx: &mut dyn Tx) -> Result<(), DbError> {
    match refuse_to_open(&mut TxSql::new(tx)) {
        Ok(None) => Ok(()),
        Ok(Some(reason)) => Err(DbError::Refused(reason)),
        Err(e) => Err(DbError::Database(format!("inspecting the schema: {e}"))),
    }
}

impl Store for SqlStore {
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError> {
        Ok(self.db.write(|tx| self.engine.create(tx, policies))?)
    }

    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError> {
        Ok(self.db.write(|tx| self.engine.delete(tx, policies))?)
    }

    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
        Ok(self.db.read(|tx| self.engine.list(tx, filter))?)
    }

    fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        Ok(self.db.read(|tx| self.engine.tags(tx))?)
    }

    fn create_tag(&self, id: &str, kind: &str) -> Result<Tag, StoreError> {
        Ok(self.db.write(|tx| self.engine.create_tag(tx, id, kind))?)
    }

    fn last_updated(&self) -> Result<i64, StoreError> {
        Ok(self.db.read(|tx| self.engine.last_updated(tx))?)
    }

    fn changes_since(&self, after: i64) -> Result<Vec<LoggedChange>, StoreError> {
        Ok(self.db.read(|tx| self.engine.changes_since(tx, after))?)
    }

    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        Ok(self
            .db
            .read(|tx| self.engine.source_policy_counts(tx, ids))?)
    }

    fn count(&self) -> Result<usize, StoreError> {
        Ok(self.db.read(|tx| self.engine.count(tx))?)
    }

    fn quarantined_tags(&self) -> Result<usize, StoreError> {
        Ok(self.db.read(|tx| self.engine.quarantined(tx))?)
    }

    fn check(&self) -> Result<(), StoreError> {
        Ok(self.db.read(|tx| self.engine.check(tx))?)
    }
}
