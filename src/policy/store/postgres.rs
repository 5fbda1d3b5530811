//! The PostgreSQL store (cargo feature `postgres`): the sync `postgres` crate (which runs a private
//! current-thread tokio runtime per client; no threads of its own), our own pool, and TLS through
//! rustls (`require_ssl`: TLS required and the server certificate verified against `ca_cert`,
//! host name included, like libpq's `verify-full`).
//!
//! Transactions run at READ COMMITTED with the row locks of `sql.rs`; deadlocks, serialization
//! failures and unique/foreign-key races are retried as a whole transaction.

use super::config::DatabaseConfig;
use super::migrations;
use super::open::attempt_timeout;
use super::pool::{Limits, Pool};
use super::sql::{backoff, db_error, Cell, Dialect, Engine, Error, Tx, Val};
use super::{PolicyFilter, Store, StoreError};
use crate::api::policy::{Policy, Tag};
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, NoTls, Statement};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// `pg_advisory_lock` key held while migrating (advisory locks are per database).
const MIGRATION_LOCK: i64 = 0x6e65_746d_616e; // "netman"
const MAX_ATTEMPTS: u32 = 30;
const STATEMENT_CACHE: usize = 256;

pub struct PostgresStore {
    engine: Engine,
    db: PgDb,
}

struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

fn pg_config(config: &DatabaseConfig) -> Result<postgres::Config, StoreError> {
    let mut pg = if config.connection_string.is_empty() {
        let mut c = postgres::Config::new();
        c.host(&config.host)
            .port(config.port_or_default())
            .user(&config.user)
            .password(&config.password)
            .dbname(&config.database_name);
        c
    } else {
        config
            .connection_string
            .parse::<postgres::Config>()
            .map_err(|e| StoreError::Database(format!("invalid connection_string: {e}")))?
    };
    pg.connect_timeout(attempt_timeout(config))
        .application_name("netman");
    if config.require_ssl {
        pg.ssl_mode(postgres::config::SslMode::Require);
    }
    Ok(pg)
}

fn tls(config: &DatabaseConfig) -> Result<Option<MakeRustlsConnect>, StoreError> {
    if !config.require_ssl {
        return Ok(None);
    }
    let roots = crate::tls::root_store(std::path::Path::new(&config.ca_cert))
        .map_err(|e| StoreError::Database(format!("database.ca_cert: {e}")))?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Database(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(client)))
}

fn connect(
    pg: &postgres::Config,
    tls: &Option<MakeRustlsConnect>,
    describe: &str,
) -> Result<PgConn, StoreError> {
    let client = match tls {
        Some(t) => pg.connect(t.clone()),
        None => pg.connect(NoTls),
    }
    .map_err(|e| StoreError::Database(format!("connecting to the {describe}: {}", message(&e))))?;
    Ok(PgConn {
        client,
        statements: HashMap::new(),
    })
}

/// The server's message when there is one (the driver's Display of a db error says only "db error").
fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.to_string(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

fn pg_error(e: postgres::Error) -> Error {
    let conflict = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::UNIQUE_VIOLATION,
        SqlState::FOREIGN_KEY_VIOLATION,
    ];
    match e.code() {
        Some(code) if conflict.contains(code) => Error::Conflict(message(&e)),
        _ => db_error(format!("postgres: {}", message(&e))),
    }
}

/// `?` placeholders to `$1, $2, ...` (our SQL has no `?` inside literals).
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

struct PgTx<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> PgTx<'_, C> {
    fn prepare(&mut self, sql: &str) -> Result<Statement, Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let stmt = self
            .client
            .prepare(&dollar_placeholders(sql))
            .map_err(pg_error)?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

/// Binds our parameters with the types the server inferred for the statement.
fn bind<'p>(
    stmt: &Statement,
    params: &'p [Val<'p>],
) -> Result<Vec<Box<dyn ToSql + Sync + 'p>>, Error> {
    params
        .iter()
        .zip(stmt.params())
        .map(|(v, ty)| -> Result<Box<dyn ToSql + Sync + 'p>, Error> {
            let out_of_range = || db_error(format!("parameter {v:?} out of range for {ty}"));
            Ok(match *v {
                Val::Int(i) if *ty == Type::INT2 => {
                    Box::new(i16::try_from(i).map_err(|_| out_of_range())?)
                }
                Val::Int(i) if *ty == Type::INT4 => {
                    Box::new(i32::try_from(i).map_err(|_| out_of_range())?)
                }
                Val::Int(i) => Box::new(i),
                Val::Str(s) => Box::new(s),
            })
        })
        .collect()
}

fn cell(row: &postgres::Row, i: usize) -> Result<Cell, Error> {
    let ty = row.columns()[i].type_();
    let bad = |e: postgres::Error| db_error(format!("postgres column {i}: {e}"));
    Ok(match *ty {
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(bad)?
            .map(i64::from)
            .map_or(Cell::Null, Cell::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map(i64::from)
            .map_or(Cell::Null, Cell::Int),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, Cell::Int),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map(i64::from)
            .map_or(Cell::Null, Cell::Int),
        _ => row
            .try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map_or(Cell::Null, Cell::Str),
    })
}

