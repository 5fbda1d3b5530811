//! The MySQL/MariaDB store (cargo feature `mysql`): the sync `mysql` crate (std::net, no async
//! runtime) over our own pool (the crate's built-in `Pool` has no idle limit or connection
//! lifetime, and connects while holding its lock). `groups` is quoted with backticks; inserts use
//! `... FROM DUAL WHERE NOT EXISTS` (MySQL < 5.7 fails without the FROM).
//!
//! Transactions run at READ COMMITTED with the row locks of `sql.rs`; deadlocks, lock wait
//! timeouts and duplicate-key/foreign-key races are retried as a whole transaction. Migrations
//! hold `GET_LOCK('netman_migrations.<database>')`; MySQL commits DDL implicitly, so every
//! migration statement is re-runnable.
//!
//! TLS (`require_ssl`) needs the cargo feature `mysql-tls` (the crate's rustls support pulls the
//! unmaintained rustls-pemfile, so it is not on by default).

use super::config::DatabaseConfig;
use super::migrations;
use super::open::attempt_timeout;
use super::pool::{Limits, Pool};
use super::sql::{backoff, db_error, Cell, Dialect, Engine, Error, Tx, Val};
use super::{PolicyFilter, Store, StoreError};
use crate::api::policy::{Policy, Tag};
use mysql::prelude::Queryable;
use mysql::{Conn, IsolationLevel, Opts, OptsBuilder, Params, TxOpts, Value};
use std::collections::HashMap;
use std::time::Duration;

const MAX_ATTEMPTS: u32 = 30;

/// Server error codes that mean "lost a race, run the transaction again".
const CONFLICT_CODES: [u16; 5] = [
    1213, // ER_LOCK_DEADLOCK
    1205, // ER_LOCK_WAIT_TIMEOUT
    1062, // ER_DUP_ENTRY
    1452, // ER_NO_REFERENCED_ROW_2 (parent row deleted meanwhile)
    1020, // ER_CHECKREAD (record changed since last read)
];

pub struct MysqlStore {
    engine: Engine,
    db: MyDb,
}

fn opts(config: &DatabaseConfig) -> Result<Opts, StoreError> {
    let builder = if config.connection_string.is_empty() {
        OptsBuilder::new()
            .ip_or_hostname(Some(config.host.clone()))
            .tcp_port(config.port_or_default())
            .user(Some(config.user.clone()))
            .pass(Some(config.password.clone()))
            .db_name(Some(config.database_name.clone()))
    } else {
        let parsed = Opts::from_url(&config.connection_string).map_err(|_| {
            StoreError::Database("invalid connection_string: not a mysql:// URL".into())
        })?;
        OptsBuilder::from_opts(parsed)
    };
    let builder = builder
        .prefer_socket(false)
        .tcp_connect_timeout(Some(attempt_timeout(config)))
        .read_timeout(Some(Duration::from_secs(120)))
        .write_timeout(Some(Duration::from_secs(120)))
        .stmt_cache_size(Some(128));
    Ok(tls(builder, config)?.into())
}

#[cfg(feature = "mysql-tls")]
fn tls(builder: OptsBuilder, config: &DatabaseConfig) -> Result<OptsBuilder, StoreError> {
    if !config.require_ssl {
        return Ok(builder);
    }
    let ssl = mysql::SslOpts::default()
        .with_root_cert_path(Some(std::path::PathBuf::from(&config.ca_cert)));
    Ok(builder.ssl_opts(Some(ssl)))
}

#[cfg(not(feature = "mysql-tls"))]
fn tls(builder: OptsBuilder, config: &DatabaseConfig) -> Result<OptsBuilder, StoreError> {
    if config.require_ssl {
        return Err(StoreError::Database(
            "database.require_ssl: TLS to mysql is not compiled into this binary \
             (cargo feature \"mysql-tls\")"
                .into(),
        ));
    }
    Ok(builder)
}

fn connect(opts: &Opts, describe: &str) -> Result<Conn, StoreError> {
    Conn::new(opts.clone())
        .map_err(|e| StoreError::Database(format!("connecting to the {describe}: {e}")))
}

fn my_error(e: mysql::Error) -> Error {
    match &e {
        mysql::Error::MySqlError(me) if CONFLICT_CODES.contains(&me.code) => {
            Error::Conflict(format!("mysql: {e}"))
        }
        _ => db_error(format!("mysql: {e}")),
    }
}

fn params(values: &[Val<'_>]) -> Params {
    if values.is_empty() {
        return Params::Empty;
    }
    Params::Positional(
        values
            .iter()
            .map(|v| match v {
                Val::Int(i) => Value::Int(*i),
                Val::Str(s) => Value::Bytes(s.as_bytes().to_vec()),
            })
            .collect(),
    )
}

fn cell(v: Value) -> Cell {
    match v {
        Value::NULL => Cell::Null,
        Value::Int(i) => Cell::Int(i),
        Value::UInt(u) => Cell::Int(u as i64),
        Value::Bytes(b) => Cell::Str(String::from_utf8_lossy(&b).into_owned()),
        Value::Float(f) => Cell::Int(f as i64),
        Value::Double(f) => Cell::Int(f as i64),
        other => Cell::Str(other.as_sql(true)),
    }
}

struct MyTx<'a, Q: Queryable>(&'a mut Q);

