//! The conversions between the original's schema and netman's, in place, both directions.
//!
//! Every conversion is the same five steps: copy what matters (assigned tags with their types,
//! destinations, policies, the version) into staging tables; drop the old tables; create the new
//! schema with a full tag pool; restore the copy with the same ids; drop the staging tables.
//! Nothing is computed from the data in between: every row moves server-side, so a tag, a
//! destination or a policy keeps its id exactly.
//!
//! On PostgreSQL the caller runs all of it in one transaction (DDL is transactional there). On
//! MySQL, where DDL commits implicitly, the steps record themselves in a journal table and each
//! step is re-runnable, so a run that stopped half-way is finished by the next one; the data
//! moves (snapshot, restore) are single InnoDB transactions that include their journal row.

use super::detect::{self, Era, Found, Inspect, Original, JOURNAL_TABLE};
use super::original_schema::{self, ORIGINAL_TABLES};
use crate::db::DatabaseType;
use crate::policy::transfer::document::wall_clock_micros;

/// What a conversion needs from a connection: run a statement, run a query.
pub trait Sql: Inspect {
    fn execute(&mut self, sql: &str) -> Result<(), String>;
}

/// Which way a conversion goes; the name is what the journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The original's schema to netman's (`migrate`).
    Adopt,
    /// netman's schema to the original's at HEAD (`migrate --to-original`).
    ToOriginal,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Adopt => "adopt",
            Direction::ToOriginal => "to-original",
        }
    }

    fn command(self) -> &'static str {
        match self {
            Direction::Adopt => "policy-server migrate",
            Direction::ToOriginal => "policy-server migrate --to-original",
        }
    }
}

/// Creates netman's schema (its migrations and the full tag pool) on the conversion's
/// connection, inside its transaction where there is one; returns the schema version.
pub type CreateNetman<'a, S> = &'a mut dyn FnMut(&mut S) -> Result<i64, String>;

const STEPS: [&str; 4] = ["snapshot", "drop", "create", "restore"];

const STAGED_GROUPS: &str = "netman_conversion_groups";
const STAGED_DESTINATIONS: &str = "netman_conversion_destinations";
const STAGED_POLICIES: &str = "netman_conversion_policies";
const STAGED_INFO: &str = "netman_conversion_info";

/// The result of a conversion or of its dry run: what was found and what was (or would be) done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: Vec<String>,
}

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }
}

fn groups(kind: DatabaseType) -> &'static str {
    match kind {
        DatabaseType::Mysql => "`groups`",
        _ => "\"groups\"",
    }
}

fn one_int(db: &mut dyn Inspect, sql: &str) -> Result<i64, String> {
    let rows = db.query(sql)?;
    rows.first()
        .and_then(|r| r.first())
        .map(|v| v.clone().unwrap_or_else(|| "0".into()))
        .ok_or_else(|| format!("no row from {sql:?}"))?
        .parse()
        .map_err(|e| format!("{sql:?}: {e}"))
}

/// The tag length whose pool the original filled: 255 or 65,535 slots (16,777,215 for 3).
fn pool_tag_length(pool: i64) -> Option<u8> {
    (1..=3u8).find(|l| pool == (1i64 << (8 * *l as i64)) - 1)
}

/// Refuses an original whose tags netman cannot keep as they are with this `tag_length`.
fn check_tag_length(found: &Original, tag_length: u8) -> Result<(), String> {
    match pool_tag_length(found.pool_size) {
        Some(l) if l == tag_length => Ok(()),
        Some(l) if l > 2 => Err(format!(
            "the original uses tag_length {l} ({} tags); netman supports 1 or 2 (the VXLAN GBP \
             mark carries 16 bits). Nothing was changed",
            found.pool_size
        )),
        Some(l) => Err(format!(
            "the original's tag pool has {} slots (tag_length {l}) but the config says \
             tag_length {tag_length}: set tag_length to {l} so every tag keeps its value and \
             width. Nothing was changed",
            found.pool_size
        )),
        None => Err(format!(
            "the original's tag pool ends at {} instead of 2^(8*tag_length)-1; it was changed \
             by hand. Nothing was changed",
            found.pool_size
        )),
    }
}

