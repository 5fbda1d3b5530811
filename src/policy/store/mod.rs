//! The policy store: the [`Store`] trait, its one SQL implementation on [`crate::db::Db`] (SQLite
//! embedded default, PostgreSQL and MySQL/MariaDB behind cargo features), and the read cache in
//! front. Schema and algorithms follow the original (`groups` tag pool, `destinations`,
//! `policies`, `policies_info`); see the reference §4.

mod cache;
mod engine;
mod migrations;
mod open;
pub(crate) mod sql_store;

pub use cache::CachedStore;
pub(crate) use engine::Engine;
pub(crate) use migrations::migrate_locked;
pub use migrations::KNOWN_VERSION as SCHEMA_VERSION;
pub use open::{migrate, open, open_uncached, validate_tag_length};

use crate::api::policy::{PoliciesResponse, Policy, Tag};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// How long a released tag rests before it is handed out again, unless configured otherwise
/// (`tag_quarantine_seconds`): far longer than a healthy cell runs on stale rules (one poll
/// interval, seconds), long enough for an operator to act on a cell that reports it cannot sync,
/// and short enough that the 65,535 tags of the default pool cannot run out through churn.
pub const DEFAULT_TAG_QUARANTINE: Duration = Duration::from_secs(3600);

/// The tag pool: tag length in bytes (1 or 2) and the quarantine of released tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagPool {
    pub length: u8,
    pub quarantine: Duration,
}

impl TagPool {
    pub fn new(length: u8, quarantine: Duration) -> TagPool {
        TagPool { length, quarantine }
    }
}

/// A pool of `length`-byte tags with the default quarantine.
impl From<u8> for TagPool {
    fn from(length: u8) -> TagPool {
        TagPool::new(length, DEFAULT_TAG_QUARANTINE)
    }
}

/// Creates or migrates netman's policy tables and fills the tag pool, on a connection whose
/// caller holds the migration lock: what `policy-server migrate` runs inside a conversion
/// (public for tests that drive the conversion engine on connections of their own).
pub fn create_schema(tx: &mut dyn crate::db::Tx, tag_length: u8) -> Result<(), crate::db::Error> {
    migrations::migrate_locked(tx, tag_length)
}

/// Which policies a list returns, as the `GET policies` query parameters select them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyFilter {
    All,
    /// Source OR destination in the list (`id=`).
    Either(Vec<String>),
    /// Source in the list (`source_id=` alone).
    Source(Vec<String>),
    /// Destination in the list (`dest_id=` alone).
    Destination(Vec<String>),
    /// Source in the first AND destination in the second (`source_id=` and `dest_id=`).
    SourceAndDestination(Vec<String>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    Database(String),
    /// Every tag of the pool is in use.
    TagPoolExhausted,
    /// Every tag not in use was released less than the quarantine ago.
    TagsInQuarantine { resting: i64 },
    /// The same id already holds a tag of another type (internal `PUT tags`).
    TagTypeConflict { id: String, existing: String },
    /// The schema in the database is newer than this binary knows.
    SchemaTooNew { found: i64, known: i64 },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Database(e) => write!(f, "database: {e}"),
            StoreError::TagPoolExhausted => write!(f, "failed to find available tag"),
            StoreError::TagsInQuarantine { resting } => write!(
                f,
                "failed to find available tag: the {resting} free tags were all released less than \
                 tag_quarantine_seconds ago"
            ),
            StoreError::TagTypeConflict { id, existing } => {
                write!(f, "id {id:?} already has a tag of type {existing:?}")
            }
            StoreError::SchemaTooNew { found, known } => write!(
                f,
                "database schema version {found} is newer than this binary knows ({known})"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<crate::db::Error> for StoreError {
    fn from(e: crate::db::Error) -> StoreError {
        use crate::db::Error;
        match e {
            Error::Config(m)
            | Error::Database(m)
            | Error::LostRace(m)
            | Error::Permanent(m)
            | Error::Refused(m) => StoreError::Database(m),
            Error::SchemaTooNew { found, known } => StoreError::SchemaTooNew { found, known },
        }
    }
}

/// `policies` as the internal API's answer (a serialised [`PoliciesResponse`]).
pub fn render_list(policies: Vec<Policy>) -> Result<Vec<u8>, StoreError> {
    crate::api::gojson::to_vec(&PoliciesResponse {
        total_policies: policies.len(),
        policies,
    })
    .map_err(|e| StoreError::Database(format!("rendering policies: {e}")))
}

/// The table of recent policy changes (netman's own; the original has none).
pub const CHANGE_LOG_TABLE: &str = "policy_changes";

/// One move of `last_updated` as `policy_changes` logged it: from `prev` to `version`, touching
/// the app ids `ids` (`None`: not known, every watch is affected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub version: i64,
    pub prev: i64,
    pub ids: Option<std::collections::HashSet<String>>,
}

/// What every backend provides. Policies passed in are validated already; create and delete are
/// each one transaction (all of the batch or nothing) and move `last_updated`.
pub trait Store: Send + Sync {
    /// Creates the policies (idempotent: existing ones are kept), allocating tags as needed.
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError>;
    /// Deletes the policies (missing ones are skipped), releasing unreferenced tags.
    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError>;
    /// Lists policies with both tags filled.
    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError>;
    /// [`Store::list`] as the internal API answers it, `{"total_policies":N,"policies":[...]}`:
    /// the bytes of a serialised [`PoliciesResponse`]. The cache keeps every policy rendered, so
    /// there an answer is a concatenation.
    fn list_rendered(&self, filter: &PolicyFilter) -> Result<Vec<u8>, StoreError> {
        render_list(self.list(filter)?)
    }
    /// Tag assignments ordered by tag.
    fn tags(&self) -> Result<Vec<Tag>, StoreError>;
    /// Returns the tag of (id, type), allocating one if needed.
    fn create_tag(&self, id: &str, kind: &str) -> Result<Tag, StoreError>;
    /// `policies_info.last_updated` as Unix nanoseconds.
    fn last_updated(&self) -> Result<i64, StoreError>;
    /// The logged changes after version `after`, oldest first (possibly not all of them: the
    /// caller checks that they link up). A store without a log has none.
    fn changes_since(&self, after: i64) -> Result<Vec<LoggedChange>, StoreError> {
        let _ = after;
        Ok(Vec::new())
    }
    /// For each id, how many policies it is the source of (quota checks).
    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError>;
    fn count(&self) -> Result<usize, StoreError>;
    /// Released tags still in quarantine (not handed out again until it ends).
    fn quarantined_tags(&self) -> Result<usize, StoreError>;
    /// A cheap query proving the database answers (`/health`).
    fn check(&self) -> Result<(), StoreError>;
}
