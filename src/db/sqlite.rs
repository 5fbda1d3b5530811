//! SQLite, embedded. WAL mode with `synchronous=FULL`: a commit is in the WAL file (and fsynced)
//! before a write returns, so an acknowledged write survives SIGKILL and power loss.
//!
//! Concurrency: one writer connection behind a mutex (SQLite has one writer anyway; BEGIN
//! IMMEDIATE takes the write lock up front, so other processes on the same file wait on
//! `busy_timeout` instead of failing mid-transaction) and, if asked for, a pool of read-only
//! connections, which WAL lets read a committed snapshot while the writer works. `:memory:` has
//! one connection for everything (each connection would otherwise see its own database).

use super::config::DatabaseConfig;
use super::dialect::{Dialect, SQLITE_LOST_RACE};
use super::error::{Error, TxError};
use super::pool::{Limits, Pool};
use super::tx::{Cell, Tx, Val};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const STATEMENT_CACHE: usize = 128;
/// Write transactions that lost the lock to another process are run again this often.
const WRITE_ATTEMPTS: u64 = 5;

pub(crate) struct SqliteDb {
    path: String,
    writer: Mutex<Connection>,
    readers: Option<Pool<Connection>>,
}

fn is_memory(path: &str) -> bool {
    path == ":memory:"
}

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code()
        .is_some_and(|code| SQLITE_LOST_RACE.contains(&code))
}

fn sqlite_error(e: rusqlite::Error) -> Error {
    if is_busy(&e) {
        Error::LostRace(e.to_string())
    } else {
        Error::Database(format!("sqlite: {e}"))
    }
}

fn open_connection(path: &str, read_only: bool) -> Result<Connection, Error> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::Database(format!("opening sqlite database {path}: {e}")))?;
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
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match setup() {
            Ok(()) => return Ok(conn),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(Error::Database(format!(
                    "setting up sqlite database {path}: {e}"
                )))
            }
        }
    }
}

impl SqliteDb {
    /// Opens (creating if needed) the file and migrates it in a write transaction (the migration
    /// lock); `readers` read-only connections beside the writer (0: reads use the writer).
    pub(crate) fn open(
        config: &DatabaseConfig,
        readers: usize,
        migrate: &dyn Fn(&mut dyn Tx) -> Result<(), Error>,
    ) -> Result<SqliteDb, Error> {
        let path = config.connection_string.clone();
        let mut writer = open_connection(&path, false)?;
        run_write(&mut writer, migrate)?;
        let readers = (readers > 0 && !is_memory(&path)).then(|| {
            let p = path.clone();
            let n = readers.min(config.max_open_connections as usize).max(1);
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
        Ok(SqliteDb {
            path,
            writer: Mutex::new(writer),
            readers,
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write<T, E: TxError>(
        &self,
        f: impl Fn(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        run_write(&mut self.writer(), f)
    }

    pub(crate) fn read<T, E: TxError>(
        &self,
        f: impl Fn(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let result = match &self.readers {
            Some(pool) => {
                let conn = pool.get()?;
                f(&mut SqliteTx(&conn))
            }
            None => f(&mut SqliteTx(&self.writer())),
        };
        result.map_err(|e| match e.db() {
            Some(Error::LostRace(m)) => {
                Error::Database(format!("sqlite {}: {m}", self.path)).into()
            }
            _ => e,
        })
    }
}

/// One write transaction (BEGIN IMMEDIATE), run again while another process holds the lock.
fn run_write<T, E: TxError>(
    conn: &mut Connection,
    f: impl Fn(&mut dyn Tx) -> Result<T, E>,
) -> Result<T, E> {
    let mut attempt = 0;
    loop {
        let result = (|| -> Result<T, E> {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let value = f(&mut SqliteTx(&tx))?;
            tx.commit().map_err(sqlite_error)?;
            Ok(value)
        })();
        let lost = match &result {
            Err(e) => match e.db() {
                Some(Error::LostRace(m)) => Some(m.clone()),
                _ => None,
            },
            Ok(_) => None,
        };
        match lost {
            None => return result,
            Some(m) if attempt >= WRITE_ATTEMPTS => {
                return Err(Error::Database(format!("sqlite: {m}")).into())
            }
            Some(_) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20 * attempt));
            }
        }
    }
}

struct SqliteTx<'a>(&'a Connection);

fn to_sql<'a>(v: &'a Val<'a>) -> &'a dyn rusqlite::ToSql {
    match v {
        Val::Int(i) => i,
        Val::Str(s) => s,
    }
}

impl Tx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

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