/// Describes what was found, for the report.
pub fn describe(found: &Original, kind: DatabaseType) -> Vec<String> {
    let mut lines = vec![format!("found {} on {kind}", found.era)];
    lines.push(format!(
        "  {} policies, {} destinations, {} tags in use ({} not of type app) of {} slots",
        found.policies,
        found.destinations,
        found.tags_in_use,
        found.other_type_tags,
        found.pool_size
    ));
    if let Some(ns) = found.last_updated {
        lines.push(format!(
            "  policies_info.last_updated {} ({ns} ns as the original's agents read it)",
            wall_clock_micros(ns / 1000)
        ));
    }
    if found.security_groups {
        lines.push(format!(
            "  security_groups: {} rows, kept as they are",
            found.security_group_rows
        ));
    }
    lines
}

/// A conversion on one connection.
struct Run<'a, S: Sql> {
    db: &'a mut S,
    kind: DatabaseType,
    direction: Direction,
    /// Steps already done by an interrupted run (MySQL).
    done: Vec<String>,
    report: Report,
}

/// Adopts the original's database found by [`detect::detect`] (or finishes an interrupted
/// adoption). `create_netman` creates netman's schema on the same connection. With `dry_run`
/// nothing is written.
pub fn adopt<S: Sql>(
    db: &mut S,
    tag_length: u8,
    dry_run: bool,
    create_netman: CreateNetman<'_, S>,
) -> Result<Report, String> {
    run(
        db,
        Direction::Adopt,
        tag_length,
        dry_run,
        Some(create_netman),
        0,
    )
}

/// Converts netman's schema back to the original's at HEAD (or finishes an interrupted switch
/// back). With `dry_run` nothing is written.
/// `known_version` is netman's schema version this binary knows; only that one is converted.
pub fn to_original<S: Sql>(
    db: &mut S,
    tag_length: u8,
    known_version: i64,
    dry_run: bool,
) -> Result<Report, String> {
    run(
        db,
        Direction::ToOriginal,
        tag_length,
        dry_run,
        None,
        known_version,
    )
}

fn run<S: Sql>(
    db: &mut S,
    direction: Direction,
    tag_length: u8,
    dry_run: bool,
    create_netman: Option<CreateNetman<'_, S>>,
    known_version: i64,
) -> Result<Report, String> {
    let kind = db.kind();
    if kind == DatabaseType::Sqlite {
        return Err("the original never ran on SQLite: there is nothing to convert".into());
    }
    let mut report = Report { lines: Vec::new() };
    let mut found = detect::detect(db)?;
    if let Found::Interrupted { done, .. } = &found {
        if done.is_empty() && !dry_run {
            // It stopped before anything was copied: the old tables are all there; start over.
            drop_conversion_tables(db)?;
            found = detect::detect(db)?;
        }
    }
    let (done, era) = match (&found, direction) {
        (Found::Interrupted { direction: d, done }, _) if d == direction.name() => {
            report.line(format!(
                "found an interrupted {} (done: {}); finishing it",
                d,
                if done.is_empty() {
                    "nothing".to_string()
                } else {
                    done.join(", ")
                }
            ));
            (done.clone(), staged_era(db, done)?)
        }
        (Found::Interrupted { direction: d, .. }, _) => {
            let other = if d == Direction::Adopt.name() {
                Direction::Adopt
            } else {
                Direction::ToOriginal
            };
            return Err(format!(
                "an interrupted {d} conversion is recorded in {JOURNAL_TABLE}: run `{}` to \
                 finish it first. Nothing was changed",
                other.command()
            ));
        }
        (Found::Original(o), Direction::Adopt) => {
            check_tag_length(o, tag_length)?;
            report.lines.extend(describe(o, kind));
            (Vec::new(), o.era)
        }
        (Found::Netman { version }, Direction::ToOriginal) => {
            let version = *version;
            if version != known_version {
                return Err(format!(
                    "netman's schema is at version {version}; this binary converts version \
                     {known_version} back to the original. Nothing was changed"
                ));
            }
            let (tags, policies) = (
                one_int(
                    db,
                    &format!(
                        "SELECT COUNT(*) FROM {} WHERE guid IS NOT NULL",
                        groups(kind)
                    ),
                )?,
                one_int(db, "SELECT COUNT(*) FROM policies")?,
            );
            report.line(format!(
                "found netman's schema (version {version}) on {kind}: {policies} policies, \
                 {tags} tags in use"
            ));
            (Vec::new(), Era::Head)
        }
        (Found::Unknown(reason), _) => {
            return Err(format!(
                "refusing to convert a schema this binary does not know: {reason}. Nothing was \
                 changed"
            ))
        }
        (other, _) => {
            return Err(format!(
                "{}: nothing to convert ({})",
                direction.command(),
                match other {
                    Found::Empty => "the database is empty".to_string(),
                    Found::Netman { version } =>
                        format!("netman's schema is there already, version {version}"),
                    Found::Original(o) => format!("the database holds {}", o.era),
                    _ => String::new(),
                }
            ))
        }
    };
    let mut run = Run {
        db,
        kind,
        direction,
        done,
        report,
    };
    run.plan(era);
    if dry_run {
        run.report.line("nothing was changed (--dry-run)");
        return Ok(run.report);
    }
    run.execute(era, tag_length, create_netman)?;
    Ok(run.report)
}

