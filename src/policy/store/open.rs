//! Opening the policy store from its config: connect with retry and backoff until
//! `connect_timeout_seconds`, migrate (one migrator at a time), fill the tag pool.

use super::sql_store::SqlStore;
use super::{CachedStore, Store, StoreError, TagPool};
use crate::db::DatabaseConfig;
use std::sync::Arc;

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
pub fn open(
    config: &DatabaseConfig,
    pool: impl Into<TagPool>,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(CachedStore::new(open_uncached(config, pool)?)))
}

/// [`open`] without the read cache: every list is a SQL query.
pub fn open_uncached(
    config: &DatabaseConfig,
    pool: impl Into<TagPool>,
) -> Result<Arc<dyn Store>, StoreError> {
    let pool = pool.into();
    validate_tag_length(pool.length)?;
    Ok(Arc::new(SqlStore::open(config, pool)?))
}

/// Runs netman's migrations alone, retrying until the database answers or
/// `connect_timeout_seconds` pass; returns the schema version. (`policy-server migrate` also
/// adopts an original database: [`crate::policy::adopt::migrate`].)
pub fn migrate(config: &DatabaseConfig, pool: impl Into<TagPool>) -> Result<i64, StoreError> {
    open_uncached(config, pool).map(|_| super::migrations::KNOWN_VERSION)
}
