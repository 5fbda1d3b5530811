//! Every difference between the three SQL dialects, in one place. Stores write their SQL once, in
//! the common subset with `?` placeholders and `"double-quoted"` identifiers, and ask the
//! [`Dialect`] for the pieces that differ. What is not SQL text lives in the dialect's backend
//! file, listed here:
//!
//! | difference | SQLite | PostgreSQL | MySQL/MariaDB |
//! |---|---|---|---|
//! | placeholders ([`Dialect::native`]) | `?` | `$1, $2, ...` | `?` |
//! | quoted identifiers (`"groups"`, [`Dialect::native`]) | `"x"` | `"x"` | `` `x` `` |
//! | write transaction (`sqlite.rs`, `postgres.rs`, `mysql.rs`) | `BEGIN IMMEDIATE` (the write lock up front) | `BEGIN` (READ COMMITTED) | `START TRANSACTION` at READ COMMITTED |
//! | row lock ([`Dialect::for_update`]) | none (BEGIN IMMEDIATE serialises writers) | `FOR UPDATE` | `FOR UPDATE` |
//! | insert unless present ([`Dialect::insert_unless_exists`]) | `INSERT ... SELECT ... WHERE NOT EXISTS` | same, parameters cast ([`Dialect::param`]) | same, `FROM DUAL` |
//! | insert-or-ignore in migrations | `INSERT OR IGNORE` | `ON CONFLICT DO NOTHING` | `INSERT IGNORE` |
//! | index hint ([`Dialect::force_index`]) | `INDEXED BY ..` | none | `FORCE INDEX (..)` |
//! | migration lock ([`Dialect::migration_lock`]) | the write transaction | `pg_advisory_lock` | `GET_LOCK` |
//! | migrations run in | one transaction | one transaction | autocommit (DDL commits implicitly; every statement re-runnable) |
//! | lost race, retried ([`SQLITE_LOST_RACE`], [`POSTGRES_LOST_RACE`], [`MYSQL_LOST_RACE`]) | busy, locked | serialization failure, deadlock, unique, foreign key | deadlock, lock wait timeout, duplicate key, missing parent, record changed |
//! | dead pooled connection, retried once (`postgres.rs`, `mysql.rs`) | n/a (local file) | the client reports closed | ping fails |
//! | readers | a pool of read-only WAL connections beside one writer | the pool | the pool |

use super::config::DatabaseType;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

/// The type of a parameter in a select list ([`Dialect::param`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Int,
    BigInt,
    Text,
}

/// SQLite result codes of a lost race: another connection holds the lock (after `busy_timeout`).
pub const SQLITE_LOST_RACE: [rusqlite::ErrorCode; 2] = [
    rusqlite::ErrorCode::DatabaseBusy,
    rusqlite::ErrorCode::DatabaseLocked,
];

/// PostgreSQL SQLSTATEs of a lost race.
pub const POSTGRES_LOST_RACE: [&str; 4] = [
    "40001", // serialization_failure
    "40P01", // deadlock_detected
    "23505", // unique_violation
    "23503", // foreign_key_violation
];

/// MySQL/MariaDB server error codes of a lost race.
pub const MYSQL_LOST_RACE: [u16; 5] = [
    1213, // ER_LOCK_DEADLOCK
    1205, // ER_LOCK_WAIT_TIMEOUT
    1062, // ER_DUP_ENTRY
    1452, // ER_NO_REFERENCED_ROW_2 (parent row deleted meanwhile)
    1020, // ER_CHECKREAD (record changed since last read)
];

/// `pg_advisory_lock` key held while migrating (advisory locks are per database): "netman".
const POSTGRES_MIGRATION_LOCK: i64 = 0x6e65_746d_616e;

/// How a dialect takes and releases the migration lock (one migrator at a time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationLock {
    /// The migrations run in a write transaction, which is the lock (SQLite).
    WriteTransaction,
    /// The statement that takes the lock and the one that releases it (`pg_advisory_lock` waits;
    /// `GET_LOCK` answers 1, or 0 when another migrator held it for 300 s).
    Statements { lock: String, unlock: String },
}