/// Drops the journal and the staging tables of a conversion that had copied nothing yet.
fn drop_conversion_tables(db: &mut dyn Sql) -> Result<(), String> {
    for t in [
        STAGED_POLICIES,
        STAGED_DESTINATIONS,
        STAGED_GROUPS,
        STAGED_INFO,
        JOURNAL_TABLE,
    ] {
        db.execute(&format!("DROP TABLE IF EXISTS {t}"))?;
    }
    Ok(())
}

/// Which era an interrupted adoption started from: the staged version row says.
fn staged_era(db: &mut dyn Inspect, done: &[String]) -> Result<Era, String> {
    if done.iter().any(|d| d == "restore") {
        // Only the clean-up is left; the era no longer matters.
        return Ok(Era::Head);
    }
    if !done.iter().any(|d| d == "snapshot") {
        // Only in a dry run: nothing staged yet, the old tables are all there.
        return Ok(detect_original_era(db)?.unwrap_or(Era::Head));
    }
    let netman_era = one_int(
        db,
        &format!("SELECT COUNT(*) FROM {STAGED_INFO} WHERE era = 'netman-era'"),
    )?;
    Ok(if netman_era > 0 {
        Era::NetmanEra
    } else {
        Era::Head
    })
}

fn detect_original_era(db: &mut dyn Inspect) -> Result<Option<Era>, String> {
    let tables = detect::tables(db)?;
    Ok(if tables.contains("gorp_migrations") {
        Some(Era::Head)
    } else if tables.contains("groups") {
        Some(Era::NetmanEra)
    } else {
        None
    })
}

