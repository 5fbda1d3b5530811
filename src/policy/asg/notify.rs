//! The security-group store as the writers (admin API, syncer) use it: every write is timed
//! (`policy_server_asg_store_operation_duration_seconds{op,outcome}`) and wakes the parked
//! `security_groups_last_updated` watches of this server at once.

use super::store::{AsgError, AsgStore, Edit, Replaced, Snapshot, StoredGroup, SyncMark};
use crate::api::security_groups::SecurityGroup;
use crate::metrics::OpMetrics;
use crate::policy::watch::{VersionSource, VersionWatch};
use std::collections::HashSet;
use std::sync::Arc;

pub struct NotifyingAsgStore {
    pub store: Arc<dyn AsgStore>,
    pub watch: VersionWatch,
    pub ops: OpMetrics,
}

/// The version a watch over the security groups reads.
pub struct AsgVersion(pub Arc<dyn AsgStore>);

impl VersionSource for AsgVersion {
    fn version(&self) -> Result<i64, String> {
        self.0.version().map_err(|e| e.to_string())
    }
}

impl NotifyingAsgStore {
    fn write<T>(&self, op: &str, f: impl FnOnce() -> Result<T, AsgError>) -> Result<T, AsgError> {
        self.watch.local_write_begins();
        let r = self.ops.time(op, f);
        self.watch.local_write_done(r.is_ok().then(HashSet::new));
        r
    }
}

impl AsgStore for NotifyingAsgStore {
    fn version(&self) -> Result<i64, AsgError> {
        self.ops.time("Version", || self.store.version())
    }
    fn snapshot(&self) -> Result<Snapshot, AsgError> {
        self.ops.time("Snapshot", || self.store.snapshot())
    }
    fn get(&self, guid: &str) -> Result<StoredGroup, AsgError> {
        self.ops.time("Get", || self.store.get(guid))
    }
    fn create(&self, group: &SecurityGroup) -> Result<StoredGroup, AsgError> {
        self.write("Create", || self.store.create(group))
    }
    fn modify(&self, guid: &str, edit: Edit<'_>) -> Result<StoredGroup, AsgError> {
        self.write("Modify", || self.store.modify(guid, edit))
    }
    fn delete(&self, guid: &str) -> Result<(), AsgError> {
        self.write("Delete", || self.store.delete(guid))
    }
    fn replace(&self, groups: &[SecurityGroup], mark: &SyncMark) -> Result<Replaced, AsgError> {
        self.write("Replace", || self.store.replace(groups, mark))
    }
    fn sync_mark(&self) -> Result<SyncMark, AsgError> {
        self.store.sync_mark()
    }
    fn acquire_sync_lease(&self, holder: &str, ttl_ns: i64) -> Result<bool, AsgError> {
        self.store.acquire_sync_lease(holder, ttl_ns)
    }
    fn release_sync_lease(&self, holder: &str) -> Result<(), AsgError> {
        self.store.release_sync_lease(holder)
    }
}
