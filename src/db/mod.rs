//! The SQL layer every store is built on, knowing nothing of policies or leases: the `database`
//! config, connections and pools, the three dialects (SQLite embedded by default, PostgreSQL and
//! MySQL/MariaDB behind the `postgres` and `mysql` cargo features), start-up retry, the migration
//! runner, and [`Db`], whose `write` and `read` run a store's SQL on whichever dialect the config
//! names. How the pieces fit and how to add a table: `docs/architecture-db.md`.
//!
//! A store is a [`migrate::Schema`] (its tables, versioned), an engine (its SQL, written once over
//! [`Tx`], asking the [`Dialect`] for what differs), and a trait its users see, implemented once
//! over [`Db`].

pub mod config;
pub mod dialect;
pub mod error;
pub mod migrate;
#[cfg(feature = "mysql")]
mod mysql;
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
mod retry;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod server;
mod sqlite;
pub mod tx;

pub use config::{DatabaseConfig, DatabaseType};
pub use dialect::{Dialect, Param};
pub use error::{Error, TxError};
pub use migrate::{Migration, Schema};
pub use tx::{Cell, Tx, Val};

use crate::config::Validate;

/// How a store wants its database opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// SQLite: read-only connections beside the one writer (at most `max_open_connections`);
    /// 0: reads share the writer's connection.
    pub sqlite_readers: usize,
}

/// An open database: run transactions with [`Db::write`] and reads with [`Db::read`].
pub struct Db {
    dialect: Dialect,
    backend: Backend,
}

enum Backend {
    Sqlite(sqlite::SqliteDb),
    #[cfg(feature = "postgres")]
    Postgres(server::ServerDb<postgres::PgConn>),
    #[cfg(feature = "mysql")]
    Mysql(server::ServerDb<::mysql::Conn>),
}

impl Db {
    /// Checks the config, then connects and migrates, retrying with backoff until
    /// `connect_timeout_seconds` (a database that is still starting is waited for).
    pub fn open(
        config: &DatabaseConfig,
        options: Options,
        migrate: impl Fn(&mut dyn Tx) -> Result<(), Error>,
    ) -> Result<Db, Error> {
        config.validate().map_err(Error::Config)?;
        retry::retry(config, || Db::connect(config, options, &migrate))
    }

    /// Connects and runs `migrate` under the database's migration lock (one migrator at a time,
    /// also across processes); one attempt.
    pub fn connect(
        config: &DatabaseConfig,
        options: Options,
        migrate: &dyn Fn(&mut dyn Tx) -> Result<(), Error>,
    ) -> Result<Db, Error> {
        let backend = match config.kind {
            DatabaseType::Sqlite => Backend::Sqlite(sqlite::SqliteDb::open(
                config,
                options.sqlite_readers,
                migrate,
            )?),
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => Backend::Postgres(postgres::open(config, migrate)?),
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => Backend::Mysql(mysql::open(config, migrate)?),
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::Database(format!(
                    "{other} support is not compiled into this binary"
                )))
            }
        };
        Ok(Db {
            dialect: Dialect::of(config.kind),
            backend,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Runs `f` in one write transaction: all of it or nothing. A lost race (see
    /// [`Error::LostRace`]) runs `f` again, so `f` must only touch the database.
    pub fn write<T, E: TxError>(&self, f: impl Fn(&mut dyn Tx) -> Result<T, E>) -> Result<T, E> {
        match &self.backend {
            Backend::Sqlite(db) => db.write(f),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.run(true, f),
            #[cfg(feature = "mysql")]
            Backend::Mysql(db) => db.run(true, f),
        }
    }

    /// Runs `f` in one read-only transaction that sees a single snapshot of the database, also
    /// while others write (an export): SQLite takes the write lock (writers wait), PostgreSQL
    /// and MySQL read at REPEATABLE READ.
    pub fn snapshot<T, E: TxError>(&self, f: impl Fn(&mut dyn Tx) -> Result<T, E>) -> Result<T, E> {
        match self.dialect {
            Dialect::Sqlite => self.write(f),
            Dialect::Postgres => self.write(|tx| {
                tx.batch("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
                f(tx)
            }),
            // `write` has begun its transaction at READ COMMITTED already; here the snapshot is
            // taken on the plain connection (a failed one is not reused by the pool).
            Dialect::Mysql => self.read(|tx| {
                tx.batch("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
                tx.batch("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")?;
                let result = f(tx);
                let end = tx.batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
                let value = result?;
                end?;
                Ok(value)
            }),
        }
    }

    /// Runs `f` outside a transaction (each statement sees the latest committed data).
    pub fn read<T, E: TxError>(&self, f: impl Fn(&mut dyn Tx) -> Result<T, E>) -> Result<T, E> {
        match &self.backend {
            Backend::Sqlite(db) => db.read(f),
            #[cfg(feature = "postgres")]
            Backend::Postgres(db) => db.run(false, f),
            #[cfg(feature = "mysql")]
            Backend::Mysql(db) => db.run(false, f),
        }
    }
}