impl<S: Sql> Run<'_, S> {
    fn plan(&mut self, era: Era) {
        let transaction = if self.kind == DatabaseType::Postgres {
            "in one transaction (PostgreSQL: all or nothing)"
        } else {
            "step by step, each recorded in the journal table netman_conversion (MySQL commits \
             DDL at once: a run that stops is finished by running the command again)"
        };
        let (from_tables, to) = match self.direction {
            Direction::Adopt => (
                match era {
                    Era::Head => {
                        "groups, destinations, policies, policies_info and sql-migrate's \
                                  gorp_migrations, gorp_lock (security_groups is kept)"
                    }
                    Era::NetmanEra => "groups, destinations, policies",
                },
                "netman's schema (netman_migrations) with its full tag pool",
            ),
            Direction::ToOriginal => (
                "groups, destinations, policies, policies_info, policy_changes, netman_migrations \
                 (security_groups is kept)",
                "the original's schema at HEAD: tables as a fresh install leaves them, \
                 gorp_migrations recording migrations 1 to 79, an empty gorp_lock, \
                 security_groups if missing, the full tag pool",
            ),
        };
        let version = match self.direction {
            Direction::Adopt => {
                "policies_info.last_updated becomes a BIGINT of nanoseconds: the later of now \
                 and the original's value + 1"
            }
            Direction::ToOriginal => {
                "policies_info.last_updated becomes a TIMESTAMP: the later of now and netman's \
                 value + 1 microsecond"
            }
        };
        let steps = [
            "1. copy every assigned tag (with its type), destination and policy, and the \
             version, into staging tables"
                .to_string(),
            format!("2. drop {from_tables}"),
            format!("3. create {to}"),
            format!(
                "4. restore every tag, destination and policy with the same ids; {version}; \
                 check the counts"
            ),
            "5. drop the staging tables".to_string(),
        ];
        let verb = if self.done.is_empty() {
            "will run"
        } else {
            "resumes"
        };
        self.report.line(format!(
            "{} {verb} {transaction}:",
            self.direction.command()
        ));
        for (i, s) in steps.iter().enumerate() {
            let done = i < STEPS.len() && self.done.iter().any(|d| d == STEPS[i]);
            self.report
                .line(format!("  {s}{}", if done { " (done)" } else { "" }));
        }
    }

    fn mysql(&self) -> bool {
        self.kind == DatabaseType::Mysql
    }

    fn exec(&mut self, sql: &str) -> Result<(), String> {
        self.db.execute(sql)
    }

    /// Rows of `table`, 0 when the table does not exist.
    fn count_if_present(&mut self, table: &str) -> Result<i64, String> {
        if !detect::tables(self.db)?.contains(table) {
            return Ok(0);
        }
        one_int(self.db, &format!("SELECT COUNT(*) FROM {table}"))
    }

    fn done(&self, step: &str) -> bool {
        self.done.iter().any(|d| d == step)
    }

    /// Records a finished step in the journal (MySQL; inside the step's transaction if it has
    /// one).
    fn record(&mut self, step: &str) -> Result<(), String> {
        if self.mysql() {
            let seq = STEPS.iter().position(|s| *s == step).unwrap() + 1;
            self.exec(&format!(
                "INSERT INTO {JOURNAL_TABLE} (seq, step) VALUES ({seq}, '{step}')"
            ))?;
        }
        self.done.push(step.to_string());
        Ok(())
    }

    fn begin(&mut self) -> Result<(), String> {
        if self.mysql() {
            self.exec("START TRANSACTION")?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), String> {
        if self.mysql() {
            self.exec("COMMIT")?;
        }
        Ok(())
    }

    /// Runs `f` as one transaction on MySQL (rolled back on error); on PostgreSQL the caller's
    /// transaction holds everything already.
    fn transaction(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.begin()?;
        match f(self) {
            Ok(()) => self.commit(),
            Err(e) => {
                if self.mysql() {
                    let _ = self.exec("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    fn execute(
        &mut self,
        era: Era,
        tag_length: u8,
        create_netman: Option<CreateNetman<'_, S>>,
    ) -> Result<(), String> {
        if self.mysql() && self.done.is_empty() {
            self.exec(&format!(
                "CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} (seq INT NOT NULL PRIMARY KEY, \
                 step VARCHAR(64) NOT NULL) ENGINE=InnoDB"
            ))?;
            self.exec(&format!(
                "INSERT INTO {JOURNAL_TABLE} (seq, step) VALUES (0, '{}')",
                self.direction.name()
            ))?;
        }
        if !self.done("snapshot") {
            self.snapshot(era)?;
        }
        if !self.done("drop") {
            self.drop_old()?;
        }
        if !self.done("create") {
            let version = match create_netman {
                Some(create) => create(self.db)?,
                None => {
                    self.create_original(tag_length)?;
                    79
                }
            };
            self.report
                .line(format!("created the new schema (version {version})"));
            self.record("create")?;
        }
        if !self.done("restore") {
            let staged = self.staged_counts()?;
            self.transaction(|r| r.restore(staged))?;
        }
        self.cleanup()?;
        self.report.line(format!(
            "{}: done",
            match self.direction {
                Direction::Adopt => "adopted",
                Direction::ToOriginal => "switched back to the original's schema",
            }
        ));
        Ok(())
    }

    /// Step 1: the staging tables, filled from the old schema in one transaction.
    fn snapshot(&mut self, era: Era) -> Result<(), String> {
        for t in [
            STAGED_GROUPS,
            STAGED_DESTINATIONS,
            STAGED_POLICIES,
            STAGED_INFO,
        ] {
            self.exec(&format!("DROP TABLE IF EXISTS {t}"))?;
        }
        let engine = if self.mysql() { " ENGINE=InnoDB" } else { "" };
        self.exec(&format!(
            "CREATE TABLE {STAGED_GROUPS} (id INT NOT NULL PRIMARY KEY, \
             guid VARCHAR(255) NOT NULL, type VARCHAR(255) NOT NULL){engine}"
        ))?;
        self.exec(&format!(
            "CREATE TABLE {STAGED_DESTINATIONS} (id INT NOT NULL PRIMARY KEY, \
             group_id INT NOT NULL, port INT NOT NULL, protocol VARCHAR(255) NOT NULL, \
             start_port INT NOT NULL, end_port INT NOT NULL){engine}"
        ))?;
        self.exec(&format!(
            "CREATE TABLE {STAGED_POLICIES} (id INT NOT NULL PRIMARY KEY, \
             group_id INT NOT NULL, destination_id INT NOT NULL){engine}"
        ))?;
        self.exec(&format!(
            "CREATE TABLE {STAGED_INFO} (last_updated BIGINT NOT NULL, \
             era VARCHAR(16) NOT NULL){engine}"
        ))?;
        let g = groups(self.kind);
        let (types, ports, version) = match (self.direction, era) {
            (Direction::Adopt, Era::Head) => (
                "COALESCE(type, 'app')",
                "COALESCE(port, CASE WHEN start_port = end_port THEN start_port ELSE 0 END), \
                 protocol, start_port, end_port",
                format!(
                    "SELECT {}, 'head' FROM policies_info",
                    self.original_version_nanos()
                ),
            ),
            (Direction::Adopt, Era::NetmanEra) => (
                "'app'",
                "port, protocol, port, port",
                "SELECT 0, 'netman-era'".to_string(),
            ),
            (Direction::ToOriginal, _) => (
                "COALESCE(type, 'app')",
                "port, protocol, start_port, end_port",
                "SELECT last_updated, 'netman' FROM policies_info WHERE id = 1".to_string(),
            ),
        };
        self.transaction(|r| {
            r.exec(&format!(
                "INSERT INTO {STAGED_GROUPS} (id, guid, type) \
                 SELECT id, guid, {types} FROM {g} WHERE guid IS NOT NULL"
            ))?;
            r.exec(&format!(
                "INSERT INTO {STAGED_DESTINATIONS} \
                 (id, group_id, port, protocol, start_port, end_port) \
                 SELECT id, group_id, {ports} FROM destinations"
            ))?;
            r.exec(&format!(
                "INSERT INTO {STAGED_POLICIES} (id, group_id, destination_id) \
                 SELECT id, group_id, destination_id FROM policies"
            ))?;
            r.exec(&format!(
                "INSERT INTO {STAGED_INFO} (last_updated, era) {version}"
            ))?;
            r.record("snapshot")
        })?;
        let (tags, destinations, policies) = self.staged_counts()?;
        self.report.line(format!(
            "copied {tags} tags, {destinations} destinations, {policies} policies"
        ));
        Ok(())
    }

    /// The original's `last_updated` in nanoseconds, as high as any of its readers saw it (see
    /// `detect`): an SQL expression over `policies_info`.
    fn original_version_nanos(&self) -> &'static str {
        match self.kind {
            DatabaseType::Postgres => {
                "GREATEST(CAST(EXTRACT(EPOCH FROM last_updated) * 1000000 AS BIGINT), \
                 CAST(EXTRACT(EPOCH FROM (last_updated AT TIME ZONE \
                 current_setting('TimeZone'))) * 1000000 AS BIGINT)) * 1000"
            }
            _ => {
                "GREATEST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', last_updated), \
                 CAST(UNIX_TIMESTAMP(last_updated) * 1000000 AS SIGNED)) * 1000"
            }
        }
    }

    fn staged_counts(&mut self) -> Result<(i64, i64, i64), String> {
        Ok((
            one_int(self.db, &format!("SELECT COUNT(*) FROM {STAGED_GROUPS}"))?,
            one_int(
                self.db,
                &format!("SELECT COUNT(*) FROM {STAGED_DESTINATIONS}"),
            )?,
            one_int(self.db, &format!("SELECT COUNT(*) FROM {STAGED_POLICIES}"))?,
        ))
    }

    /// Step 2: drop the old schema's tables (security_groups stays).
    fn drop_old(&mut self) -> Result<(), String> {
        let tables: Vec<&str> = match self.direction {
            Direction::Adopt => ORIGINAL_TABLES.to_vec(),
            Direction::ToOriginal => {
                let mut t = detect::NETMAN_TABLES.to_vec();
                t.push("netman_migrations");
                t.push(crate::policy::store::CHANGE_LOG_TABLE);
                t.extend(crate::policy::asg::schema::NETMAN_ONLY_TABLES);
                t.extend(crate::policy::sd::store::TABLES);
                t
            }
        };
        if self.direction == Direction::ToOriginal {
            let routes = self.count_if_present("internal_routes")?;
            if routes > 0 {
                self.report.line(format!(
                    "dropped {routes} internal routes: the original's database has no place for them"
                ));
            }
        }
        // Referencing tables first.
        let order = ["policies", "destinations"];
        let mut sorted: Vec<&str> = order
            .iter()
            .copied()
            .filter(|t| tables.contains(t))
            .collect();
        sorted.extend(tables.iter().copied().filter(|t| !order.contains(t)));
        for t in sorted {
            let name = if t == "groups" { groups(self.kind) } else { t };
            self.exec(&format!("DROP TABLE IF EXISTS {name}"))?;
        }
        self.record("drop")
    }

    /// Step 3 of the switch back: the original's HEAD schema, its bookkeeping and its pool.
    fn create_original(&mut self, tag_length: u8) -> Result<(), String> {
        for s in original_schema::create_statements(self.kind) {
            self.exec(s)?;
        }
        self.exec(original_schema::security_groups_statement(self.kind))?;
        let ids = detect::head_migration_ids();
        let now = match self.kind {
            DatabaseType::Postgres => "CURRENT_TIMESTAMP",
            _ => "NOW()",
        };
        let values: Vec<String> = ids.iter().map(|i| format!("('{i}', {now})")).collect();
        self.exec(&match self.kind {
            DatabaseType::Postgres => format!(
                "INSERT INTO gorp_migrations (id, applied_at) VALUES {} ON CONFLICT DO NOTHING",
                values.join(", ")
            ),
            _ => format!(
                "INSERT IGNORE INTO gorp_migrations (id, applied_at) VALUES {}",
                values.join(", ")
            ),
        })?;
        // The pool: free slots above the highest present (re-runnable), as the original's
        // one-statement fill leaves them (type 'app').
        let g = groups(self.kind);
        let want = (1i64 << (8 * tag_length as i64)) - 1;
        let mut next = one_int(self.db, &format!("SELECT COALESCE(MAX(id), 0) FROM {g}"))? + 1;
        while next <= want {
            let end = (next + 4999).min(want);
            let rows: Vec<String> = (next..=end).map(|i| format!("({i})")).collect();
            self.exec(&format!("INSERT INTO {g} (id) VALUES {}", rows.join(",")))?;
            next = end + 1;
        }
        if self.kind == DatabaseType::Postgres {
            self.exec(&format!(
                "SELECT setval(pg_get_serial_sequence('groups', 'id'), {want})"
            ))?;
        }
        Ok(())
    }

    /// Step 4, one transaction: tags onto the pool's rows, destinations and policies with their
    /// ids, the version; then the counts must equal the staged ones.
    fn restore(&mut self, staged: (i64, i64, i64)) -> Result<(), String> {
        let g = groups(self.kind);
        self.exec(&match self.kind {
            DatabaseType::Mysql => format!(
                "UPDATE {g} t JOIN {STAGED_GROUPS} s ON s.id = t.id \
                 SET t.guid = s.guid, t.type = s.type"
            ),
            _ => format!(
                "UPDATE {g} SET guid = s.guid, type = s.type FROM {STAGED_GROUPS} s \
                 WHERE s.id = {g}.id"
            ),
        })?;
        self.exec(&format!(
            "INSERT INTO destinations (id, group_id, port, protocol, start_port, end_port) \
             SELECT id, group_id, port, protocol, start_port, end_port FROM {STAGED_DESTINATIONS} \
             ORDER BY id"
        ))?;
        self.exec(&format!(
            "INSERT INTO policies (id, group_id, destination_id) \
             SELECT id, group_id, destination_id FROM {STAGED_POLICIES} ORDER BY id"
        ))?;
        if self.kind == DatabaseType::Postgres {
            for t in ["destinations", "policies"] {
                self.exec(&format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', 'id'), \
                     (SELECT COALESCE(MAX(id), 0) + 1 FROM {t}), false)"
                ))?;
            }
        }
        let before = one_int(
            self.db,
            &format!("SELECT MAX(last_updated) FROM {STAGED_INFO}"),
        )?;
        let now = crate::clock::unix_nanos();
        match self.direction {
            Direction::Adopt => {
                let version = now.max(before + 1);
                self.exec(&format!(
                    "UPDATE policies_info SET last_updated = {version} WHERE id = 1"
                ))?;
                self.report.line(format!(
                    "policies_info.last_updated: {before} -> {version} ns"
                ));
            }
            Direction::ToOriginal => {
                // Microseconds, rounded up, past both now and netman's value.
                let micros = (now / 1000).max(before.div_euclid(1000) + 1);
                let stamp = wall_clock_micros(micros);
                self.exec(&format!(
                    "INSERT INTO policies_info (id, last_updated) VALUES (1, '{stamp}')"
                ))?;
                if self.kind == DatabaseType::Postgres {
                    self.exec("SELECT setval(pg_get_serial_sequence('policies_info', 'id'), 1)")?;
                }
                self.report.line(format!(
                    "policies_info.last_updated: {before} ns -> {stamp} (UTC)"
                ));
            }
        }
        let got = (
            one_int(
                self.db,
                &format!("SELECT COUNT(*) FROM {g} WHERE guid IS NOT NULL"),
            )?,
            one_int(self.db, "SELECT COUNT(*) FROM destinations")?,
            one_int(self.db, "SELECT COUNT(*) FROM policies")?,
        );
        if got != staged {
            return Err(format!(
                "restored (tags, destinations, policies) = {got:?}, but {staged:?} were copied; \
                 rolled back"
            ));
        }
        self.report.line(format!(
            "restored {} tags, {} destinations, {} policies with their ids",
            got.0, got.1, got.2
        ));
        self.record("restore")
    }

    /// Step 5: the staging tables and the journal go.
    fn cleanup(&mut self) -> Result<(), String> {
        for t in [
            STAGED_POLICIES,
            STAGED_DESTINATIONS,
            STAGED_GROUPS,
            STAGED_INFO,
        ] {
            self.exec(&format!("DROP TABLE IF EXISTS {t}"))?;
        }
        if self.mysql() {
            self.exec(&format!("DROP TABLE IF EXISTS {JOURNAL_TABLE}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_sizes_name_their_tag_length() {
        assert_eq!(pool_tag_length(255), Some(1));
        assert_eq!(pool_tag_length(65535), Some(2));
        assert_eq!(pool_tag_length(16_777_215), Some(3));
        assert_eq!(pool_tag_length(1000), None);
    }

    fn original(pool: i64) -> Original {
        Original {
            era: Era::Head,
            security_groups: false,
            security_group_rows: 0,
            pool_size: pool,
            tags_in_use: 0,
            other_type_tags: 0,
            destinations: 0,
            policies: 0,
            last_updated: None,
        }
    }

    #[test]
    fn a_tag_length_that_would_change_tags_is_refused_with_the_fix() {
        assert!(check_tag_length(&original(65535), 2).is_ok());
        let e = check_tag_length(&original(255), 2).unwrap_err();
        assert!(e.contains("set tag_length to 1"), "{e}");
        let e = check_tag_length(&original(16_777_215), 2).unwrap_err();
        assert!(e.contains("supports 1 or 2"), "{e}");
        assert!(check_tag_length(&original(300), 2).is_err());
    }
}
