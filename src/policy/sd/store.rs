//! Service discovery's tables, beside the policy tables in the same database (their own
//! migrations, recorded in `sd_migrations`): internal domains, internal routes, and the app
//! instances each cell last reported. Every change that alters what a resolver answers moves
//! `sd_info.version` in the same transaction; a refresh that reports what is known already moves
//! nothing, so idle cells wake no resolver.

use crate::api::sd::{Instance, InternalRoute, InternalRoutes};
use crate::db::error::context;
use crate::db::migrate::{Migration, Schema};
use crate::db::{DatabaseConfig, Db, Dialect, Error as DbError, Options, Tx, TxError, Val};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

pub const KNOWN_VERSION: i64 = 1;
/// Every table of this module (what `migrate --to-original` drops: the original keeps internal
/// routes in the Cloud Controller, not in this database).
pub const TABLES: [&str; 6] = [
    "internal_routes",
    "internal_domains",
    "sd_instances",
    "sd_cells",
    "sd_info",
    "sd_migrations",
];

const SCHEMA: Schema = Schema {
    table: "sd_migrations",
    known: KNOWN_VERSION,
    migrations,
};

fn migrations(dialect: Dialect) -> Vec<Migration> {
    // MySQL/MariaDB: InnoDB is the default engine; every key fits its 3,072-byte limit in utf8mb4.
    let mut statements = vec![
        "CREATE TABLE IF NOT EXISTS internal_domains (name VARCHAR(253) NOT NULL PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS internal_routes (host VARCHAR(63) NOT NULL, \
         domain VARCHAR(253) NOT NULL, app_guid VARCHAR(255) NOT NULL, \
         PRIMARY KEY (host, domain, app_guid))",
        "CREATE TABLE IF NOT EXISTS sd_cells (cell_id VARCHAR(255) NOT NULL PRIMARY KEY, \
         refreshed_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS sd_instances (cell_id VARCHAR(255) NOT NULL, \
         ip VARCHAR(15) NOT NULL, app_guid VARCHAR(255) NOT NULL, \
         instance_index BIGINT NOT NULL, PRIMARY KEY (cell_id, ip))",
        "CREATE TABLE IF NOT EXISTS sd_info (id INTEGER NOT NULL PRIMARY KEY, \
         version BIGINT NOT NULL)",
    ];
    statements.extend(match dialect {
        Dialect::Sqlite => [
            "INSERT OR IGNORE INTO sd_info (id, version) VALUES (1, 1)",
            "INSERT OR IGNORE INTO internal_domains (name) VALUES ('apps.internal')",
        ],
        Dialect::Postgres => [
            "INSERT INTO sd_info (id, version) VALUES (1, 1) ON CONFLICT DO NOTHING",
            "INSERT INTO internal_domains (name) VALUES ('apps.internal') ON CONFLICT DO NOTHING",
        ],
        Dialect::Mysql => [
            "INSERT IGNORE INTO sd_info (id, version) VALUES (1, 1)",
            "INSERT IGNORE INTO internal_domains (name) VALUES ('apps.internal')",
        ],
    });
    vec![Migration {
        version: 1,
        name: "service discovery: internal_domains, internal_routes, sd_cells, sd_instances",
        statements,
    }]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdError {
    Database(DbError),
    /// A route names a domain that is not an internal domain.
    UnknownDomain(String),
    /// A route's name is itself an internal domain.
    NameIsDomain(String),
    /// A domain to remove still has routes.
    DomainInUse {
        domain: String,
        routes: usize,
    },
    /// The stored rows cannot be read back as a table (a damaged row): reported, never served
    /// as an empty table.
    Damaged(String),
}

impl fmt::Display for SdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdError::Database(e) => write!(f, "database: {e}"),
            SdError::UnknownDomain(d) => write!(
                f,
                "domain {d:?} is not an internal domain (add it first: POST internal_domains)"
            ),
            SdError::NameIsDomain(n) => {
                write!(
                    f,
                    "name {n:?} is an internal domain; choose another hostname"
                )
            }
            SdError::DomainInUse { domain, routes } => write!(
                f,
                "domain {domain:?} still has {routes} internal route(s); unmap them first"
            ),
            SdError::Damaged(e) => write!(f, "stored service discovery data is damaged: {e}"),
        }
    }
}

impl std::error::Error for SdError {}

impl From<DbError> for SdError {
    fn from(e: DbError) -> SdError {
        SdError::Database(e)
    }
}

impl TxError for SdError {
    fn db(&self) -> Option<&DbError> {
        match self {
            SdError::Database(e) => Some(e),
            _ => None,
        }
    }
}

impl SdError {
    /// Whether the client asked for something that cannot be (400/409), not a failure here.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            SdError::UnknownDomain(_) | SdError::NameIsDomain(_) | SdError::DomainInUse { .. }
        )
    }
}

