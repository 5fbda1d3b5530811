//! PostgreSQL (cargo feature `postgres`): the sync `postgres` crate (which runs a private
//! current-thread tokio runtime per client; no threads of its own), our own pool, and TLS through
//! rustls (`require_ssl`: TLS required and the server certificate verified against `ca_cert`,
//! host name included, like libpq's `verify-full`). Transactions run at READ COMMITTED.

use super::config::DatabaseConfig;
use super::dialect::{Dialect, MigrationLock, POSTGRES_LOST_RACE};
use super::error::{Error, TxError};
use super::retry::attempt_timeout;
use super::server::{Server, ServerDb};
use super::tx::{Cell, Tx, Val};
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, NoTls, Statement};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

const STATEMENT_CACHE: usize = 256;

pub(crate) struct PgConn {
    client: Client,
    /// Prepared statements by the SQL as written (before [`Dialect::native`]).
    statements: HashMap<String, Statement>,
}

fn pg_config(config: &DatabaseConfig) -> Result<postgres::Config, Error> {
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
            .map_err(|e| Error::Database(format!("invalid connection_string: {e}")))?
    };
    pg.connect_timeout(attempt_timeout(config))
        .application_name("netman");
    if config.require_ssl {
        pg.ssl_mode(postgres::config::SslMode::Require);
    }
    Ok(pg)
}

fn tls(config: &DatabaseConfig) -> Result<Option<MakeRustlsConnect>, Error> {
    if !config.require_ssl {
        return Ok(None);
    }
    let roots = crate::tls::root_store(std::path::Path::new(&config.ca_cert))
        .map_err(|e| Error::Database(format!("database.ca_cert: {e}")))?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Database(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(client)))
}

/// Opens the pool: connects once to run `migrate` (the connection then joins the pool).
pub(crate) fn open(
    config: &DatabaseConfig,
    migrate: &dyn Fn(&mut dyn Tx) -> Result<(), Error>,
) -> Result<ServerDb<PgConn>, Error> {
    let pg = pg_config(config)?;
    let tls = tls(config)?;
    let describe = config.describe();
    let connect = move || {
        let client = match &tls {
            Some(t) => pg.connect(t.clone()),
            None => pg.connect(NoTls),
        }
        .map_err(|e| Error::Database(format!("connecting to the {describe}: {}", message(&e))))?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
        })
    };
    ServerDb::open(config, Box::new(connect), migrate)
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
    match e.code() {
        Some(code) if POSTGRES_LOST_RACE.contains(&code.code()) => Error::LostRace(message(&e)),
        _ => Error::Database(format!("postgres: {}", message(&e))),
    }
}

impl Server for PgConn {
    const DIALECT: Dialect = Dialect::Postgres;

    fn run<T, E: TxError>(
        &mut self,
        write: bool,
        f: &impl Fn(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let PgConn { client, statements } = self;
        if !write {
            return f(&mut PgTx { client, statements });
        }
        let mut tx = client.transaction().map_err(pg_error)?;
        let v = f(&mut PgTx {
            client: &mut tx,
            statements: &mut *statements,
        })?;
        tx.commit().map_err(pg_error)?;
        Ok(v)
    }

    fn reusable(&mut self, _failed: bool) -> bool {
        !self.client.is_closed()
    }

    fn dead(&mut self) -> bool {
        self.client.is_closed()
    }

    /// Under the advisory lock, in one transaction.
    fn migrate(&mut self, migrate: &dyn Fn(&mut dyn Tx) -> Result<(), Error>) -> Result<(), Error> {
        let MigrationLock::Statements { lock, unlock } = Self::DIALECT.migration_lock() else {
            unreachable!("postgres migrates under an advisory lock")
        };
        self.client
            .batch_execute(&lock)
            .map_err(|e| Error::Database(format!("taking the migration lock: {}", message(&e))))?;
        let result = self.run(true, &|tx| migrate(tx));
        let _ = self.client.batch_execute(&unlock);
        // Statements prepared inside the migration refer to tables that now exist; keep none.
        self.statements.clear();
        result
    }
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
            .prepare(&Dialect::Postgres.native(sql))
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
            let out_of_range = || Error::Database(format!("parameter {v:?} out of range for {ty}"));
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
    fn get<'r, T: postgres::types::FromSql<'r>>(
        row: &'r postgres::Row,
        i: usize,
    ) -> Result<Option<T>, Error> {
        row.try_get(i)
            .map_err(|e| Error::Database(format!("postgres column {i}: {e}")))
    }
    let int = |v: Option<i64>| v.map_or(Cell::Null, Cell::Int);
    Ok(match *row.columns()[i].type_() {
        Type::INT2 => int(get::<i16>(row, i)?.map(i64::from)),
        Type::INT4 => int(get::<i32>(row, i)?.map(i64::from)),
        Type::INT8 => int(get::<i64>(row, i)?),
        Type::BOOL => int(get::<bool>(row, i)?.map(i64::from)),
        _ => get::<String>(row, i)?.map_or(Cell::Null, Cell::Str),
    })
}

impl<C: GenericClient> Tx for PgTx<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

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
