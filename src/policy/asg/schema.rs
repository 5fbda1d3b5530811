//! The security-group tables, recorded in `asg_migrations`: `security_groups` in the original's
//! shape (kept as it is when an adopted database has it), the version every change moves
//! (`security_groups_info`), the syncer's remembered Cloud Controller timestamp, and the lease
//! that lets one syncer run at a time (`asg_syncer_lock`).

use crate::db::migrate::{Migration, Schema};
use crate::db::Dialect;

pub const KNOWN_VERSION: i64 = 1;

pub(crate) const SCHEMA: Schema = Schema {
    table: "asg_migrations",
    known: KNOWN_VERSION,
    migrations,
};

fn migrations(dialect: Dialect) -> Vec<Migration> {
    vec![tables(dialect)]
}

fn tables(dialect: Dialect) -> Migration {
    use crate::policy::adopt::original_schema::security_groups_statement;
    use crate::policy::security_groups::SQLITE_TABLE;
    let mut statements = match dialect {
        Dialect::Sqlite => vec![SQLITE_TABLE],
        Dialect::Postgres => vec![security_groups_statement(crate::db::DatabaseType::Postgres)],
        Dialect::Mysql => vec![security_groups_statement(crate::db::DatabaseType::Mysql)],
    };
    statements.extend(match dialect {
        Dialect::Sqlite => [
            "CREATE TABLE IF NOT EXISTS security_groups_info (id INTEGER PRIMARY KEY, \
             version BIGINT NOT NULL, cc_last_update VARCHAR(64) NOT NULL DEFAULT '', \
             cc_synced_at BIGINT NOT NULL DEFAULT 0)",
            "INSERT OR IGNORE INTO security_groups_info (id, version) VALUES (1, 0)",
            "CREATE TABLE IF NOT EXISTS asg_syncer_lock (id INTEGER PRIMARY KEY, \
             holder VARCHAR(255) NOT NULL, expires_at BIGINT NOT NULL)",
            "INSERT OR IGNORE INTO asg_syncer_lock (id, holder, expires_at) VALUES (1, '', 0)",
        ],
        Dialect::Postgres => [
            "CREATE TABLE IF NOT EXISTS security_groups_info (id INTEGER PRIMARY KEY, \
             version BIGINT NOT NULL, cc_last_update VARCHAR(64) NOT NULL DEFAULT '', \
             cc_synced_at BIGINT NOT NULL DEFAULT 0)",
            "INSERT INTO security_groups_info (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING",
            "CREATE TABLE IF NOT EXISTS asg_syncer_lock (id INTEGER PRIMARY KEY, \
             holder VARCHAR(255) NOT NULL, expires_at BIGINT NOT NULL)",
            "INSERT INTO asg_syncer_lock (id, holder, expires_at) VALUES (1, '', 0) \
             ON CONFLICT DO NOTHING",
        ],
        Dialect::Mysql => [
            "CREATE TABLE IF NOT EXISTS security_groups_info (id INT NOT NULL PRIMARY KEY, \
             version BIGINT NOT NULL, cc_last_update VARCHAR(64) NOT NULL DEFAULT '', \
             cc_synced_at BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB",
            "INSERT IGNORE INTO security_groups_info (id, version) VALUES (1, 0)",
            "CREATE TABLE IF NOT EXISTS asg_syncer_lock (id INT NOT NULL PRIMARY KEY, \
             holder VARCHAR(255) NOT NULL, expires_at BIGINT NOT NULL) ENGINE=InnoDB",
            "INSERT IGNORE INTO asg_syncer_lock (id, holder, expires_at) VALUES (1, '', 0)",
        ],
    });
    Migration {
        version: 1,
        name: "security groups: security_groups (original shape), security_groups_info, \
               asg_syncer_lock",
        statements,
    }
}