/// The service discovery tables of one database.
pub struct SdStore {
    db: Db,
}

impl SdStore {
    /// Connects (retrying until `connect_timeout_seconds`) and migrates. Refuses a database the
    /// policy store would refuse (the original's schema, a conversion half done) before writing.
    pub fn open(config: &DatabaseConfig) -> Result<SdStore, SdError> {
        let db = Db::open(config, Options::default(), |tx| {
            crate::policy::store::sql_store::refuse_foreign_schema(tx)?;
            crate::db::migrate::apply(tx, &SCHEMA).map(|_| ())
        })?;
        Ok(SdStore { db })
    }

    pub fn version(&self) -> Result<i64, SdError> {
        Ok(self.db.read(version)?)
    }

    pub fn domains(&self) -> Result<Vec<String>, SdError> {
        Ok(self.db.read(domains)?)
    }

    /// Adds the domains (lowercase, checked); existing ones are kept. Returns the new version.
    pub fn add_domains(&self, add: &[String]) -> Result<i64, SdError> {
        self.db.write(|tx| {
            let routes = route_names(tx)?;
            if let Some(d) = add.iter().find(|d| routes.contains(*d)) {
                return Err(SdError::NameIsDomain(d.clone()));
            }
            let known: BTreeSet<String> = domains(tx)?.into_iter().collect();
            let mut changed = false;
            for d in add.iter().filter(|d| !known.contains(*d)) {
                tx.exec(
                    "INSERT INTO internal_domains (name) VALUES (?)",
                    &[Val::Str(d)],
                )?;
                changed = true;
            }
            current_or_next(tx, changed)
        })
    }

    /// Removes the domains; a domain that still has routes refuses the whole request.
    pub fn remove_domains(&self, remove: &[String]) -> Result<i64, SdError> {
        self.db.write(|tx| {
            let mut changed = false;
            for d in remove {
                let n = tx.rows(
                    "SELECT COUNT(*) FROM internal_routes WHERE domain = ?",
                    &[Val::Str(d)],
                )?[0][0]
                    .int()?;
                if n > 0 {
                    return Err(SdError::DomainInUse {
                        domain: d.clone(),
                        routes: n as usize,
                    });
                }
                changed |= tx.exec(
                    "DELETE FROM internal_domains WHERE name = ?",
                    &[Val::Str(d)],
                )? > 0;
            }
            current_or_next(tx, changed)
        })
    }

    /// Maps the routes (checked and lowercase); existing ones are kept. All or nothing.
    pub fn map(&self, routes: &[InternalRoute]) -> Result<i64, SdError> {
        self.db.write(|tx| {
            let domains: BTreeSet<String> = domains(tx)?.into_iter().collect();
            let mut changed = false;
            for r in routes {
                if !domains.contains(&r.domain) {
                    return Err(SdError::UnknownDomain(r.domain.clone()));
                }
                let name = r.name();
                if domains.contains(&name) {
                    return Err(SdError::NameIsDomain(name));
                }
                let exists = !tx
                    .rows(
                        "SELECT 1 FROM internal_routes WHERE host = ? AND domain = ? AND app_guid = ?",
                        &[Val::Str(&r.host), Val::Str(&r.domain), Val::Str(&r.app_guid)],
                    )?
                    .is_empty();
                if !exists {
                    tx.exec(
                        "INSERT INTO internal_routes (host, domain, app_guid) VALUES (?, ?, ?)",
                        &[Val::Str(&r.host), Val::Str(&r.domain), Val::Str(&r.app_guid)],
                    )?;
                    changed = true;
                }
            }
            current_or_next(tx, changed)
        })
    }

    /// Unmaps the routes; missing ones are skipped.
    pub fn unmap(&self, routes: &[InternalRoute]) -> Result<i64, SdError> {
        self.db.write(|tx| {
            let mut changed = false;
            for r in routes {
                changed |= tx.exec(
                    "DELETE FROM internal_routes WHERE host = ? AND domain = ? AND app_guid = ?",
                    &[
                        Val::Str(&r.host),
                        Val::Str(&r.domain),
                        Val::Str(&r.app_guid),
                    ],
                )? > 0;
            }
            current_or_next(tx, changed)
        })
    }

    /// Every route, sorted by name then app.
    pub fn routes(&self) -> Result<Vec<InternalRoute>, SdError> {
        Ok(self.db.read(routes)?)
    }

