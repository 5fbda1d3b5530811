//! What PostgreSQL and MySQL/MariaDB share: a pool of connections to a database server and the
//! transaction runner over it, which runs a transaction that lost a race again (up to
//! [`MAX_ATTEMPTS`], with a short random backoff) and replaces, once, a pooled connection the
//! server dropped meanwhile (e.g. across a restart). The dialect's connection type says how to run
//! a transaction and how to tell a dead connection ([`Server`]).

use super::config::DatabaseConfig;
use super::dialect::Dialect;
use super::error::{Error, TxError};
use super::pool::{Limits, Pool};
use super::retry::backoff;
use super::tx::Tx;
use std::time::Duration;

const MAX_ATTEMPTS: u32 = 30;
/// How long a caller waits for a connection when `max_open_connections` are in use.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// A connection to a database server, as one dialect drives it.
pub(crate) trait Server: Send + 'static {
    const DIALECT: Dialect;
    /// Runs `f` in a write transaction (`write`) or on the plain connection.
    fn run<T, E: TxError>(
        &mut self,
        write: bool,
        f: &impl Fn(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E>;
    /// Whether the connection may go back to the pool after a call (`failed`: it ended in an
    /// error other than a lost race).
    fn reusable(&mut self, failed: bool) -> bool;
    /// Whether the connection is dead (asked after an error on a connection from the pool).
    fn dead(&mut self) -> bool;
    /// Runs `migrate` under the database's migration lock.
    fn migrate(&mut self, migrate: &dyn Fn(&mut dyn Tx) -> Result<(), Error>) -> Result<(), Error>;
}

pub(crate) struct ServerDb<C> {
    pool: Pool<C>,
}

impl<C: Server> ServerDb<C> {
    /// Connects, runs `migrate` under the migration lock, and keeps that connection in the pool;
    /// one attempt.
    pub(crate) fn open(
        config: &DatabaseConfig,
        connect: Box<dyn Fn() -> Result<C, Error> + Send + Sync>,
        migrate: &dyn Fn(&mut dyn Tx) -> Result<(), Error>,
    ) -> Result<ServerDb<C>, Error> {
        let mut conn = connect()?;
        conn.migrate(migrate).map_err(|e| match e {
            Error::LostRace(m) => Error::Database(format!("migrating: {m}")),
            other => other,
        })?;
        let pool = Pool::new(
            Limits {
                max_open: config.max_open_connections as usize,
                max_idle: config.max_idle_connections as usize,
                max_lifetime: Duration::from_secs(config.connections_max_lifetime_seconds),
                wait: POOL_WAIT,
            },
            connect,
        );
        pool.seed(conn);
        Ok(ServerDb { pool })
    }

    pub(crate) fn run<T, E: TxError>(
        &self,
        write: bool,
        f: impl Fn(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.pool.get()?;
            let result = conn.run(write, &f);
            let lost_race = match &result {
                Err(e) => match e.db() {
                    Some(Error::LostRace(m)) => Some(m.clone()),
                    _ => None,
                },
                Ok(_) => None,
            };
            let failed = result.is_err() && lost_race.is_none();
            if !conn.reusable(failed) {
                conn.mark_broken();
            }
            let e = match (result, lost_race) {
                (Ok(v), _) => return Ok(v),
                (Err(_), Some(m)) => {
                    if attempt >= MAX_ATTEMPTS {
                        return Err(Error::Database(format!(
                            "{}: gave up after {attempt} conflicting attempts: {m}",
                            C::DIALECT.name()
                        ))
                        .into());
                    }
                    drop(conn);
                    backoff(attempt);
                    continue;
                }
                (Err(e), None) => e,
            };
            let stale = attempt == 1
                && matches!(e.db(), Some(Error::Database(_)))
                && conn.reused()
                && conn.dead();
            if !stale {
                return Err(e);
            }
            drop(conn);
            self.pool.discard_idle();
        }
    }
}
