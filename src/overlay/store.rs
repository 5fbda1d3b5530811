//! Where the controller keeps leases: the [`LeaseStore`] trait and its implementation on the
//! project's SQL layer ([`crate::db`]): SQLite by default, PostgreSQL and MySQL/MariaDB behind the
//! `postgres` and `mysql` cargo features.
//!
//! The table is the reference's `subnets` (§7.1): unique `underlay_ip`, `overlay_subnet` and
//! `overlay_hwaddr`, `last_renewed_at` in Unix seconds (passed in, no vendor time functions). Its
//! migrations are recorded in `overlay_migrations` and applied under the database's migration
//! lock, so several controllers starting together do not race.
//!
//! Concurrency with several controllers on one database: inserts only happen if no row holds the
//! underlay IP, subnet or MAC (`INSERT ... WHERE NOT EXISTS`), and the unique constraints catch the
//! race two transactions can still run into; [`Db`] retries such a race, and the retry then sees
//! the committed row and answers [`StoreError::Conflict`], so the controller picks another subnet
//! (as the reference does).

use super::Lease;
use crate::db::{
    migrate, Cell, DatabaseConfig, Db, Dialect, Error, Migration, Options, Param, Schema, Tx, Val,
};
use std::sync::Arc;

/// A stored lease and when it was last renewed (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLease {
    pub lease: Lease,
    pub last_renewed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A unique constraint (underlay IP, subnet or MAC) was violated: someone else got there first.
    Conflict(String),
    Other(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(m) => write!(f, "conflict: {m}"),
            StoreError::Other(m) => write!(f, "{m}"),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Lease persistence. Every method is one statement or one transaction.
pub trait LeaseStore: Send + Sync {
    /// Every stored lease, expired or not.
    fn leases(&self) -> StoreResult<Vec<StoredLease>>;
    fn lease_for_underlay(&self, underlay_ip: &str) -> StoreResult<Option<StoredLease>>;
    /// Inserts; [`StoreError::Conflict`] if the underlay IP, subnet or MAC is taken.
    fn insert(&self, lease: &Lease, now: i64) -> StoreResult<()>;
    /// Deletes the lease of `underlay_ip` (none is fine).
    fn delete(&self, underlay_ip: &str) -> StoreResult<()>;
    /// In one transaction: deletes the lease of `old_underlay_ip` if it is still expired
    /// (`last_renewed_at <= cutoff`) and inserts `new`. False if the old lease was renewed or
    /// gone meanwhile (nothing changed).
    fn reclaim(
        &self,
        old_underlay_ip: &str,
        cutoff: i64,
        new: &Lease,
        now: i64,
    ) -> StoreResult<bool>;
    /// Sets `last_renewed_at = now`; false if there is no lease for `underlay_ip`.
    fn renew(&self, underlay_ip: &str, now: i64) -> StoreResult<bool>;
    /// A cheap round trip, for health checks.
    fn ping(&self) -> StoreResult<()>;
}

/// The newest schema version of the lease tables this binary knows.
pub const LEASE_SCHEMA_VERSION: i64 = 1;

/// The lease table.
const SCHEMA: Schema = Schema {
    table: "overlay_migrations",
    known: LEASE_SCHEMA_VERSION,
    migrations: lease_migrations,
};

fn lease_migrations(dialect: Dialect) -> Vec<Migration> {
    vec![Migration {
        version: 1,
        name: "overlay leases: subnets",
        statements: vec![match dialect {
            Dialect::Sqlite => {
                "CREATE TABLE IF NOT EXISTS subnets (id INTEGER PRIMARY KEY, \
                 underlay_ip VARCHAR(15) NOT NULL UNIQUE, overlay_subnet VARCHAR(18) NOT NULL UNIQUE, \
                 overlay_hwaddr VARCHAR(17) NOT NULL UNIQUE, last_renewed_at BIGINT NOT NULL)"
            }
            Dialect::Postgres => {
                "CREATE TABLE IF NOT EXISTS subnets (id SERIAL PRIMARY KEY, \
                 underlay_ip VARCHAR(15) NOT NULL UNIQUE, overlay_subnet VARCHAR(18) NOT NULL UNIQUE, \
                 overlay_hwaddr VARCHAR(17) NOT NULL UNIQUE, last_renewed_at BIGINT NOT NULL)"
            }
            Dialect::Mysql => {
                "CREATE TABLE IF NOT EXISTS subnets (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 underlay_ip VARCHAR(15) NOT NULL, overlay_subnet VARCHAR(18) NOT NULL, \
                 overlay_hwaddr VARCHAR(17) NOT NULL, last_renewed_at BIGINT NOT NULL, \
                 UNIQUE KEY subnets_underlay_ip_key (underlay_ip), \
                 UNIQUE KEY subnets_overlay_subnet_key (overlay_subnet), \
                 UNIQUE KEY subnets_overlay_hwaddr_key (overlay_hwaddr)) ENGINE=InnoDB"
            }
        }],
    }]
}

/// The lease store on SQLite, PostgreSQL or MySQL/MariaDB.
pub struct SqlLeaseStore {
    db: Db,
}

/// Opens the configured store: checks the config, connects (retrying with backoff until
/// `database.connect_timeout_seconds`) and migrates.
pub fn open(config: &DatabaseConfig) -> Result<Arc<dyn LeaseStore>, String> {
    Db::open(config, Options::default(), migrate)
        .map(|db| Arc::new(SqlLeaseStore { db }) as Arc<dyn LeaseStore>)
        .map_err(|e| e.to_string())
}

fn migrate(tx: &mut dyn Tx) -> Result<(), Error> {
    migrate::apply(tx, &SCHEMA).map(|_| ())
}

impl SqlLeaseStore {
    /// Connects and migrates; one attempt (see [`open`] for retries).
    pub fn open(config: &DatabaseConfig) -> Result<SqlLeaseStore, Error> {
        Ok(SqlLeaseStore {
            db: Db::connect(config, Options::default(), &migrate)?,
        })
    }

    fn run<T>(
        &self,
        context: &str,
        write: bool,
        f: impl Fn(&mut dyn Tx) -> Result<T, Error>,
    ) -> StoreResult<T> {
        let result = if write {
            self.db.write(f)
        } else {
            self.db.read(f)
        };
        result.map_err(|e| StoreError::Other(format!("{context}: {e}")))
    }

    /// Inserts `lease` unless a row holds its underlay IP, subnet or MAC (other than the row of
    /// `except_underlay`, which the caller is replacing). False if nothing was inserted.
    fn insert_unless_taken(&self, tx: &mut dyn Tx, lease: &Lease, now: i64) -> Result<bool, Error> {
        use Param::{BigInt, Text};
        let sql = self.db.dialect().insert_unless_exists(
            "subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at)",
            &[Text, Text, Text, BigInt],
            "SELECT 1 FROM subnets \
             WHERE underlay_ip = ? OR overlay_subnet = ? OR overlay_hwaddr = ?",
        );
        let n = tx.exec(
            &sql,
            &[
                Val::Str(&lease.underlay_ip),
                Val::Str(&lease.overlay_subnet),
                Val::Str(&lease.overlay_hardware_addr),
                Val::Int(now),
                Val::Str(&lease.underlay_ip),
                Val::Str(&lease.overlay_subnet),
                Val::Str(&lease.overlay_hardware_addr),
            ],
        )?;
        Ok(n == 1)
    }
}

const SELECT: &str =
    "SELECT underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at FROM subnets";

fn row_to_lease(row: &[Cell]) -> Result<StoredLease, Error> {
    if row.len() != 4 {
        return Err(Error::Database(format!(
            "subnets row has {} columns",
            row.len()
        )));
    }
    Ok(StoredLease {
        lease: Lease {
            underlay_ip: row[0].text()?,
            overlay_subnet: row[1].text()?,
            overlay_hardware_addr: row[2].text()?,
        },
        last_renewed_at: row[3].int()?,
    })
}

fn taken(lease: &Lease) -> StoreError {
    StoreError::Conflict(format!(
        "underlay IP {}, subnet {} or MAC {} is already leased",
        lease.underlay_ip, lease.overlay_subnet, lease.overlay_hardware_addr
    ))
}

impl LeaseStore for SqlLeaseStore {
    fn leases(&self) -> StoreResult<Vec<StoredLease>> {
        self.run("listing leases", false, |tx| {
            tx.rows(&format!("{SELECT} ORDER BY id"), &[])?
                .iter()
                .map(|r| row_to_lease(r))
                .collect()
        })
    }

    fn lease_for_underlay(&self, underlay_ip: &str) -> StoreResult<Option<StoredLease>> {
        self.run("reading lease", false, |tx| {
            tx.rows(
                &format!("{SELECT} WHERE underlay_ip = ?"),
                &[Val::Str(underlay_ip)],
            )?
            .first()
            .map(|r| row_to_lease(r))
            .transpose()
        })
    }

    fn insert(&self, lease: &Lease, now: i64) -> StoreResult<()> {
        if self.run("inserting lease", true, |tx| {
            self.insert_unless_taken(tx, lease, now)
        })? {
            Ok(())
        } else {
            Err(taken(lease))
        }
    }

    fn delete(&self, underlay_ip: &str) -> StoreResult<()> {
        self.run("deleting lease", true, |tx| {
            tx.exec(
                "DELETE FROM subnets WHERE underlay_ip = ?",
                &[Val::Str(underlay_ip)],
            )
            .map(|_| ())
        })
    }

    fn reclaim(
        &self,
        old_underlay_ip: &str,
        cutoff: i64,
        new: &Lease,
        now: i64,
    ) -> StoreResult<bool> {
        #[derive(PartialEq)]
        enum Outcome {
            Reclaimed,
            Gone,
            Taken,
        }
        let outcome = self.run("reclaiming lease", true, |tx| {
            // Lock the expired row (a concurrent reclaim of it waits here and then finds it gone).
            let lock = format!(
                "SELECT id FROM subnets WHERE underlay_ip = ? AND last_renewed_at <= ?{}",
                self.db.dialect().for_update()
            );
            if tx
                .rows(&lock, &[Val::Str(old_underlay_ip), Val::Int(cutoff)])?
                .is_empty()
            {
                return Ok(Outcome::Gone);
            }
            // Nothing may change unless the new lease fits once the old row is gone.
            let clash = tx.rows(
                "SELECT 1 FROM subnets WHERE underlay_ip <> ? AND \
                 (underlay_ip = ? OR overlay_subnet = ? OR overlay_hwaddr = ?)",
                &[
                    Val::Str(old_underlay_ip),
                    Val::Str(&new.underlay_ip),
                    Val::Str(&new.overlay_subnet),
                    Val::Str(&new.overlay_hardware_addr),
                ],
            )?;
            if !clash.is_empty() {
                return Ok(Outcome::Taken);
            }
            tx.exec(
                "DELETE FROM subnets WHERE underlay_ip = ? AND last_renewed_at <= ?",
                &[Val::Str(old_underlay_ip), Val::Int(cutoff)],
            )?;
            if !self.insert_unless_taken(tx, new, now)? {
                // Only a concurrent insert can get here: retried as a lost race.
                return Err(Error::LostRace(format!(
                    "lease {} taken concurrently",
                    new.overlay_subnet
                )));
            }
            Ok(Outcome::Reclaimed)
        })?;
        match outcome {
            Outcome::Reclaimed => Ok(true),
            Outcome::Gone => Ok(false),
            Outcome::Taken => Err(taken(new)),
        }
    }

    fn renew(&self, underlay_ip: &str, now: i64) -> StoreResult<bool> {
        self.run("renewing lease", true, |tx| {
            let n = tx.exec(
                "UPDATE subnets SET last_renewed_at = ? WHERE underlay_ip = ?",
                &[Val::Int(now), Val::Str(underlay_ip)],
            )?;
            // MySQL counts changed rows, not matched ones: a renew within the same second
            // changes nothing but the lease exists.
            Ok(n > 0
                || !tx
                    .rows(
                        "SELECT 1 FROM subnets WHERE underlay_ip = ?",
                        &[Val::Str(underlay_ip)],
                    )?
                    .is_empty())
        })
    }

    fn ping(&self) -> StoreResult<()> {
        self.run("database check", false, |tx| {
            tx.rows("SELECT 1", &[]).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_store_constraints_renew_reclaim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let s = SqlLeaseStore::open(&DatabaseConfig::sqlite(path.to_str().unwrap())).unwrap();
        let a = Lease::new(
            "10.0.0.1".parse().unwrap(),
            "10.255.1.0/24".parse().unwrap(),
        );
        let b = Lease::new(
            "10.0.0.2".parse().unwrap(),
            "10.255.1.0/24".parse().unwrap(),
        );
        s.insert(&a, 100).unwrap();
        assert!(matches!(s.insert(&b, 100), Err(StoreError::Conflict(_))));
        assert!(s.renew("10.0.0.1", 200).unwrap());
        assert!(!s.renew("10.0.0.9", 200).unwrap());
        assert_eq!(
            s.lease_for_underlay("10.0.0.1")
                .unwrap()
                .unwrap()
                .last_renewed_at,
            200
        );
        // Not expired at cutoff 150: nothing changes.
        assert!(!s.reclaim("10.0.0.1", 150, &b, 300).unwrap());
        assert!(s.reclaim("10.0.0.1", 250, &b, 300).unwrap());
        let all = s.leases().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].lease, b);
        s.delete("10.0.0.2").unwrap();
        s.delete("10.0.0.2").unwrap();
        assert!(s.leases().unwrap().is_empty());
        s.ping().unwrap();
    }
}