    /// Replaces what `cell` runs with `instances` and records the refresh at `now_ms`. The
    /// version moves only when the set differs from the stored one.
    pub fn replace_cell(
        &self,
        cell: &str,
        instances: &[Instance],
        now_ms: i64,
    ) -> Result<i64, SdError> {
        let mut wanted: Vec<(String, String, i64)> = instances
            .iter()
            .map(|i| (i.ip.to_string(), i.app_guid.clone(), i.index as i64))
            .collect();
        wanted.sort();
        self.db.write(|tx| {
            let rows = tx.rows(
                "SELECT ip, app_guid, instance_index FROM sd_instances WHERE cell_id = ? ORDER BY ip",
                &[Val::Str(cell)],
            )?;
            let mut stored = rows
                .iter()
                .map(|r| Ok((r[0].text()?, r[1].text()?, r[2].int()?)))
                .collect::<Result<Vec<_>, DbError>>()?;
            stored.sort();
            tx.exec("DELETE FROM sd_cells WHERE cell_id = ?", &[Val::Str(cell)])?;
            tx.exec(
                "INSERT INTO sd_cells (cell_id, refreshed_at) VALUES (?, ?)",
                &[Val::Str(cell), Val::Int(now_ms)],
            )?;
            let changed = stored != wanted;
            if changed {
                tx.exec("DELETE FROM sd_instances WHERE cell_id = ?", &[Val::Str(cell)])?;
                for (ip, app, index) in &wanted {
                    tx.exec(
                        "INSERT INTO sd_instances (cell_id, ip, app_guid, instance_index) \
                         VALUES (?, ?, ?, ?)",
                        &[Val::Str(cell), Val::Str(ip), Val::Str(app), Val::Int(*index)],
                    )
                    .map_err(|e| context(e, &format!("registering {ip} of cell {cell}")))?;
                }
            }
            current_or_next(tx, changed)
        })
    }

    /// Forgets the cells not refreshed since `cutoff_ms`, with their instances. Returns the
    /// cells removed.
    pub fn expire(&self, cutoff_ms: i64) -> Result<Vec<String>, SdError> {
        // A read first: the periodic sweep takes no write lock while every cell is fresh.
        let stale = self.db.read(|tx| {
            tx.rows(
                "SELECT COUNT(*) FROM sd_cells WHERE refreshed_at < ?",
                &[Val::Int(cutoff_ms)],
            )?[0][0]
                .int()
        })?;
        if stale == 0 {
            return Ok(Vec::new());
        }
        self.db.write(|tx| {
            let gone = tx
                .rows(
                    "SELECT cell_id FROM sd_cells WHERE refreshed_at < ? ORDER BY cell_id",
                    &[Val::Int(cutoff_ms)],
                )?
                .iter()
                .map(|r| r[0].text())
                .collect::<Result<Vec<_>, _>>()?;
            let mut changed = false;
            for cell in &gone {
                changed |= tx.exec(
                    "DELETE FROM sd_instances WHERE cell_id = ?",
                    &[Val::Str(cell)],
                )? > 0;
                tx.exec("DELETE FROM sd_cells WHERE cell_id = ?", &[Val::Str(cell)])?;
            }
            current_or_next(tx, changed)?;
            Ok(gone)
        })
    }

    /// The resolver table and its version, from one snapshot of the database: each route's name
    /// with the instances of every app mapped to it (none: mapped, nothing running).
    pub fn table(&self) -> Result<(i64, InternalRoutes), SdError> {
        self.db.snapshot(|tx| {
            let v = version(tx)?;
            let domains = domains(tx)?;
            let routes = routes(tx)?;
            let rows = tx.rows(
                "SELECT app_guid, instance_index, ip FROM sd_instances ORDER BY app_guid, instance_index, ip",
                &[],
            )?;
            let mut by_app: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
            for r in &rows {
                let app = r[0].text()?;
                let index = u32::try_from(r[1].int()?)
                    .map_err(|_| SdError::Damaged(format!("instance of {app}: index {:?}", r[1])))?;
                let ip_text = r[2].text()?;
                let ip: Ipv4Addr = ip_text
                    .parse()
                    .map_err(|_| SdError::Damaged(format!("instance of {app}: ip {ip_text:?}")))?;
                by_app.entry(app.clone()).or_default().push(Instance {
                    app_guid: app,
                    index,
                    ip,
                });
            }
            let mut names: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
            for r in routes {
                let entry = names.entry(r.name()).or_default();
                if let Some(instances) = by_app.get(&r.app_guid) {
                    entry.extend(instances.iter().cloned());
                }
            }
            Ok((
                v,
                InternalRoutes {
                    domains,
                    routes: names
                        .into_iter()
                        .map(|(name, instances)| crate::dns::table::InternalRoute { name, instances })
                        .collect(),
                },
            ))
        })
    }

    /// A cheap query proving the database answers.
    pub fn check(&self) -> Result<(), SdError> {
        self.version().map(|_| ())
    }
}

