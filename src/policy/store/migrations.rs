//! The policy tables' migrations, recorded in `netman_migrations` (applied by
//! [`crate::db::migrate`] under the database's migration lock), and the tag pool they are filled
//! with.

use crate::db::error::context;
use crate::db::migrate::{self, Migration, Schema};
use crate::db::{Dialect, Error, Tx};

/// The newest schema version this binary knows.
pub const KNOWN_VERSION: i64 = 3;

/// The policy tables.
pub(crate) const SCHEMA: Schema = Schema {
    table: "netman_migrations",
    known: KNOWN_VERSION,
    migrations,
};

fn migrations(dialect: Dialect) -> Vec<Migration> {
    vec![
        tables(dialect),
        tag_quarantine(dialect),
        change_log(dialect),
    ]
}

/// The table of recent policy changes with the app ids each touched
/// ([`super::engine::Engine::changes_since`]): another policy server on the same database reads
/// it when the version moves, so it wakes only the watches of those apps.
fn change_log(dialect: Dialect) -> Migration {
    Migration {
        version: 3,
        name: "policy change log: policy_changes",
        statements: match dialect {
            Dialect::Sqlite | Dialect::Postgres => vec![
                "CREATE TABLE IF NOT EXISTS policy_changes (version BIGINT NOT NULL PRIMARY KEY, \
                 prev_version BIGINT NOT NULL, ids TEXT NOT NULL)",
            ],
            Dialect::Mysql => vec![
                "CREATE TABLE IF NOT EXISTS policy_changes (version BIGINT NOT NULL PRIMARY KEY, \
                 prev_version BIGINT NOT NULL, ids MEDIUMTEXT NOT NULL) ENGINE=InnoDB",
            ],
        },
    }
}

/// When each free tag slot was released (Unix milliseconds; 0: never used, or released before
/// this migration), and the index the allocator walks: free slots, least recently released first.
/// Existing assignments are kept.
fn tag_quarantine(dialect: Dialect) -> Migration {
    Migration {
        version: 2,
        name: "tag quarantine: groups.released_at",
        statements: match dialect {
            // One transaction: the ALTER is never half-applied.
            Dialect::Sqlite => vec![
                "ALTER TABLE \"groups\" ADD COLUMN released_at BIGINT NOT NULL DEFAULT 0",
                "CREATE INDEX IF NOT EXISTS idx_groups_free_since ON \"groups\" (released_at, id) \
                 WHERE guid IS NULL",
            ],
            Dialect::Postgres => vec![
                "ALTER TABLE \"groups\" ADD COLUMN IF NOT EXISTS released_at BIGINT NOT NULL DEFAULT 0",
                "CREATE INDEX IF NOT EXISTS idx_groups_free_since ON \"groups\" (released_at, id) \
                 WHERE guid IS NULL",
            ],
            // DDL commits at once and MySQL (unlike MariaDB) has no ADD COLUMN IF NOT EXISTS: each
            // change is made only if information_schema does not show it yet, so a migrator that
            // died half-way can run again.
            Dialect::Mysql => vec![
                "SET @netman_ddl = (SELECT IF(COUNT(*) = 0, \
                 'ALTER TABLE `groups` ADD COLUMN released_at BIGINT NOT NULL DEFAULT 0', 'DO 0') \
                 FROM information_schema.columns WHERE table_schema = DATABASE() \
                 AND table_name = 'groups' AND column_name = 'released_at')",
                "PREPARE netman_ddl FROM @netman_ddl",
                "EXECUTE netman_ddl",
                "DEALLOCATE PREPARE netman_ddl",
                "SET @netman_ddl = (SELECT IF(COUNT(*) = 0, \
                 'ALTER TABLE `groups` ADD KEY idx_groups_free_since (guid, released_at, id)', 'DO 0') \
                 FROM information_schema.statistics WHERE table_schema = DATABASE() \
                 AND table_name = 'groups' AND index_name = 'idx_groups_free_since')",
                "PREPARE netman_ddl FROM @netman_ddl",
                "EXECUTE netman_ddl",
                "DEALLOCATE PREPARE netman_ddl",
            ],
        },
    }
}