impl<Q: Queryable> Tx for MyTx<'_, Q> {
    fn exec(&mut self, sql: &str, values: &[Val<'_>]) -> Result<u64, Error> {
        let sql = Dialect::Mysql.q(sql);
        let result = self
            .0
            .exec_iter(sql.as_ref(), params(values))
            .map_err(my_error)?;
        Ok(result.affected_rows())
    }

    fn rows(&mut self, sql: &str, values: &[Val<'_>]) -> Result<Vec<Vec<Cell>>, Error> {
        let sql = Dialect::Mysql.q(sql);
        let rows: Vec<mysql::Row> = self
            .0
            .exec(sql.as_ref(), params(values))
            .map_err(my_error)?;
        Ok(rows
            .into_iter()
            .map(|r| r.unwrap().into_iter().map(cell).collect())
            .collect())
    }

    fn batch(&mut self, sql: &str) -> Result<(), Error> {
        self.0
            .query_drop(Dialect::Mysql.q(sql).as_ref())
            .map_err(my_error)
    }
}

/// A MySQL/MariaDB database: the pool and the transaction runner, shared by the policy store and
/// the overlay lease store.
pub(crate) struct MyDb {
    pool: Pool<Conn>,
}

impl MyDb {
    /// Connects and runs `migrate` under GET_LOCK (one migrator at a time); one attempt (callers
    /// retry, see `open::retry`).
    pub(crate) fn open(
        config: &DatabaseConfig,
        migrate: impl FnOnce(&mut dyn Tx) -> Result<i64, Error>,
    ) -> Result<MyDb, StoreError> {
        let opts = opts(config)?;
        let describe = config.describe();
        let mut conn = connect(&opts, &describe)?;
        migrate_with(&mut conn, migrate)?;
        let pool = Pool::new(
            Limits {
                max_open: config.max_open_connections as usize,
                max_idle: config.max_idle_connections as usize,
                max_lifetime: Duration::from_secs(config.connections_max_lifetime_seconds),
                wait: Duration::from_secs(10),
            },
            Box::new(move || connect(&opts, &describe)),
        );
        pool.seed(conn);
        Ok(MyDb { pool })
    }

    /// Runs `f` in a READ COMMITTED transaction (`write`) or on a plain connection, retrying lost
    /// races and, once, a connection that went stale in the pool.
    pub(crate) fn run<T>(
        &self,
        write: bool,
        f: impl Fn(&mut dyn Tx) -> Result<T, Error>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.pool.get()?;
            let result = if write {
                (|| {
                    let opts =
                        TxOpts::default().set_isolation_level(Some(IsolationLevel::ReadCommitted));
                    let mut tx = conn.start_transaction(opts).map_err(my_error)?;
                    let v = f(&mut MyTx(&mut tx))?;
                    tx.commit().map_err(my_error)?;
                    Ok(v)
                })()
            } else {
                f(&mut MyTx(&mut *conn))
            };
            match result {
                Ok(v) => return Ok(v),
                Err(Error::Conflict(m)) => {
                    if attempt >= MAX_ATTEMPTS {
                        return Err(StoreError::Database(format!(
                            "mysql: gave up after {attempt} conflicting attempts: {m}"
                        )));
                    }
                    drop(conn);
                    backoff(attempt);
                }
                Err(Error::Store(e)) => {
                    // Any other error may have left the connection unusable: replace it.
                    conn.mark_broken();
                    let stale = conn.reused() && conn.ping().is_err();
                    if !(stale && attempt == 1 && matches!(e, StoreError::Database(_))) {
                        return Err(e);
                    }
                    drop(conn);
                    self.pool.discard_idle();
                }
            }
        }
    }
}

impl MysqlStore {
    /// Connects, migrates under GET_LOCK; one attempt (see `open` for retries).
    pub fn open(config: &DatabaseConfig, tag_length: u8) -> Result<MysqlStore, StoreError> {
        let db = MyDb::open(config, |tx| {
            migrations::migrate_locked(tx, Dialect::Mysql, tag_length)
        })?;
        Ok(MysqlStore {
            engine: Engine::new(Dialect::Mysql, tag_length),
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
    conn: &mut Conn,
    migrate: impl FnOnce(&mut dyn Tx) -> Result<i64, Error>,
) -> Result<i64, StoreError> {
    let lock_err = |e: mysql::Error| StoreError::Database(format!("migration lock: {e}"));
    let got: Option<i64> = conn
        .query_first("SELECT GET_LOCK(CONCAT('netman_migrations.', DATABASE()), 300)")
        .map_err(lock_err)?;
    if got != Some(1) {
        return Err(StoreError::Database(
            "migration lock: another migrator held it for 300 s".into(),
        ));
    }
    let result = migrate(&mut MyTx(&mut *conn));
    let _ = conn.query_drop("DO RELEASE_LOCK(CONCAT('netman_migrations.', DATABASE()))");
    result.map_err(|e| match e {
        Error::Store(e) => e,
        Error::Conflict(m) => StoreError::Database(format!("migrating: {m}")),
    })
}

impl Store for MysqlStore {
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
