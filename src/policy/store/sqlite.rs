//! The embedded SQLite store. WAL mode with `synchronous=FULL`: a commit is in the WAL file (and
//! fsynced) before create/delete return, so an acknowledged write survives SIGKILL and power loss.
//!
//! Concurrency: one writer connection behind a mutex (SQLite has one writer anyway; BEGIN
//! IMMEDIATE takes the write lock up front, so other processes on the same file wait on
//! `busy_timeout` instead of failing mid-transaction) and a pool of read-only connections,
//! which WAL lets read a committed snapshot while the writer works. `:memory:` has one connection
//! for everything (each connection would otherwise see its own database).

use super::config::DatabaseConfig;
use super::migrations;
use super::pool::{Limits, Pool};
use super::sql::{db_error, Cell, Dialect, Engine, Error, Tx, Val};
use super::{PolicyFilter, Store, StoreError};
use crate::api::policy::{Policy, Tag};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Reader connections (bounded by `max_open_connections`): one per concurrent request thread of a
/// policy server, so a reader descheduled on a busy machine never makes others queue behind it
/// for a connection. Cheap: each is a file handle and a small page cache.
const READERS: usize = 16;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const STATEMENT_CACHE: usize = 128;

pub struct SqliteStore {
    engine: Engine,
    path: String,
    writer: Mutex<Connection>,
    readers: Option<Pool<Connection>>,
}

fn is_memory(path: &str) -> bool {
    path == ":memory:"
}

pub(crate) fn sqlite_error(e: rusqlite::Error) -> Error {
    if is_busy(&e) {
        Error::Conflict(e.to_string())
    } else {
        db_error(format!("sqlite: {e}"))
    }
}

pub(crate) fn open_connection(path: &str, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Database(format!("opening sqlite database {path}: {e}")))?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        if !read_only && !is_memory(path) {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(rusqlite::Error::InvalidQuery);
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    };
    // Switching a new file to WAL needs an exclusive lock and SQLite answers BUSY at once, without
    // the busy handler, when another process is doing the same; so the setup retries itself.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match setup() {
            Ok(()) => return Ok(conn),
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(StoreError::Database(format!(
                    "setting up sqlite database {path}: {e}"
                )))
            }
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database; one attempt (see `open` for retries).
    pub fn open(config: &DatabaseConfig, tag_length: u8) -> Result<SqliteStore, StoreError> {
        let path = config.connection_string.clone();
        let mut writer = open_connection(&path, false)?;
        run_write(&mut writer, |tx| {
            migrations::migrate_locked(tx, Dialect::Sqlite, tag_length)
        })?;
        let readers = (!is_memory(&path)).then(|| {
            let p = path.clone();
            let n = READERS.min(config.max_open_connections as usize).max(1);
            Pool::new(
                Limits {
                    max_open: n,
                    max_idle: n,
                    max_lifetime: Duration::from_secs(config.connections_max_lifetime_seconds),
                    wait: BUSY_TIMEOUT,
                },
                Box::new(move || open_connection(&p, true)),
            )
        });
        Ok(SqliteStore {
            engine: Engine::new(Dialect::Sqlite, tag_length),
            path,
            writer: Mutex::new(writer),
            readers,
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write<T>(&self, f: impl Fn(&mut dyn Tx) -> Result<T, Error>) -> Result<T, StoreError> {
        run_write(&mut self.writer(), f)
    }

    fn read<T>(&self, f: impl Fn(&mut dyn Tx) -> Result<T, Error>) -> Result<T, StoreError> {
        let result = match &self.readers {
            Some(pool) => {
                let conn = pool.get()?;
                f(&mut SqliteTx(&conn))
            }
            None => f(&mut SqliteTx(&self.writer())),
        };
        result.map_err(|e| match e {
            Error::Store(e) => e,
            Error::Conflict(m) => StoreError::Database(format!("sqlite {}: {m}", self.path)),
        })
    }
}

/// One write transaction (BEGIN IMMEDIATE), retried while another process holds the lock.
pub(crate) fn run_write<T>(
    conn: &mut Connection,
    f: impl Fn(&mut dyn Tx) -> Result<T, Error>,
) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let value = f(&mut SqliteTx(&tx))?;
            tx.commit().map_err(sqlite_error)?;
            Ok(value)
        })();
        match result {
            Ok(v) => return Ok(v),
            Err(Error::Store(e)) => return Err(e),
            Err(Error::Conflict(m)) if attempt >= 5 => {
                return Err(StoreError::Database(format!("sqlite: {m}")))
            }
            Err(Error::Conflict(_)) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20 * attempt));
            }
        }
    }
}

pub(crate) struct SqliteTx<'a>(pub(crate) &'a Connection);

fn to_sql<'a>(v: &'a Val<'a>) -> &'a dyn rusqlite::ToSql {
    match v {
        Val::Int(i) => i,
        Val::Str(s) => s,
    }
}

impl Tx for SqliteTx<'_> {
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64, Error> {
        let mut stmt = self.0.prepare_cached(sql).map_err(sqlite_error)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter().map(to_sql)))
            .map_err(sqlite_error)?;
        Ok(n as u64)
    }

    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Vec<Cell>>, Error> {
        let mut stmt = self.0.prepare_cached(sql).map_err(sqlite_error)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(to_sql)))
            .map_err(sqlite_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            let mut cells = Vec::with_capacity(columns);
            for i in 0..columns {
                cells.push(match row.get_ref(i).map_err(sqlite_error)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(i) => Cell::Int(i),
                    ValueRef::Real(f) => Cell::Int(f as i64),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Cell::Str(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(cells);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), Error> {
        self.0.execute_batch(sql).map_err(sqlite_error)
    }
}

impl Store for SqliteStore {
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.write(|tx| self.engine.create(tx, policies))
    }

    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.write(|tx| self.engine.delete(tx, policies))
    }

    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
        self.read(|tx| self.engine.list(tx, filter))
    }

    fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        self.read(|tx| self.engine.tags(tx))
    }

    fn create_tag(&self, id: &str, kind: &str) -> Result<Tag, StoreError> {
        self.write(|tx| self.engine.create_tag(tx, id, kind))
    }

    fn last_updated(&self) -> Result<i64, StoreError> {
        self.read(|tx| self.engine.last_updated(tx))
    }

    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        self.read(|tx| self.engine.source_policy_counts(tx, ids))
    }

    fn count(&self) -> Result<usize, StoreError> {
        self.read(|tx| self.engine.count(tx))
    }

    fn check(&self) -> Result<(), StoreError> {
        self.read(|tx| self.engine.check(tx))
    }
}