impl<C: GenericClient> Tx for PgTx<'_, C> {
    fn exec(&mut self, sql: &str, params: &[Val<'_>]) -> Result<u64, Error> {
        let stmt = self.prepare(sql)?;
        let bound = bind(&stmt, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref() as _).collect();
        self.client.execute(&stmt, &refs).map_err(pg_error)
    }

    fn rows(&mut self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Vec<Cell>>, Error> {
        let stmt = self.prepare(sql)?;
        let bound = bind(&stmt, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref() as _).collect();
        let rows = self.client.query(&stmt, &refs).map_err(pg_error)?;
        rows.iter()
            .map(|r| (0..r.len()).map(|i| cell(r, i)).collect())
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), Error> {
        self.client.batch_execute(sql).map_err(pg_error)
    }
}

/// A PostgreSQL database: the pool and the transaction runner, shared by the policy store and the
/// overlay lease store.
pub(crate) struct PgDb {
    pool: Pool<PgConn>,
}

impl PgDb {
    /// Connects and runs `migrate` in one transaction under the advisory migration lock (one
    /// migrator at a time); one attempt (callers retry, see `open::retry`).
    pub(crate) fn open(
        config: &DatabaseConfig,
        migrate: impl FnOnce(&mut dyn Tx) -> Result<i64, Error>,
    ) -> Result<PgDb, StoreError> {
        let pg = pg_config(config)?;
        let tls = tls(config)?;
        let describe = config.describe();
        let mut conn = connect(&pg, &tls, &describe)?;
        migrate_with(&mut conn, migrate)?;
        let pool = Pool::new(
            Limits {
                max_open: config.max_open_connections as usize,
                max_idle: config.max_idle_connections as usize,
                max_lifetime: Duration::from_secs(config.connections_max_lifetime_seconds),
                wait: Duration::from_secs(10),
            },
            Box::new(move || connect(&pg, &tls, &describe)),
        );
        pool.seed(conn);
        Ok(PgDb { pool })
    }

    /// Runs `f` in a transaction (`write`) or on a plain connection, retrying lost races and,
    /// once, a connection that went stale in the pool.
    pub(crate) fn run<T>(
        &self,
        write: bool,
        f: impl Fn(&mut dyn Tx) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.pool.get()?;
            let result = {
                let PgConn { client, statements } = &mut *conn;
                if write {
                    (|| {
                        let mut tx = client.transaction().map_err(pg_error)?;
                        let v = f(&mut PgTx {
                            client: &mut tx,
                            statements: &mut *statements,
                        })?;
                        tx.commit().map_err(pg_error)?;
                        Ok(v)
                    })()
                } else {
                    f(&mut PgTx { client, statements })
                }
            };
            let closed = conn.client.is_closed();
            if closed {
                conn.mark_broken();
            }
            match result {
                Ok(v) => return Ok(v),
                Err(Error::Conflict(m)) => {
                    if attempt >= MAX_ATTEMPTS {
                        return Err(StoreError::Database(format!(
                            "postgres: gave up after {attempt} conflicting attempts: {m}"
                        )));
                    }
                    drop(conn);
                    backoff(attempt);
                }
                Err(Error::Store(StoreError::Database(_)))
                    if closed && conn.reused() && attempt == 1 =>
                {
                    drop(conn);
                    self.pool.discard_idle();
                }
                Err(Error::Store(e)) => return Err(e),
            }
        }
    }
}

impl PostgresStore {
    /// Connects, migrates under the advisory lock; one attempt (see `open` for retries).
    pub fn open(config: &DatabaseConfig, tag_length: u8) -> Result<PostgresStore, StoreError> {
        let db = PgDb::open(config, |tx| {
            migrations::migrate_locked(tx, Dialect::Postgres, tag_length)
        })?;
        Ok(PostgresStore {
            engine: Engine::new(Dialect::Postgres, tag_length),
            db,
        })
    }

    fn run<T>(
        &self,
        write: bool,
        f: impl Fn(&mut dyn Tx) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        self.db.run(write, f)
    }
}

fn migrate_with(
    conn: &mut PgConn,
    migrate: impl FnOnce(&mut dyn Tx) -> Result<i64, Error>,
) -> Result<i64, StoreError> {
    let PgConn { client, statements } = conn;
    client
        .batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .map_err(|e| StoreError::Database(format!("taking the migration lock: {}", message(&e))))?;
    let result = (|| {
        let mut tx = client.transaction().map_err(pg_error)?;
        let v = migrate(&mut PgTx {
            client: &mut tx,
            statements: &mut *statements,
        })?;
        tx.commit().map_err(pg_error)?;
        Ok(v)
    })();
    let _ = client.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
    // Statements prepared inside the migration refer to tables that now exist; keep none.
    statements.clear();
    result.map_err(|e| match e {
        Error::Store(e) => e,
        Error::Conflict(m) => StoreError::Database(format!("migrating: {m}")),
    })
}

impl Store for PostgresStore {
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.run(true, |tx| self.engine.create(tx, policies))
    }

    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.run(true, |tx| self.engine.delete(tx, policies))
    }

    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
        self.run(false, |tx| self.engine.list(tx, filter))
    }

    fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        self.run(false, |tx| self.engine.tags(tx))
    }

    fn create_tag(&self, id: &str, kind: &str) -> Result<Tag, StoreError> {
        self.run(true, |tx| self.engine.create_tag(tx, id, kind))
    }

    fn last_updated(&self) -> Result<i64, StoreError> {
        self.run(false, |tx| self.engine.last_updated(tx))
    }

    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        self.run(false, |tx| self.engine.source_policy_counts(tx, ids))
    }

    fn count(&self) -> Result<usize, StoreError> {
        self.run(false, |tx| self.engine.count(tx))
    }

    fn check(&self) -> Result<(), StoreError> {
        self.run(false, |tx| self.engine.check(tx))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(
            super::dollar_placeholders("SELECT ? FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT $1 FROM t WHERE a = $2 AND b IN ($3, $4)"
        );
    }
}
