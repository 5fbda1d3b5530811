//! Test databases: real SQLite files, and real PostgreSQL and MariaDB servers started here if they
//! are not running (scripts/setup installs them; there is no systemd). Each test gets its own
//! database, created here and dropped when the [`TestDb`] is dropped.
//!
//! Credentials: the tests log in over TCP on 127.0.0.1 as `netman_test` ([`PASSWORD`]), a role
//! created here through the servers' local root access (peer auth as the `postgres` OS user,
//! unix_socket auth as root for MariaDB), which is what a fresh Debian machine has.

use super::wait::wait_until;
use netman::db::{DatabaseConfig, DatabaseType};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const USER: &str = "netman_test";
pub const PASSWORD: &str = "netman-test-secret";
const LOCK_FILE: &str = "/tmp/netman-test-databases.lock";

/// One test's database; dropped (with its file or server database) on drop.
pub struct TestDb {
    pub config: DatabaseConfig,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn kind(&self) -> DatabaseType {
        self.config.kind
    }

    /// The config with another tag length-independent tweak applied.
    pub fn config_with(&self, f: impl FnOnce(&mut DatabaseConfig)) -> DatabaseConfig {
        let mut c = self.config.clone();
        f(&mut c);
        c
    }

    /// The `database` section as JSON (for configs of binaries under test).
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("config serialises")
    }

    /// Runs one statement directly on the database (outside the store).
    pub fn exec(&self, sql: &str) {
        match self.config.kind {
            DatabaseType::Sqlite => {
                let c = rusqlite::Connection::open(&self.config.connection_string).unwrap();
                c.execute_batch(sql).unwrap();
            }
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => {
                pg_client(&self.name).batch_execute(sql).unwrap();
            }
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => {
                use mysql::prelude::Queryable;
                my_conn(Some(&self.name)).query_drop(sql).unwrap();
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }

    /// Ends every server connection to this database (as a database restart would); returns
    /// how many. SQLite has none.
    pub fn kill_connections(&self) -> usize {
        match self.config.kind {
            DatabaseType::Sqlite => 0,
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => pg_client("postgres")
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&self.name],
                )
                .unwrap()
                .len(),
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => {
                use mysql::prelude::Queryable;
                let mut admin = my_conn(None);
                let ids: Vec<u64> = admin
                    .exec(
                        "SELECT id FROM information_schema.processlist \
                         WHERE db = ? AND id <> CONNECTION_ID()",
                        (self.name.clone(),),
                    )
                    .unwrap();
                for id in &ids {
                    let _ = admin.query_drop(format!("KILL CONNECTION {id}"));
                }
                ids.len()
            }
            #[allow(unreachable_patterns)]
            _ => 0,
        }
    }

    /// Runs a query returning one integer directly on the database (write `"groups"` quoted).
    pub fn query_i64(&self, sql: &str) -> i64 {
        match self.config.kind {
            DatabaseType::Sqlite => {
                let c = rusqlite::Connection::open(&self.config.connection_string).unwrap();
                c.query_row(sql, [], |r| r.get(0)).unwrap()
            }
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => {
                let row = pg_client(&self.name).query_one(sql, &[]).unwrap();
                match row.columns()[0].type_().name() {
                    "int4" => row.get::<_, i32>(0) as i64,
                    _ => row.get::<_, i64>(0),
                }
            }
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => {
                use mysql::prelude::Queryable;
                my_conn(Some(&self.name))
                    .query_first::<i64, _>(sql.replace("\"groups\"", "`groups`"))
                    .unwrap()
                    .unwrap()
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self.config.kind {
            DatabaseType::Sqlite => {}
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => {
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                if let Err(e) = pg_client("postgres").batch_execute(&sql) {
                    eprintln!("dropping test database {}: {e}", self.name);
                }
            }
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => {
                use mysql::prelude::Queryable;
                let sql = format!("DROP DATABASE IF EXISTS {}", self.name);
                if let Err(e) = my_conn(None).query_drop(sql) {
                    eprintln!("dropping test database {}: {e}", self.name);
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "netman_t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        nanos % 100_000
    )
}

fn base_config(kind: DatabaseType) -> DatabaseConfig {
    let mut c = DatabaseConfig::sqlite("unused");
    c.kind = kind;
    c.connection_string.clear();
    c.connect_timeout_seconds = 30;
    c.max_open_connections = 20;
    c
}

/// A fresh SQLite database file in its own temporary directory.
pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("policies.db");
    let mut config = base_config(DatabaseType::Sqlite);
    config.connection_string = path.to_string_lossy().into_owned();
    TestDb {
        config,
        name: unique_name(),
        _dir: Some(dir),
    }
}

/// A config for a database that does not answer: a closed TCP port (or, for SQLite, a file in a
/// directory that does not exist).
pub fn unreachable(kind: DatabaseType, timeout_seconds: u64) -> DatabaseConfig {
    let mut c = base_config(kind);
    c.connect_timeout_seconds = timeout_seconds;
    if kind == DatabaseType::Sqlite {
        c.connection_string = format!("/nonexistent-{}/policies.db", unique_name());
        return c;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    c.host = "127.0.0.1".into();
    c.port = port;
    c.user = USER.into();
    c.password = PASSWORD.into();
    c.database_name = "netman_nowhere".into();
    c
}

/// The database `name` on the local server of `kind` at 127.0.0.1:`port`, as the test user.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn server_db(kind: DatabaseType, port: u16, name: String) -> TestDb {
    let mut config = base_config(kind);
    config.host = "127.0.0.1".into();
    config.port = port;
    config.user = USER.into();
    config.password = PASSWORD.into();
    config.database_name = name.clone();
    TestDb {
        config,
        name,
        _dir: None,
    }
}

/// Serialises server start-up between test processes.
fn with_lock<T>(f: impl FnOnce() -> T) -> T {
    let _guard = lock_startup();
    f()
}

fn lock_startup() -> nix::fcntl::Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .expect("lock file");
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {LOCK_FILE}: {e}"))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------- Outages

/// The shared database server of one kind, stopped for an outage test until [`Outage::end`] or
/// drop (also on panic) starts it again. The start-up lock file is held meanwhile, so another
/// test process does not start the server behind the test's back. Tests of one binary that use
/// outages must serialise themselves (the servers are shared by every test of the binary).
pub struct Outage {
    kind: DatabaseType,
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl Outage {
    /// Stops the server (PostgreSQL: `pg_ctlcluster ... stop -m fast`; MariaDB:
    /// `mariadb-admin shutdown`) and waits until it no longer answers.
    pub fn begin(kind: DatabaseType) -> Outage {
        let lock = lock_startup();
        let outage = Outage {
            kind,
            lock: Some(lock),
        };
        match kind {
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => {
                let (version, cluster) = postgres_cluster();
                run(Command::new("pg_ctlcluster").args([&version, &cluster, "stop", "-m", "fast"]))
                    .unwrap();
                wait_until("postgresql down", Duration::from_secs(60), || {
                    !postgres_ready()
                });
            }
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => {
                run(Command::new("mariadb-admin").args(["--protocol=socket", "shutdown"])).unwrap();
                wait_until("mariadb down", Duration::from_secs(60), || !mariadb_ready());
            }
            other => panic!("no outage for {other:?}"),
        }
        outage
    }

    /// Starts the server again and waits until it answers (idempotent).
    pub fn end(&mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        match self.kind {
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => {
                let (version, cluster) = postgres_cluster();
                let _ = run(Command::new("pg_ctlcluster").args([&version, &cluster, "start"]));
                wait_until("postgresql", Duration::from_secs(60), postgres_ready);
            }
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => start_mariadbd(),
            _ => {}
        }
        drop(lock);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.end();
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// (version, cluster) of the first local PostgreSQL cluster.
#[cfg(feature = "postgres")]
fn postgres_cluster() -> (String, String) {
    let clusters = run(Command::new("pg_lsclusters").arg("-h")).unwrap();
    let line = clusters.lines().next().expect("a postgresql cluster");
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[0].to_string(), f[1].to_string())
}

#[cfg(feature = "postgres")]
fn postgres_ready() -> bool {
    Command::new("pg_isready")
        .args(["-q", "-h", "127.0.0.1", "-p", "5432"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Starts the local PostgreSQL cluster if needed and creates the test role. Once per process.
#[cfg(feature = "postgres")]
pub fn ensure_postgres() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        with_lock(|| {
            if !postgres_ready() {
                let clusters = run(Command::new("pg_lsclusters").arg("-h")).unwrap();
                let (version, cluster) = match clusters.lines().next() {
                    Some(line) => {
                        let f: Vec<&str> = line.split_whitespace().collect();
                        (f[0].to_string(), f[1].to_string())
                    }
                    None => {
                        let version = std::fs::read_dir("/usr/lib/postgresql")
                            .expect("postgresql installed (scripts/setup)")
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .max()
                            .expect("a postgresql version");
                        run(Command::new("pg_createcluster").args([&version, "main"])).unwrap();
                        (version, "main".to_string())
                    }
                };
                // "already running" races with another starter are fine; readiness decides.
                let _ = run(Command::new("pg_ctlcluster").args([&version, &cluster, "start"]));
                wait_until("postgresql", Duration::from_secs(60), postgres_ready);
            }
            let role = format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{USER}') THEN \
                 CREATE ROLE {USER} LOGIN SUPERUSER; END IF; END $$; \
                 ALTER ROLE {USER} PASSWORD '{PASSWORD}';"
            );
            run(Command::new("runuser").args(["-u", "postgres", "--", "psql", "-q", "-c", &role]))
                .unwrap();
        })
    });
}

#[cfg(feature = "postgres")]
fn pg_client(database: &str) -> postgres::Client {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(5432)
        .user(USER)
        .password(PASSWORD)
        .dbname(database)
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to postgres database {database}: {e}"))
}

/// A fresh PostgreSQL database (server started if needed).
#[cfg(feature = "postgres")]
pub fn postgres() -> TestDb {
    ensure_postgres();
    let name = unique_name();
    pg_client("postgres")
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    server_db(DatabaseType::Postgres, 5432, name)
}

// ---------------------------------------------------------------- MariaDB

#[cfg(feature = "mysql")]
fn mariadb_ready() -> bool {
    Command::new("mariadb-admin")
        .args(["--protocol=socket", "ping"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Starts the local MariaDB server if needed (initialising its data directory on a fresh machine)
/// and creates the test user. Once per process.
#[cfg(feature = "mysql")]
pub fn ensure_mariadb() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        with_lock(|| {
            if !mariadb_ready() {
                std::fs::create_dir_all("/run/mysqld").unwrap();
                run(Command::new("chown").args(["mysql:mysql", "/run/mysqld"])).unwrap();
                if !std::path::Path::new("/var/lib/mysql/mysql").exists() {
                    run(Command::new("mariadb-install-db").args([
                        "--user=mysql",
                        "--datadir=/var/lib/mysql",
                        "--auth-root-authentication-method=socket",
                    ]))
                    .unwrap();
                }
                start_mariadbd();
            }
            let sql = format!(
                "CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
                 CREATE USER IF NOT EXISTS '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}'; \
                 ALTER USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
                 ALTER USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}'; \
                 GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'; \
                 GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'localhost'; FLUSH PRIVILEGES;"
            );
            run(Command::new("mariadb").args(["--protocol=socket", "-e", &sql])).unwrap();
        })
    });
}

/// Starts `mariadbd` in the background and waits until it answers.
#[cfg(feature = "mysql")]
fn start_mariadbd() {
    std::fs::create_dir_all("/run/mysqld").unwrap();
    run(Command::new("chown").args(["mysql:mysql", "/run/mysqld"])).unwrap();
    run(Command::new("start-stop-daemon").args([
        "--start",
        "--oknodo",
        "--background",
        "--exec",
        "/usr/sbin/mariadbd",
        "--",
        "--user=mysql",
    ]))
    .unwrap();
    wait_until("mariadb", Duration::from_secs(60), mariadb_ready);
}

#[cfg(feature = "mysql")]
fn my_conn(database: Option<&str>) -> mysql::Conn {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(3306)
        .prefer_socket(false)
        .user(Some(USER))
        .pass(Some(PASSWORD))
        .db_name(database);
    mysql::Conn::new(opts).unwrap_or_else(|e| panic!("connecting to mariadb: {e}"))
}

/// A fresh MariaDB database (server started if needed).
#[cfg(feature = "mysql")]
pub fn mariadb() -> TestDb {
    use mysql::prelude::Queryable;
    ensure_mariadb();
    let name = unique_name();
    my_conn(None)
        .query_drop(format!("CREATE DATABASE {name}"))
        .unwrap();
    server_db(DatabaseType::Mysql, 3306, name)
}

/// One `#[test]` per case and backend: modules `sqlite`, `postgres` and `mariadb` (the last two
/// when built with those features), each test calling `case(&db)` with a fresh database.
#[allow(unused_macros)]
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        $crate::support::db::suite!(@backend sqlite, $crate::support::db::sqlite(); $($case),*);
        #[cfg(feature = "postgres")]
        $crate::support::db::suite!(@backend postgres, $crate::support::db::postgres(); $($case),*);
        #[cfg(feature = "mysql")]
        $crate::support::db::suite!(@backend mariadb, $crate::support::db::mariadb(); $($case),*);
    };
    (@backend $backend:ident, $fresh:expr; $($case:ident),*) => {
        mod $backend {
            $(
                #[test]
                fn $case() {
                    let db = $fresh;
                    super::$case(&db);
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use suite;

// ---------------------------------------------------------------- Raw SQL

/// A plain connection to one test database, outside any netman code: statements as written
/// (no `"groups"` rewriting) and every result value as text (`None` for NULL). Fixtures use it to
/// build databases the way other programs leave them.
pub enum RawSql {
    Sqlite(rusqlite::Connection),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Client),
    #[cfg(feature = "mysql")]
    Mysql(mysql::Conn),
}

impl TestDb {
    /// A raw connection to this database.
    pub fn raw(&self) -> RawSql {
        match self.config.kind {
            DatabaseType::Sqlite => {
                RawSql::Sqlite(rusqlite::Connection::open(&self.config.connection_string).unwrap())
            }
            #[cfg(feature = "postgres")]
            DatabaseType::Postgres => RawSql::Postgres(pg_client(&self.name)),
            #[cfg(feature = "mysql")]
            DatabaseType::Mysql => RawSql::Mysql(my_conn(Some(&self.name))),
            #[allow(unreachable_patterns)]
            other => panic!("{other:?} is not compiled in"),
        }
    }
}

impl RawSql {
    pub fn kind(&self) -> DatabaseType {
        match self {
            RawSql::Sqlite(_) => DatabaseType::Sqlite,
            #[cfg(feature = "postgres")]
            RawSql::Postgres(_) => DatabaseType::Postgres,
            #[cfg(feature = "mysql")]
            RawSql::Mysql(_) => DatabaseType::Mysql,
        }
    }

    /// Runs statements (several separated by `;` are fine); panics with the SQL on error.
    pub fn exec(&mut self, sql: &str) {
        if let Err(e) = self.try_exec(sql) {
            panic!("{e}\nin SQL: {sql}");
        }
    }

    pub fn try_exec(&mut self, sql: &str) -> Result<(), String> {
        match self {
            RawSql::Sqlite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            #[cfg(feature = "postgres")]
            RawSql::Postgres(c) => c.batch_execute(sql).map_err(|e| match e.as_db_error() {
                Some(db) => db.to_string(),
                None => e.to_string(),
            }),
            #[cfg(feature = "mysql")]
            RawSql::Mysql(c) => {
                use mysql::prelude::Queryable;
                c.query_drop(sql).map_err(|e| e.to_string())
            }
        }
    }

    /// All rows of a query, every value as text.
    pub fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            RawSql::Sqlite(c) => {
                let mut stmt = c
                    .prepare(sql)
                    .unwrap_or_else(|e| panic!("{e}\nin SQL: {sql}"));
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                                rusqlite::types::ValueRef::Text(t)
                                | rusqlite::types::ValueRef::Blob(t) => {
                                    Some(String::from_utf8_lossy(t).into_owned())
                                }
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            #[cfg(feature = "postgres")]
            RawSql::Postgres(c) => c
                .simple_query(sql)
                .unwrap_or_else(|e| panic!("{e:?}\nin SQL: {sql}"))
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect(),
            #[cfg(feature = "mysql")]
            RawSql::Mysql(c) => {
                use mysql::prelude::Queryable;
                // The text protocol hands every value over as bytes.
                let rows: Vec<mysql::Row> = c
                    .query(sql)
                    .unwrap_or_else(|e| panic!("{e}\nin SQL: {sql}"));
                rows.into_iter()
                    .map(|r| {
                        r.unwrap()
                            .into_iter()
                            .map(|v| match v {
                                mysql::Value::NULL => None,
                                mysql::Value::Bytes(b) => {
                                    Some(String::from_utf8_lossy(&b).into_owned())
                                }
                                other => Some(other.as_sql(true).trim_matches('\'').to_string()),
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The single value of a query (panics when there is none or it is NULL).
    pub fn value(&mut self, sql: &str) -> String {
        self.rows(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
            .unwrap_or_else(|| panic!("no value from: {sql}"))
    }
}

/// `s` as a SQL string literal (single quotes doubled; backslashes too, for MySQL's default mode).
pub fn quote(kind: DatabaseType, s: &str) -> String {
    let mut q = s.replace('\'', "''");
    if kind == DatabaseType::Mysql {
        q = q.replace('\\', "\\\\");
    }
    format!("'{q}'")
}
