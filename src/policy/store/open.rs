//! Opening a store from its config: connect with retry and backoff until
//! `connect_timeout_seconds`, migrate (one migrator at a time), fill the tag pool.

use super::config::{DatabaseConfig, DatabaseType};
use super::{CachedStore, Store, StoreError};
use crate::config::Validate;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tag lengths the store supports (bytes): 1 (255 tags) or 2 (65,535 tags).
pub fn validate_tag_length(tag_length: u8) -> Result<(), StoreError> {
    if !(1..=2).contains(&tag_length) {
        return Err(StoreError::Database(format!(
            "invalid 'tag_length': {tag_length} (must be 1 or 2)"
        )));
    }
    Ok(())
}

/// Connects (retrying until `connect_timeout_seconds`), migrates and returns the store, with the
/// read cache of [`CachedStore`] in front.
pub fn open(config: &DatabaseConfig, tag_length: u8) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(CachedStore::new(open_uncached(
        config, tag_length,
    )?)))
}

/// [`open`] without the read cache: every list is a SQL query.
pub fn open_uncached(
    config: &DatabaseConfig,
    tag_length: u8,
) -> Result<Arc<dyn Store>, StoreError> {
    validate_tag_length(tag_length)?;
    config.validate().map_err(StoreError::Database)?;
    retry(config, || open_once(config, tag_length))
}

/// Runs the migrations alone (the `policy-server migrate` subcommand), retrying until the
/// database answers or `connect_timeout_seconds` pass. Returns the schema version.
pub fn migrate(config: &DatabaseConfig, tag_length: u8) -> Result<i64, StoreError> {
    open_uncached(config, tag_length).map(|_| super::migrations::KNOWN_VERSION)
}

fn open_once(config: &DatabaseConfig, tag_length: u8) -> Result<Arc<dyn Store>, StoreError> {
    match config.kind {
        DatabaseType::Sqlite => Ok(Arc::new(super::sqlite::SqliteStore::open(
            config, tag_length,
        )?)),
        #[cfg(feature = "postgres")]
        DatabaseType::Postgres => Ok(Arc::new(super::postgres::PostgresStore::open(
            config, tag_length,
        )?)),
        #[cfg(feature = "mysql")]
        DatabaseType::Mysql => Ok(Arc::new(super::mysql::MysqlStore::open(
            config, tag_length,
        )?)),
        #[allow(unreachable_patterns)]
        other => Err(StoreError::Database(format!(
            "{other} support is not compiled into this binary"
        ))),
    }
}

/// Retries `attempt` on database errors with exponential backoff (100 ms doubling, at most 2 s)
/// until `connect_timeout_seconds`; other errors (schema too new) end at once.
pub(crate) fn retry<T>(
    config: &DatabaseConfig,
    attempt: impl Fn() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let timeout = Duration::from_secs(config.connect_timeout_seconds);
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match attempt() {
            Ok(v) => return Ok(v),
            Err(StoreError::Database(e)) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(StoreError::Database(format!(
                        "could not open the {} within connect_timeout_seconds={} \
                         ({attempts} attempts); last error: {e}",
                        config.describe(),
                        config.connect_timeout_seconds
                    )));
                }
                log::warn!(
                    "store: opening the {} failed (attempt {attempts}), retrying in {:?}: {e}",
                    config.describe(),
                    delay
                );
                std::thread::sleep(delay.min(deadline - now));
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(other) => return Err(other),
        }
    }
}

/// How long a single connection attempt may take: what is left of the start-up budget, at most
/// 10 s (so a black-holed address is retried rather than waited on for the whole budget).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn attempt_timeout(config: &DatabaseConfig) -> Duration {
    Duration::from_secs(config.connect_timeout_seconds.clamp(1, 10))
}
