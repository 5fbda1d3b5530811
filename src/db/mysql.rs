//! MySQL/MariaDB (cargo feature `mysql`): the sync `mysql` crate (std::net, no async runtime) over
//! our own pool (the crate's built-in `Pool` has no idle limit or connection lifetime, and connects
//! while holding its lock). Write transactions run at READ COMMITTED.
//!
//! TLS (`require_ssl`) needs the cargo feature `mysql-tls` (the crate's rustls support pulls the
//! unmaintained rustls-pemfile, so it is not on by default).

use super::config::DatabaseConfig;
use super::dialect::{Dialect, MigrationLock, MYSQL_LOST_RACE};
use super::error::{Error, TxError};
use super::retry::attempt_timeout;
use super::server::{Server, ServerDb};
use super::tx::{Cell, Tx, Val};
use mysql::prelude::Queryable;
use mysql::{Conn, IsolationLevel, Opts, OptsBuilder, Params, TxOpts, Value};
use std::time::Duration;

fn opts(config: &DatabaseConfig) -> Result<Opts, Error> {
    let builder = if config.connection_string.is_empty() {
        OptsBuilder::new()
            .ip_or_hostname(Some(config.host.clone()))
            .tcp_port(config.port_or_default())
            .user(Some(config.user.clone()))
            .pass(Some(config.password.clone()))
            .db_name(Some(config.database_name.clone()))
    } else {
        let parsed = Opts::from_url(&config.connection_string)
            .map_err(|_| Error::Database("invalid connection_string: not a mysql:// URL".into()))?;
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
fn tls(builder: OptsBuilder, config: &DatabaseConfig) -> Result<OptsBuilder, Error> {
    if !config.require_ssl {
        return Ok(builder);
    }
    let ssl = mysql::SslOpts::default()
        .with_root_cert_path(Some(std::path::PathBuf::from(&config.ca_cert)));
    Ok(builder.ssl_opts(Some(ssl)))
}

#[cfg(not(feature = "mysql-tls"))]
fn tls(builder: OptsBuilder, config: &DatabaseConfig) -> Result<OptsBuilder, Error> {
    if config.require_ssl {
        return Err(Error::Database(
            "database.require_ssl: TLS to mysql is not compiled into this binary \
             (cargo feature \"mysql-tls\")"
                .into(),
        ));
    }
    Ok(builder)
}

/// Opens the pool: connects once to run `migrate` (the connection then joins the pool).
pub(crate) fn open(
    config: &DatabaseConfig,
    migrate: &dyn Fn(&mut dyn Tx) -> Result<(), Error>,
) -> Result<ServerDb<Conn>, Error> {
    let opts = opts(config)?;
    let describe = config.describe();
    let connect = move || {
        Conn::new(opts.clone())
            .map_err(|e| Error::Database(format!("connecting to the {describe}: {e}")))
    };
    ServerDb::open(config, Box::new(connect), migrate)
}

fn my_error(e: mysql::Error) -> Error {
    match &e {
        mysql::Error::MySqlError(me) if MYSQL_LOST_RACE.contains(&me.code) => {
            Error::LostRace(format!("mysql: {e}"))
        }
        _ => Error::Database(format!("mysql: {e}")),
    }
}

impl Server for Conn {
    const DIALECT: Dialect = Dialect::Mysql;

    fn run<T, E: TxError>(
        &mut self,
        write: bool,
        f: &impl Fn(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        if !write {
            return f(&mut MyTx(self));
        }
        let opts = TxOpts::default().set_isolation_level(Some(IsolationLevel::ReadCommitted));
        let mut tx = self.start_transaction(opts).map_err(my_error)?;
        let v = f(&mut MyTx(&mut tx))?;
        tx.commit().map_err(my_error)?;
        Ok(v)
    }

    /// Any error other than a lost race may have left the connection unusable: replace it.
    fn reusable(&mut self, failed: bool) -> bool {
        !failed
    }

    fn dead(&mut self) -> bool {
        self.ping().is_err()
    }

    /// Under GET_LOCK, statement by statement (MySQL commits DDL implicitly).
    fn migrate(&mut self, migrate: &dyn Fn(&mut dyn Tx) -> Result<(), Error>) -> Result<(), Error> {
        let MigrationLock::Statements { lock, unlock } = Self::DIALECT.migration_lock() else {
            unreachable!("mysql migrates under GET_LOCK")
        };
        let got: Option<i64> = self
            .query_first(lock)
            .map_err(|e| Error::Database(format!("migration lock: {e}")))?;
        if got != Some(1) {
            return Err(Error::Database(
                "migration lock: another migrator held it for 300 s".into(),
            ));
        }
        let result = migrate(&mut MyTx(self));
        let _ = self.query_drop(unlock);
        result
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
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    fn exec(&mut self, sql: &str, values: &[Val<'_>]) -> Result<u64, Error> {
        let sql = Dialect::Mysql.native(sql);
        let result = self
            .0
            .exec_iter(sql.as_ref(), params(values))
            .map_err(my_error)?;
        Ok(result.affected_rows())
    }

    fn rows(&mut self, sql: &str, values: &[Val<'_>]) -> Result<Vec<Vec<Cell>>, Error> {
        let sql = Dialect::Mysql.native(sql);
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
            .query_drop(Dialect::Mysql.native(sql).as_ref())
            .map_err(my_error)
    }
}
