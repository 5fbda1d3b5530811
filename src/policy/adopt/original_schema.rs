//! The original's schema at HEAD (cf-networking-release, sql-migrate migrations up to 79) as
//! its migrator leaves it on a fresh database: the target of `migrate --to-original`. Written as
//! the final state rather than the 88 migrations; tests compare it with a database built
//! migration by migration (`tests/fixtures/cf_networking/`). Every statement is re-runnable.

use crate::db::DatabaseType;

/// The tables of the original's HEAD schema that netman's schema replaces (`security_groups`
/// is shared: kept as it is, created when missing).
pub const ORIGINAL_TABLES: [&str; 6] = [
    "gorp_migrations",
    "gorp_lock",
    "groups",
    "destinations",
    "policies",
    "policies_info",
];

/// `CREATE ... IF NOT EXISTS` for every table and index, in dependency order.
pub fn create_statements(kind: DatabaseType) -> &'static [&'static str] {
    match kind {
        DatabaseType::Postgres => POSTGRES,
        DatabaseType::Mysql => MYSQL,
        DatabaseType::Sqlite => &[],
    }
}

/// `security_groups` as the original has it (its migrations 67, 75, 76).
pub fn security_groups_statement(kind: DatabaseType) -> &'static str {
    match kind {
        DatabaseType::Postgres => POSTGRES_SECURITY_GROUPS,
        _ => MYSQL_SECURITY_GROUPS,
    }
}

// sql-migrate's bookkeeping carries gorp's column types for the dialect; `groups`, `destinations`
// and `policies` keep the nullable columns and the constraint names the migrations produced.
const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS gorp_migrations (id text NOT NULL PRIMARY KEY, \
     applied_at timestamp with time zone)",
    "CREATE TABLE IF NOT EXISTS gorp_lock (lock text NOT NULL PRIMARY KEY UNIQUE, \
     acquired_at timestamp with time zone)",
    "CREATE TABLE IF NOT EXISTS groups (id SERIAL PRIMARY KEY, guid text UNIQUE, \
     type text DEFAULT 'app')",
    "CREATE INDEX IF NOT EXISTS idx_type ON groups (type)",
    "CREATE TABLE IF NOT EXISTS destinations (id SERIAL PRIMARY KEY, \
     group_id int REFERENCES groups (id), port int, protocol text, start_port int, end_port int, \
     CONSTRAINT unique_destination UNIQUE (group_id, start_port, end_port, protocol))",
    "CREATE TABLE IF NOT EXISTS policies (id SERIAL PRIMARY KEY, \
     group_id int REFERENCES groups (id), destination_id int REFERENCES destinations (id), \
     UNIQUE (group_id, destination_id))",
    "CREATE TABLE IF NOT EXISTS policies_info (id SERIAL PRIMARY KEY, \
     last_updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
];

const POSTGRES_SECURITY_GROUPS: &str = "CREATE TABLE IF NOT EXISTS security_groups (\
     id BIGSERIAL PRIMARY KEY, guid varchar(36) NOT NULL UNIQUE, name varchar(255) NOT NULL, \
     rules text, staging_default bool DEFAULT false, running_default bool DEFAULT false, \
     staging_spaces jsonb, running_spaces jsonb)";

// MySQL ignores a column's REFERENCES and MariaDB turns it into a foreign key; both are written
// as the original wrote them, so each server ends where a fresh install on it ends.
const MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS gorp_migrations (id varchar(255) NOT NULL PRIMARY KEY, \
     applied_at datetime) ENGINE=InnoDB DEFAULT CHARSET=utf8",
    "CREATE TABLE IF NOT EXISTS gorp_lock (`lock` varchar(255) NOT NULL PRIMARY KEY UNIQUE, \
     acquired_at datetime) ENGINE=InnoDB DEFAULT CHARSET=utf8",
    "CREATE TABLE IF NOT EXISTS `groups` (id int NOT NULL AUTO_INCREMENT, guid varchar(255), \
     type varchar(255) DEFAULT 'app', UNIQUE (guid), PRIMARY KEY (id), KEY idx_type (type))",
    "CREATE TABLE IF NOT EXISTS destinations (id int NOT NULL AUTO_INCREMENT, group_id int, \
     port int, protocol varchar(255), start_port int, end_port int, PRIMARY KEY (id), \
     UNIQUE KEY unique_destination (group_id, start_port, end_port, protocol))",
    "CREATE TABLE IF NOT EXISTS policies (id int NOT NULL AUTO_INCREMENT, \
     group_id int REFERENCES `groups` (id), destination_id int REFERENCES destinations (id), \
     UNIQUE (group_id, destination_id), PRIMARY KEY (id), \
     CONSTRAINT policies_destination_id_fkey FOREIGN KEY (destination_id) \
     REFERENCES destinations (id))",
    "CREATE TABLE IF NOT EXISTS policies_info (id int NOT NULL AUTO_INCREMENT, \
     PRIMARY KEY (id), last_updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
];

const MYSQL_SECURITY_GROUPS: &str = "CREATE TABLE IF NOT EXISTS security_groups (\
     id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, guid varchar(36) NOT NULL, \
     name varchar(255) NOT NULL, rules mediumtext, staging_default bool DEFAULT false, \
     running_default bool DEFAULT false, staging_spaces json, running_spaces json, UNIQUE (guid))";