impl Dialect {
    pub fn of(kind: DatabaseType) -> Dialect {
        match kind {
            DatabaseType::Sqlite => Dialect::Sqlite,
            DatabaseType::Postgres => Dialect::Postgres,
            DatabaseType::Mysql => Dialect::Mysql,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }

    /// SQL written with `?` placeholders and `"double-quoted"` identifiers, in the dialect's own
    /// spelling: PostgreSQL numbers the placeholders, MySQL quotes with backticks (`groups` is a
    /// reserved word there). Single-quoted literals are left alone.
    pub fn native(self, sql: &str) -> Cow<'_, str> {
        let (from, needed) = match self {
            Dialect::Sqlite => return Cow::Borrowed(sql),
            Dialect::Postgres => ('?', sql.contains('?')),
            Dialect::Mysql => ('"', sql.contains('"')),
        };
        if !needed {
            return Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let (mut in_literal, mut n) = (false, 0);
        for c in sql.chars() {
            if c == '\'' {
                in_literal = !in_literal;
            }
            if c != from || in_literal {
                out.push(c);
            } else if self == Dialect::Postgres {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push('`');
            }
        }
        Cow::Owned(out)
    }

    /// Row lock suffix for a SELECT in a write transaction (SQLite serialises writers with BEGIN
    /// IMMEDIATE instead).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            _ => " FOR UPDATE",
        }
    }

    /// An index hint after a table name: MariaDB's planner otherwise sometimes walks the primary
    /// key instead, and SQLite's takes the unique index on `guid` for `guid IS NULL` and sorts
    /// every free slot (25 ms a tag with 65,535 slots); PostgreSQL has none (and needs none).
    pub fn force_index(self, index: &str) -> String {
        match self {
            Dialect::Mysql => format!(" FORCE INDEX ({index})"),
            Dialect::Sqlite => format!(" INDEXED BY {index}"),
            Dialect::Postgres => String::new(),
        }
    }

    /// `FROM DUAL` for `INSERT ... SELECT ... WHERE NOT EXISTS` (MySQL < 5.7 needs a FROM there).
    pub fn dual(self) -> &'static str {
        match self {
            Dialect::Mysql => " FROM DUAL",
            _ => "",
        }
    }

    /// A parameter in a select list (PostgreSQL cannot infer its type there).
    pub fn param(self, kind: Param) -> &'static str {
        match (self, kind) {
            (Dialect::Postgres, Param::Int) => "CAST(? AS INTEGER)",
            (Dialect::Postgres, Param::BigInt) => "CAST(? AS BIGINT)",
            (Dialect::Postgres, Param::Text) => "CAST(? AS VARCHAR)",
            _ => "?",
        }
    }

    /// `INSERT INTO {into} SELECT {values}[ FROM DUAL] WHERE NOT EXISTS ({exists})`: one row
    /// unless a row matches, in every dialect (no vendor upsert). The race two transactions can
    /// still run into ends in a unique-key error, a lost race the runner retries.
    pub fn insert_unless_exists(self, into: &str, values: &[Param], exists: &str) -> String {
        let values: Vec<&str> = values.iter().map(|p| self.param(*p)).collect();
        format!(
            "INSERT INTO {into} SELECT {}{} WHERE NOT EXISTS ({exists})",
            values.join(", "),
            self.dual()
        )
    }

    /// How migrators exclude each other.
    pub fn migration_lock(self) -> MigrationLock {
        match self {
            Dialect::Sqlite => MigrationLock::WriteTransaction,
            Dialect::Postgres => MigrationLock::Statements {
                lock: format!("SELECT pg_advisory_lock({POSTGRES_MIGRATION_LOCK})"),
                unlock: format!("SELECT pg_advisory_unlock({POSTGRES_MIGRATION_LOCK})"),
            },
            Dialect::Mysql => MigrationLock::Statements {
                lock: "SELECT GET_LOCK(CONCAT('netman_migrations.', DATABASE()), 300)".into(),
                unlock: "DO RELEASE_LOCK(CONCAT('netman_migrations.', DATABASE()))".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_placeholders() {
        assert_eq!(
            Dialect::Postgres.native("SELECT ? FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT $1 FROM t WHERE a = $2 AND b IN ($3, $4)"
        );
        assert_eq!(
            Dialect::Postgres.native("SELECT 1 FROM t WHERE a = '?' AND b = ?"),
            "SELECT 1 FROM t WHERE a = '?' AND b = $1"
        );
        assert_eq!(Dialect::Sqlite.native("SELECT ?"), "SELECT ?");
    }

    #[test]
    fn mysql_quotes_identifiers_with_backticks() {
        assert_eq!(
            Dialect::Mysql.native("SELECT id FROM \"groups\" WHERE type = 'a\"b'"),
            "SELECT id FROM `groups` WHERE type = 'a\"b'"
        );
        assert_eq!(Dialect::Postgres.native("\"groups\""), "\"groups\"");
        assert_eq!(Dialect::Sqlite.native("\"groups\""), "\"groups\"");
    }

    #[test]
    fn insert_unless_exists_per_dialect() {
        let sql = |d: Dialect| {
            d.insert_unless_exists(
                "t (a, b)",
                &[Param::Int, Param::Text],
                "SELECT 1 FROM t WHERE a = ?",
            )
        };
        assert_eq!(
            sql(Dialect::Sqlite),
            "INSERT INTO t (a, b) SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM t WHERE a = ?)"
        );
        assert_eq!(
            sql(Dialect::Postgres),
            "INSERT INTO t (a, b) SELECT CAST(? AS INTEGER), CAST(? AS VARCHAR) \
             WHERE NOT EXISTS (SELECT 1 FROM t WHERE a = ?)"
        );
        assert_eq!(
            sql(Dialect::Mysql),
            "INSERT INTO t (a, b) SELECT ?, ? FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM t WHERE a = ?)"
        );
    }
}
