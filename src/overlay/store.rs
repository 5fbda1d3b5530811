//! Where the controller keeps leases: the [`LeaseStore`] trait and its SQLite implementation.
//! The SQL is plain (one table, no vendor functions; time is passed in as Unix seconds) so that
//! PostgreSQL and MySQL implementations can sit behind the same trait.

use super::Lease;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

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

/// SQLite (WAL, busy timeout) behind one mutex: one writer at a time, as SQLite wants.
pub struct SqliteLeaseStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS subnets (
    id INTEGER PRIMARY KEY,
    underlay_ip VARCHAR(15) NOT NULL UNIQUE,
    overlay_subnet VARCHAR(18) NOT NULL UNIQUE,
    overlay_hwaddr VARCHAR(17) NOT NULL UNIQUE,
    last_renewed_at BIGINT NOT NULL
)";

fn other(context: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Other(format!("{context}: {e}"))
}

fn classify(context: &str, e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!("{context}: {e}"))
        }
        _ => other(context, e),
    }
}

impl SqliteLeaseStore {
    pub fn open(path: &Path) -> StoreResult<SqliteLeaseStore> {
        let context = format!("opening SQLite database {}", path.display());
        let conn = Connection::open(path).map_err(|e| other(&context, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| other(&context, e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| other(&context, e))?;
        conn.execute(SCHEMA, [])
            .map_err(|e| other("creating table subnets", e))?;
        Ok(SqliteLeaseStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn row_to_lease(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredLease> {
    Ok(StoredLease {
        lease: Lease {
            underlay_ip: row.get(0)?,
            overlay_subnet: row.get(1)?,
            overlay_hardware_addr: row.get(2)?,
        },
        last_renewed_at: row.get(3)?,
    })
}

const SELECT: &str =
    "SELECT underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at FROM subnets";

impl LeaseStore for SqliteLeaseStore {
    fn leases(&self) -> StoreResult<Vec<StoredLease>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!("{SELECT} ORDER BY id"))
            .map_err(|e| other("listing leases", e))?;
        let rows = stmt
            .query_map([], row_to_lease)
            .map_err(|e| other("listing leases", e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| other("listing leases", e))
    }

    fn lease_for_underlay(&self, underlay_ip: &str) -> StoreResult<Option<StoredLease>> {
        let conn = self.lock();
        conn.query_row(
            &format!("{SELECT} WHERE underlay_ip = ?1"),
            params![underlay_ip],
            row_to_lease,
        )
        .optional()
        .map_err(|e| other("reading lease", e))
    }

    fn insert(&self, lease: &Lease, now: i64) -> StoreResult<()> {
        let conn = self.lock();
        insert_with(&conn, lease, now)
    }

    fn delete(&self, underlay_ip: &str) -> StoreResult<()> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM subnets WHERE underlay_ip = ?1",
            params![underlay_ip],
        )
        .map(|_| ())
        .map_err(|e| other("deleting lease", e))
    }

    fn reclaim(
        &self,
        old_underlay_ip: &str,
        cutoff: i64,
        new: &Lease,
        now: i64,
    ) -> StoreResult<bool> {
        let mut conn = self.lock();
        let tx = conn
            .transaction()
            .map_err(|e| other("reclaiming lease", e))?;
        let deleted = tx
            .execute(
                "DELETE FROM subnets WHERE underlay_ip = ?1 AND last_renewed_at <= ?2",
                params![old_underlay_ip, cutoff],
            )
            .map_err(|e| other("reclaiming lease", e))?;
        if deleted == 0 {
            return Ok(false);
        }
        insert_with(&tx, new, now)?;
        tx.commit().map_err(|e| other("reclaiming lease", e))?;
        Ok(true)
    }

    fn renew(&self, underlay_ip: &str, now: i64) -> StoreResult<bool> {
        let conn = self.lock();
        conn.execute(
            "UPDATE subnets SET last_renewed_at = ?1 WHERE underlay_ip = ?2",
            params![now, underlay_ip],
        )
        .map(|n| n > 0)
        .map_err(|e| other("renewing lease", e))
    }

    fn ping(&self) -> StoreResult<()> {
        let conn = self.lock();
        conn.query_row("SELECT 1", [], |_| Ok(()))
            .map_err(|e| other("database check", e))
    }
}

fn insert_with(conn: &Connection, lease: &Lease, now: i64) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            lease.underlay_ip,
            lease.overlay_subnet,
            lease.overlay_hardware_addr,
            now
        ],
    )
    .map(|_| ())
    .map_err(|e| classify("inserting lease", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_store_constraints_renew_reclaim() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteLeaseStore::open(&dir.path().join("l.db")).unwrap();
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