/// Whether the database has service discovery's tables (a policy server of this version ran on
/// it, or an import made them).
pub(crate) fn has_tables(tx: &mut dyn Tx) -> Result<bool, DbError> {
    crate::policy::adopt::bridge::has_table(tx, "sd_info")
}

/// Creates or migrates the tables inside the caller's transaction (what [`SdStore::open`] does).
pub(crate) fn migrate(tx: &mut dyn Tx) -> Result<(), DbError> {
    crate::db::migrate::apply(tx, &SCHEMA).map(|_| ())
}

/// The internal domains and the internal routes.
pub(crate) type Exported = (Vec<String>, Vec<InternalRoute>);

/// What an export carries: the internal domains and routes, or `None` when the database has no
/// service discovery tables. What cells reported is not carried: they report again within
/// seconds to whichever database the servers use.
pub(crate) fn exported(tx: &mut dyn Tx) -> Result<Option<Exported>, DbError> {
    if !has_tables(tx)? {
        return Ok(None);
    }
    Ok(Some((domains(tx)?, routes(tx)?)))
}

/// What an import would replace: the internal routes and the domains other than the default
/// one (0, 0 without the tables).
pub(crate) fn held(tx: &mut dyn Tx) -> Result<(i64, i64), DbError> {
    if !has_tables(tx)? {
        return Ok((0, 0));
    }
    let routes = tx.rows("SELECT COUNT(*) FROM internal_routes", &[])?[0][0].int()?;
    let domains = tx.rows(
        "SELECT COUNT(*) FROM internal_domains WHERE name <> ?",
        &[Val::Str(crate::api::sd::DEFAULT_DOMAIN)],
    )?[0][0]
        .int()?;
    Ok((routes, domains))
}

/// Makes the domains and routes exactly an import's, in the caller's transaction (tables made
/// by [`migrate`]; an import without `--replace` has checked there are none of its own). Returns
/// how many routes it removed. The version goes past the old one and past the present time in
/// milliseconds, so a resolver that followed another database (whose version may equal this
/// one's next) fetches the new table.
pub(crate) fn import(
    tx: &mut dyn Tx,
    domains: &[String],
    routes: &[InternalRoute],
) -> Result<usize, DbError> {
    let removed = tx.exec("DELETE FROM internal_routes", &[])?;
    tx.exec("DELETE FROM internal_domains", &[])?;
    for d in domains {
        tx.exec(
            "INSERT INTO internal_domains (name) VALUES (?)",
            &[Val::Str(d)],
        )?;
    }
    for r in routes {
        tx.exec(
            "INSERT INTO internal_routes (host, domain, app_guid) VALUES (?, ?, ?)",
            &[
                Val::Str(&r.host),
                Val::Str(&r.domain),
                Val::Str(&r.app_guid),
            ],
        )
        .map_err(|e| {
            context(
                e,
                &format!("importing route {} of {}", r.name(), r.app_guid),
            )
        })?;
    }
    let next = (version(tx)? + 1).max(crate::clock::unix_millis());
    tx.exec(
        "UPDATE sd_info SET version = ? WHERE id = 1",
        &[Val::Int(next)],
    )?;
    Ok(removed as usize)
}

fn version(tx: &mut dyn Tx) -> Result<i64, DbError> {
    let rows = tx.rows("SELECT version FROM sd_info WHERE id = 1", &[])?;
    match rows.first() {
        Some(r) => r[0].int(),
        None => Err(crate::db::error::database(
            "sd_info has no row: the table is damaged",
        )),
    }
}

/// The version after this transaction: moved by one when it changed anything.
fn current_or_next(tx: &mut dyn Tx, changed: bool) -> Result<i64, SdError> {
    if changed {
        tx.exec("UPDATE sd_info SET version = version + 1 WHERE id = 1", &[])?;
    }
    Ok(version(tx)?)
}

fn domains(tx: &mut dyn Tx) -> Result<Vec<String>, DbError> {
    tx.rows("SELECT name FROM internal_domains ORDER BY name", &[])?
        .iter()
        .map(|r| r[0].text())
        .collect()
}

fn routes(tx: &mut dyn Tx) -> Result<Vec<InternalRoute>, DbError> {
    let mut out = tx
        .rows("SELECT app_guid, host, domain FROM internal_routes", &[])?
        .iter()
        .map(|r| {
            Ok(InternalRoute {
                app_guid: r[0].text()?,
                host: r[1].text()?,
                domain: r[2].text()?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    out.sort_by(|a, b| (a.name(), &a.app_guid).cmp(&(b.name(), &b.app_guid)));
    Ok(out)
}

fn route_names(tx: &mut dyn Tx) -> Result<BTreeSet<String>, DbError> {
    Ok(routes(tx)?.iter().map(InternalRoute::name).collect())
}
