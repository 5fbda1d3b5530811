//! A store wrapper that records the duration and outcome of every store call (metric
//! `policy_server_store_operation_duration_seconds{op,outcome}`), with the original's op names.

use super::store::{LoggedChange, PolicyFilter, Store, StoreError};
use crate::api::policy::{Policy, Tag};
use crate::metrics::OpMetrics;
use std::collections::HashMap;
use std::sync::Arc;

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    ops: OpMetrics,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, ops: OpMetrics) -> MeteredStore {
        MeteredStore { inner, ops }
    }
}

fn list_op(filter: &PolicyFilter) -> &'static str {
    if *filter == PolicyFilter::All {
        "All"
    } else {
        "ByGuids"
    }
}

impl Store for MeteredStore {
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.ops.time("Create", || self.inner.create(policies))
    }
    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.ops.time("Delete", || self.inner.delete(policies))
    }
    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
        self.ops.time(list_op(filter), || self.inner.list(filter))
    }
    fn list_rendered(&self, filter: &PolicyFilter) -> Result<Vec<u8>, StoreError> {
        self.ops
            .time(list_op(filter), || self.inner.list_rendered(filter))
    }
    fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        self.ops.time("Tags", || self.inner.tags())
    }
    fn create_tag(&self, id: &str, kind: &str) -> Result<Tag, StoreError> {
        self.ops
            .time("CreateTag", || self.inner.create_tag(id, kind))
    }
    fn last_updated(&self) -> Result<i64, StoreError> {
        self.ops.time("LastUpdated", || self.inner.last_updated())
    }
    fn changes_since(&self, after: i64) -> Result<Vec<LoggedChange>, StoreError> {
        self.ops
            .time("ChangesSince", || self.inner.changes_since(after))
    }
    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        self.ops
            .time("SourceCounts", || self.inner.source_policy_counts(ids))
    }
    fn count(&self) -> Result<usize, StoreError> {
        self.ops.time("Count", || self.inner.count())
    }
    fn quarantined_tags(&self) -> Result<usize, StoreError> {
        self.ops
            .time("QuarantinedTags", || self.inner.quarantined_tags())
    }
    fn check(&self) -> Result<(), StoreError> {
        self.ops.time("CheckDatabase", || self.inner.check())
    }
}
