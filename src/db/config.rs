//! The `database` section of the policy server's and the overlay controller's configs: which
//! database, how to reach it, the pool's limits. The password (and a connection string, which may
//! hold one) never appears in Debug or Display output.

use crate::config::{require_nonempty, require_positive, require_readable_file, Validate};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseType {
    Sqlite,
    Postgres,
    #[serde(alias = "mariadb")]
    Mysql,
}

impl fmt::Display for DatabaseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatabaseType::Sqlite => "sqlite",
            DatabaseType::Postgres => "postgres",
            DatabaseType::Mysql => "mysql",
        })
    }
}

fn default_connect_timeout() -> u64 {
    120
}
fn default_max_open() -> u32 {
    200
}
fn default_max_idle() -> u32 {
    10
}
fn default_max_lifetime() -> u64 {
    3600
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(rename = "type")]
    pub kind: DatabaseType,
    /// SQLite: the file path or `:memory:`. PostgreSQL: a libpq URL or key=value string
    /// (`postgres://user:pass@host:5432/db`). MySQL: `mysql://user:pass@host:3306/db`.
    /// Exclusive with `user`/`password`/`host`/`port`/`database_name`.
    #[serde(default)]
    pub connection_string: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub host: String,
    /// 0 = the database's default port (5432 / 3306).
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub database_name: String,
    /// How long start-up retries connecting (and migrating) before giving up.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Use TLS and verify the server's certificate against `ca_cert` (PEM file).
    #[serde(default)]
    pub require_ssl: bool,
    #[serde(default)]
    pub ca_cert: String,
    #[serde(default = "default_max_open")]
    pub max_open_connections: u32,
    #[serde(default = "default_max_idle")]
    pub max_idle_connections: u32,
    #[serde(default = "default_max_lifetime")]
    pub connections_max_lifetime_seconds: u64,
}

impl DatabaseConfig {
    /// An SQLite config with defaults for everything else.
    pub fn sqlite(path: &str) -> DatabaseConfig {
        DatabaseConfig {
            kind: DatabaseType::Sqlite,
            connection_string: path.to_string(),
            user: String::new(),
            password: String::new(),
            host: String::new(),
            port: 0,
            database_name: String::new(),
            connect_timeout_seconds: default_connect_timeout(),
            require_ssl: false,
            ca_cert: String::new(),
            max_open_connections: default_max_open(),
            max_idle_connections: default_max_idle(),
            connections_max_lifetime_seconds: default_max_lifetime(),
        }
    }

    /// The port to use: the configured one or the database's default.
    pub fn port_or_default(&self) -> u16 {
        match (self.port, self.kind) {
            (0, DatabaseType::Postgres) => 5432,
            (0, DatabaseType::Mysql) => 3306,
            (p, _) => p,
        }
    }

    fn uses_fields(&self) -> bool {
        !(self.user.is_empty()
            && self.password.is_empty()
            && self.host.is_empty()
            && self.port == 0
            && self.database_name.is_empty())
    }

    /// Where the database is, without credentials (for logs and errors).
    pub fn describe(&self) -> String {
        match self.kind {
            DatabaseType::Sqlite => format!("sqlite database {}", self.connection_string),
            _ if !self.connection_string.is_empty() => {
                format!("{} database (connection_string)", self.kind)
            }
            _ => format!(
                "{} database {:?} at {}:{} as user {:?}",
                self.kind,
                self.database_name,
                self.host,
                self.port_or_default(),
                self.user
            ),
        }
    }
}

impl fmt::Display for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        let connection_string = match self.kind {
            DatabaseType::Sqlite => self.connection_string.as_str(),
            _ => redacted(&self.connection_string),
        };
        f.debug_struct("DatabaseConfig")
            .field("type", &self.kind)
            .field("connection_string", &connection_string)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database_name", &self.database_name)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("require_ssl", &self.require_ssl)
            .field("ca_cert", &self.ca_cert)
            .field("max_open_connections", &self.max_open_connections)
            .field("max_idle_connections", &self.max_idle_connections)
            .field(
                "connections_max_lifetime_seconds",
                &self.connections_max_lifetime_seconds,
            )
            .finish()
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self) -> Result<(), String> {
        require_positive(
            "database.connect_timeout_seconds",
            self.connect_timeout_seconds,
        )?;
        require_positive(
            "database.max_open_connections",
            self.max_open_connections as u64,
        )?;
        if self.max_idle_connections > self.max_open_connections {
            return Err(format!(
                "invalid 'database.max_idle_connections': {} exceeds max_open_connections {}",
                self.max_idle_connections, self.max_open_connections
            ));
        }
        require_positive(
            "database.connections_max_lifetime_seconds",
            self.connections_max_lifetime_seconds,
        )?;
        if !self.ca_cert.is_empty() {
            require_readable_file("database.ca_cert", &self.ca_cert)?;
        }
        match self.kind {
            DatabaseType::Sqlite => {
                require_nonempty("database.connection_string", &self.connection_string)?;
                if self.uses_fields() {
                    return Err(
                        "invalid 'database': type sqlite takes only 'connection_string' \
                                (the file path), not user/password/host/port/database_name"
                            .into(),
                    );
                }
                if self.require_ssl {
                    return Err("invalid 'database.require_ssl': not used by type sqlite".into());
                }
            }
            DatabaseType::Postgres | DatabaseType::Mysql => {
                if !self.connection_string.is_empty() {
                    if self.uses_fields() {
                        return Err("invalid 'database.connection_string': set either \
                                    connection_string or user/password/host/port/database_name, \
                                    not both"
                            .into());
                    }
                    self.check_connection_string()?;
                } else {
                    require_nonempty("database.host", &self.host)?;
                    require_nonempty("database.user", &self.user)?;
                    require_nonempty("database.database_name", &self.database_name)?;
                }
                if self.require_ssl {
                    require_nonempty("database.ca_cert", &self.ca_cert)
                        .map_err(|e| format!("{e} (needed by 'database.require_ssl')"))?;
                }
                self.check_backend_compiled()?;
            }
        }
        Ok(())
    }
}