fn tables(dialect: Dialect) -> Migration {
    Migration {
        version: 1,
        name: "policy tables: groups (tag pool), destinations, policies, policies_info",
        statements: match dialect {
            Dialect::Sqlite => vec![
                "CREATE TABLE IF NOT EXISTS \"groups\" (id INTEGER PRIMARY KEY, \
                 guid VARCHAR(255) NULL UNIQUE, type VARCHAR(255) DEFAULT 'app')",
                "CREATE INDEX IF NOT EXISTS idx_type ON \"groups\" (type)",
                "CREATE TABLE IF NOT EXISTS destinations (id INTEGER PRIMARY KEY, \
                 group_id INTEGER NOT NULL REFERENCES \"groups\" (id), port INTEGER NOT NULL DEFAULT 0, \
                 protocol VARCHAR(255) NOT NULL, start_port INTEGER NOT NULL, \
                 end_port INTEGER NOT NULL, UNIQUE (group_id, start_port, end_port, protocol))",
                "CREATE TABLE IF NOT EXISTS policies (id INTEGER PRIMARY KEY, \
                 group_id INTEGER NOT NULL REFERENCES \"groups\" (id), \
                 destination_id INTEGER NOT NULL REFERENCES destinations (id), \
                 UNIQUE (group_id, destination_id))",
                "CREATE INDEX IF NOT EXISTS idx_policies_destination_id ON policies (destination_id)",
                "CREATE TABLE IF NOT EXISTS policies_info (id INTEGER PRIMARY KEY, \
                 last_updated BIGINT NOT NULL)",
                "INSERT OR IGNORE INTO policies_info (id, last_updated) VALUES (1, 0)",
            ],
            Dialect::Postgres => vec![
                "CREATE TABLE IF NOT EXISTS \"groups\" (id INTEGER PRIMARY KEY, \
                 guid VARCHAR(255) NULL UNIQUE, type VARCHAR(255) DEFAULT 'app')",
                "CREATE INDEX IF NOT EXISTS idx_type ON \"groups\" (type)",
                // The lowest free slot without sorting the pool (the UNIQUE index on guid is not
                // ordered by id here; in SQLite and InnoDB it is).
                "CREATE INDEX IF NOT EXISTS idx_groups_free ON \"groups\" (id) WHERE guid IS NULL",
                "CREATE TABLE IF NOT EXISTS destinations (id SERIAL PRIMARY KEY, \
                 group_id INTEGER NOT NULL REFERENCES \"groups\" (id), port INTEGER NOT NULL DEFAULT 0, \
                 protocol VARCHAR(255) NOT NULL, start_port INTEGER NOT NULL, \
                 end_port INTEGER NOT NULL, UNIQUE (group_id, start_port, end_port, protocol))",
                "CREATE TABLE IF NOT EXISTS policies (id SERIAL PRIMARY KEY, \
                 group_id INTEGER NOT NULL REFERENCES \"groups\" (id), \
                 destination_id INTEGER NOT NULL REFERENCES destinations (id), \
                 UNIQUE (group_id, destination_id))",
                "CREATE INDEX IF NOT EXISTS idx_policies_destination_id ON policies (destination_id)",
                "CREATE TABLE IF NOT EXISTS policies_info (id INTEGER PRIMARY KEY, \
                 last_updated BIGINT NOT NULL)",
                "INSERT INTO policies_info (id, last_updated) VALUES (1, 0) ON CONFLICT DO NOTHING",
            ],
            Dialect::Mysql => vec![
                "CREATE TABLE IF NOT EXISTS `groups` (id INT NOT NULL PRIMARY KEY, \
                 guid VARCHAR(255) NULL, type VARCHAR(255) DEFAULT 'app', \
                 UNIQUE KEY groups_guid_key (guid), KEY idx_type (type), \
                 KEY idx_groups_free (guid, id)) ENGINE=InnoDB",
                "CREATE TABLE IF NOT EXISTS destinations (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 group_id INT NOT NULL, port INT NOT NULL DEFAULT 0, protocol VARCHAR(255) NOT NULL, \
                 start_port INT NOT NULL, end_port INT NOT NULL, \
                 UNIQUE KEY destinations_unique (group_id, start_port, end_port, protocol), \
                 CONSTRAINT destinations_group_id_fkey FOREIGN KEY (group_id) REFERENCES `groups` (id)) \
                 ENGINE=InnoDB",
                "CREATE TABLE IF NOT EXISTS policies (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 group_id INT NOT NULL, destination_id INT NOT NULL, \
                 UNIQUE KEY policies_unique (group_id, destination_id), \
                 KEY idx_policies_destination_id (destination_id), \
                 CONSTRAINT policies_group_id_fkey FOREIGN KEY (group_id) REFERENCES `groups` (id), \
                 CONSTRAINT policies_destination_id_fkey FOREIGN KEY (destination_id) \
                 REFERENCES destinations (id)) ENGINE=InnoDB",
                "CREATE TABLE IF NOT EXISTS policies_info (id INT NOT NULL PRIMARY KEY, \
                 last_updated BIGINT NOT NULL) ENGINE=InnoDB",
                "INSERT IGNORE INTO policies_info (id, last_updated) VALUES (1, 0)",
            ],
        },
    }
}

/// Applies the missing migrations and fills the tag pool up to 2^(8L)-1 free slots. Refuses a
/// schema newer than [`KNOWN_VERSION`]. The caller holds the migration lock.
pub(crate) fn migrate_locked(tx: &mut dyn Tx, tag_length: u8) -> Result<(), Error> {
    migrate::apply(tx, &SCHEMA)?;
    let dialect = tx.dialect();
    if fill_tag_pool(tx, tag_length)? && dialect == Dialect::Postgres {
        // Statistics for the planner right away, not when autovacuum gets to 65,535 new rows.
        tx.batch("ANALYZE \"groups\"")?;
    }
    Ok(())
}

/// Inserts the free slots `max(id)+1 ..= 2^(8L)-1` (all of them on a fresh database). Re-runnable.
/// Returns whether it inserted any.
fn fill_tag_pool(tx: &mut dyn Tx, tag_length: u8) -> Result<bool, Error> {
    let want = (1i64 << (8 * tag_length as i64)) - 1;
    let rows = tx.rows("SELECT COALESCE(MAX(id), 0) FROM \"groups\"", &[])?;
    let have = rows.first().map(|r| r[0].int()).transpose()?.unwrap_or(0);
    let mut next = have + 1;
    while next <= want {
        let end = (next + 999).min(want);
        let values: Vec<String> = (next..=end).map(|i| format!("({i})")).collect();
        tx.batch(&format!(
            "INSERT INTO \"groups\" (id) VALUES {}",
            values.join(",")
        ))
        .map_err(|e| context(e, "filling the tag pool"))?;
        next = end + 1;
    }
    Ok(have < want)
}