impl DatabaseConfig {
    /// The connection string must parse (the error never repeats it: it may hold a password).
    fn check_connection_string(&self) -> Result<(), String> {
        match self.kind {
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => self
                .connection_string
                .parse::<postgres::Config>()
                .map(|_| ())
                .map_err(|e| format!("invalid 'database.connection_string': {e}")),
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => mysql::Opts::from_url(&self.connection_string)
                .map(|_| ())
                .map_err(|e| {
                    format!("invalid 'database.connection_string': not a mysql:// URL ({e:?})")
                        .replace(&self.connection_string, "<connection_string>")
                }),
            _ => Ok(()),
        }
    }

    fn check_backend_compiled(&self) -> Result<(), String> {
        let compiled = match self.kind {
            DatabaseType::Sqlite => true,
            DatabaseType::Postgres => cfg!(feature = "postgres"),
            DatabaseType::Mysql => cfg!(feature = "mysql"),
        };
        if !compiled {
            return Err(format!(
                "invalid 'database.type': {} support is not compiled into this binary \
                 (cargo feature \"{}\")",
                self.kind, self.kind
            ));
        }
        if self.kind == DatabaseType::Mysql && self.require_ssl && !cfg!(feature = "mysql-tls") {
            return Err(
                "invalid 'database.require_ssl': TLS to mysql is not compiled into this \
                        binary (cargo feature \"mysql-tls\")"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DatabaseConfig, String> {
        let c: DatabaseConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_sqlite() {
        let c = parse(r#"{"type":"sqlite","connection_string":"/tmp/x.db"}"#).unwrap();
        assert_eq!(c.connect_timeout_seconds, 120);
        assert_eq!(c.max_open_connections, 200);
        assert_eq!(c.max_idle_connections, 10);
        assert_eq!(c.connections_max_lifetime_seconds, 3600);
        assert_eq!(c, DatabaseConfig::sqlite("/tmp/x.db"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (r#"{"type":"sqlite"}"#, "database.connection_string"),
            (r#"{"type":"oracle"}"#, "unknown variant"),
            (
                r#"{"type":"sqlite","connection_string":"x","pasword":"y"}"#,
                "pasword",
            ),
            (
                r#"{"type":"postgres","user":"u","database_name":"d"}"#,
                "database.host",
            ),
            (
                r#"{"type":"mysql","host":"h","database_name":"d"}"#,
                "database.user",
            ),
            (
                r#"{"type":"postgres","host":"h","user":"u","database_name":"d","connection_string":"postgres://x"}"#,
                "database.connection_string",
            ),
            (
                r#"{"type":"postgres","host":"h","user":"u","database_name":"d","require_ssl":true}"#,
                "database.ca_cert",
            ),
            (
                r#"{"type":"sqlite","connection_string":"x","max_open_connections":2,"max_idle_connections":3}"#,
                "database.max_idle_connections",
            ),
            (
                r#"{"type":"sqlite","connection_string":"x","connect_timeout_seconds":0}"#,
                "database.connect_timeout_seconds",
            ),
        ];
        for (json, key) in cases {
            let err = parse(json)
                .err()
                .unwrap_or_else(|| panic!("{json} accepted"));
            assert!(err.contains(key), "{json}: {err}");
        }
    }

    #[test]
    fn secrets_never_shown() {
        let c = parse(
            r#"{"type":"postgres","host":"db","user":"u","password":"hunter2","database_name":"n"}"#,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c}").contains("hunter2"));
        assert!(format!("{c}").contains("db:5432"));
        let c = DatabaseConfig {
            connection_string: "postgres://u:hunter2@db/n".into(),
            user: String::new(),
            password: String::new(),
            host: String::new(),
            database_name: String::new(),
            ..c
        };
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c}").contains("hunter2"));
        let bad = DatabaseConfig {
            kind: DatabaseType::Mysql,
            connection_string: "mysq://u:hunter2@db/n".into(),
            ..c
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("database.connection_string"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
