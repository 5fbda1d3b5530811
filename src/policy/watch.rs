//! The version watch behind `policies_last_updated?wait=&after=[&id=]`: one cached copy of
//! `policies_info.last_updated` per server, a short log of recent changes with the app ids each
//! touched, and a [`Signal`] that wakes the parked watch requests when it moves.
//!
//! A change made through this server is logged with its ids and wakes its watchers at once (the
//! store wrapper [`NotifyingStore`] records every write), so a watch that names its ids (`id=`)
//! is answered only for changes that touch them: a policy between two apps wakes the cells of
//! those apps, not the whole fleet. A change made through another server
//! on the same database is seen by a version check: one `SELECT` of `last_updated` every
//! [`CHECK_INTERVAL`], made only while at least one request is parked. When it moved, the server
//! reads the ids of the changes from the store's change log ([`VersionSource::changes_since`],
//! `policy_changes`), so there too only the affected watches wake; a log that does not link the
//! old version to the new one (pruned, or a writer without it) wakes them all. That bounds the
//! wake-up delay across servers to one interval plus two queries on every backend (PostgreSQL,
//! MySQL and SQLite alike), at a cost of 40 primary-key reads a second per server with watchers
//! and none without; PostgreSQL `LISTEN/NOTIFY` would save those reads but has no MySQL
//! counterpart and needs a dedicated connection per server, so the check was chosen (figures in
//! docs/fleet.md).

use super::store::{LoggedChange, PolicyFilter, Store, StoreError};
use crate::api::policy::{Policy, Tag};
use crate::http::Signal;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often the database is asked for the version while requests are parked. Short, because
/// the interval is most of the cross-server wake-up (target 200 ms, docs/fleet.md) and one check
/// is one primary-key read.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(25);
/// Changes remembered; a watch whose `after` is older is answered at once.
const LOG_LENGTH: usize = 4096;

/// One change of the version, with the ids of the policies it touched when known.
struct Change {
    seq: u64,
    version: i64,
    /// `None`: not known (made through another server).
    ids: Option<Arc<HashSet<String>>>,
}

/// What a parked watch learns when it looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// A change after the watch's baseline touched its ids (or any change, without ids).
    pub affected: bool,
    /// The newest logged version.
    pub version: Option<i64>,
}

#[derive(Clone)]
pub struct VersionWatch {
    inner: Arc<Inner>,
}

/// Where a watch reads its version: the policies' `last_updated`, or another table's version.
pub trait VersionSource: Send + Sync {
    fn version(&self) -> Result<i64, String>;
    /// The logged changes after `after`, oldest first, if the source keeps a log.
    fn changes_since(&self, after: i64) -> Result<Vec<LoggedChange>, String> {
        let _ = after;
        Ok(Vec::new())
    }
}

struct PolicyVersion(Arc<dyn Store>);

impl VersionSource for PolicyVersion {
    fn version(&self) -> Result<i64, String> {
        self.0.last_updated().map_err(|e| e.to_string())
    }
    fn changes_since(&self, after: i64) -> Result<Vec<LoggedChange>, String> {
        self.0.changes_since(after).map_err(|e| e.to_string())
    }
}

/// The changes of `log` that lead from version `from` to `to`, if the log holds every one of
/// them (each starts where the one before ended).
fn linked(from: i64, to: i64, log: &[LoggedChange]) -> Option<&[LoggedChange]> {
    let mut at = from;
    for (i, c) in log.iter().enumerate() {
        if c.prev != at {
            return None;
        }
        at = c.version;
        if at == to {
            return Some(&log[..=i]);
        }
    }
    None
}

struct Inner {
    store: Arc<dyn VersionSource>,
    signal: Signal,
    state: Mutex<State>,
    wake: Condvar,
    interval: Duration,
}

#[derive(Default)]
struct State {
    version: Option<i64>,
    watchers: usize,
    nudged: bool,
    stopped: bool,
    last_error: Option<Instant>,
    changes: VecDeque<Change>,
    next_seq: u64,
    /// Writes through this server under way: the version they move is theirs to log.
    local_writes: usize,
    /// The version before the first logged change, while the log still starts there.
    origin: Option<i64>,
}

impl State {
    fn log(&mut self, version: i64, ids: Option<Arc<HashSet<String>>>) {
        if let Some(last) = self.changes.back_mut() {
            if last.version == version {
                // Two writes seen at one version: the union of what they touched.
                last.ids = match (last.ids.take(), ids) {
                    (Some(a), Some(b)) => Some(Arc::new(a.union(&b).cloned().collect())),
                    _ => None,
                };
                self.next_seq += 1;
                last.seq = self.next_seq;
                return;
            }
        }
        self.next_seq += 1;
        self.changes.push_back(Change {
            seq: self.next_seq,
            version,
            ids,
        });
        if self.changes.len() > LOG_LENGTH {
            self.changes.pop_front();
            self.origin = None;
        }
    }

    fn look(&self, baseline: u64, ids: Option<&HashSet<String>>) -> Look {
        let affected = self
            .changes
            .iter()
            .rev()
            .take_while(|c| c.seq > baseline)
            .any(|c| match (&c.ids, ids) {
                (Some(changed), Some(mine)) => changed.iter().any(|id| mine.contains(id)),
                _ => true,
            });
        Look {
            affected,
            version: self.changes.back().map(|c| c.version).or(self.version),
        }
    }
}

/// Counts one parked request as a watcher for as long as it lives.
pub struct Watcher(Arc<Inner>);

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.watchers = st.watchers.saturating_sub(1);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a version read from the database; a move nobody here logged came through another
    /// server: its changes are read from the log (so only their watchers wake), or logged with
    /// ids unknown (waking every watcher) when the log does not link the two versions.
    fn record(&self, version: i64) {
        let from = {
            let mut st = self.lock();
            let known = st.changes.iter().any(|c| c.version == version);
            let moved = st.version.is_some_and(|v| v != version) && !known;
            if st.local_writes > 0 && moved {
                // The local write logs it (with its ids) in a moment.
                return;
            }
            if st.version.is_none() && st.changes.is_empty() {
                st.origin = Some(version);
            }
            if !moved {
                st.version = Some(version);
                return;
            }
            st.version
        };
        let log = from
            .map(|from| self.store.changes_since(from))
            .transpose()
            .unwrap_or_else(|e| {
                log::debug!("reading the policy change log: {e}");
                None
            })
            .unwrap_or_default();
        {
            let mut st = self.lock();
            if st.version != from {
                // Recorded meanwhile (a local write or another check): theirs is newer.
                return;
            }
            match from.and_then(|from| linked(from, version, &log)) {
                Some(changes) => {
                    for c in changes {
                        st.log(c.version, c.ids.clone().map(Arc::new));
                    }
                }
                None => st.log(version, None),
            }
            st.version = Some(version);
        }
        self.signal.notify();
    }

    fn check(&self) {
        match self.store.version() {
            Ok(v) => self.record(v),
            Err(e) => {
                let mut st = self.lock();
                if st
                    .last_error
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                {
                    st.last_error = Some(Instant::now());
                    log::warn!("policy version check failed: {e}");
                }
            }
        }
    }

    fn run(&self) {
        loop {
            {
                let mut st = self.lock();
                while !st.stopped && st.watchers == 0 {
                    st.nudged = false;
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.stopped {
                    return;
                }
                if !st.nudged {
                    st = self
                        .wake
                        .wait_timeout(st, self.interval)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                if st.stopped {
                    return;
                }
                st.nudged = false;
            }
            self.check();
        }
    }
}

impl VersionWatch {
    /// Starts the checker thread (idle while nobody watches).
    pub fn start(store: Arc<dyn Store>, interval: Duration) -> VersionWatch {
        VersionWatch::start_source(
            Arc::new(PolicyVersion(store)),
            interval,
            "policy-version-watch",
        )
    }

    /// A watch over any version (the security groups' has its own).
    pub fn start_source(
        store: Arc<dyn VersionSource>,
        interval: Duration,
        name: &str,
    ) -> VersionWatch {
        let inner = Arc::new(Inner {
            store,
            signal: Signal::new(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            interval,
        });
        let thread_inner = Arc::clone(&inner);
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || thread_inner.run());
        if let Err(e) = spawned {
            log::error!("cannot start the version watch {name}: {e}");
        }
        VersionWatch { inner }
    }

    pub fn signal(&self) -> Signal {
        self.inner.signal.clone()
    }

    /// The version last read from the database.
    pub fn current(&self) -> Option<i64> {
        self.inner.lock().version
    }

    /// The log position a new watch starts from.
    pub fn baseline(&self) -> u64 {
        self.inner.lock().next_seq
    }

    /// The log position just after the change that produced `version`, if it is remembered
    /// and the log reaches `current` (so everything between is known).
    pub fn baseline_of(&self, version: i64, current: i64) -> Option<u64> {
        let st = self.inner.lock();
        if st.changes.back().map(|c| c.version) != Some(current) {
            return None;
        }
        st.changes
            .iter()
            .rev()
            .find(|c| c.version == version)
            .map(|c| c.seq)
            .or_else(|| (st.origin == Some(version)).then_some(0))
    }

    /// Whether anything after `baseline` touched `ids` (anything at all without ids).
    pub fn look(&self, baseline: u64, ids: Option<&HashSet<String>>) -> Look {
        self.inner.lock().look(baseline, ids)
    }

    /// A write through this server begins; [`VersionWatch::local_write_done`] must follow.
    pub fn local_write_begins(&self) {
        self.inner.lock().local_writes += 1;
    }

    /// A write through this server ended: log its version with the ids it touched (`None` when
    /// it failed) and wake the watchers. When the change log links the version last recorded to
    /// the new one, every change in between is logged from it, so a change another server made
    /// just before this write wakes its own watchers too.
    pub fn local_write_done(&self, ids: Option<HashSet<String>>) {
        let version = self.inner.store.version();
        let from = self.inner.lock().version;
        let log = match (&version, from) {
            (Ok(v), Some(from)) if ids.is_some() && *v != from => {
                self.inner.store.changes_since(from).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let moved = {
            let mut st = self.inner.lock();
            st.local_writes = st.local_writes.saturating_sub(1);
            match (version, ids) {
                (Ok(v), Some(ids))
                    if st.version != Some(v)
                        || st.changes.back().is_some_and(|c| c.version == v) =>
                {
                    let changes = from
                        .filter(|f| st.version == Some(*f))
                        .and_then(|f| linked(f, v, &log));
                    match changes {
                        Some(changes) => {
                            for c in changes {
                                st.log(c.version, c.ids.clone().map(Arc::new));
                            }
                        }
                        None => st.log(v, Some(Arc::new(ids))),
                    }
                    st.version = Some(v);
                    true
                }
                _ => false,
            }
        };
        if moved {
            self.inner.signal.notify();
        }
        self.nudge();
    }

    /// Reads the version from the database now (a new watch request starts from the truth).
    pub fn refresh(&self) -> Result<i64, String> {
        let v = self.inner.store.version()?;
        self.inner.record(v);
        Ok(v)
    }

    /// Registers a parked request; the checker runs while any is registered.
    pub fn watcher(&self) -> Watcher {
        let mut st = self.inner.lock();
        st.watchers += 1;
        self.inner.wake.notify_all();
        Watcher(Arc::clone(&self.inner))
    }

    pub fn watchers(&self) -> usize {
        self.inner.lock().watchers
    }

    /// Something was written through this server: check the version now.
    pub fn nudge(&self) {
        let mut st = self.inner.lock();
        if st.watchers > 0 {
            st.nudged = true;
            self.inner.wake.notify_all();
        }
    }

    pub fn stop(&self) {
        self.inner.lock().stopped = true;
        self.inner.wake.notify_all();
    }
}

/// A store that nudges the watch after every write, so local changes wake watchers at once.
pub struct NotifyingStore {
    pub store: Arc<dyn Store>,
    pub watch: VersionWatch,
}

/// The app ids a batch of policies touches.
fn touched(policies: &[Policy]) -> HashSet<String> {
    policies
        .iter()
        .flat_map(|p| [p.source.id.clone(), p.destination.id.clone()])
        .collect()
}

impl NotifyingStore {
    fn write(
        &self,
        policies: &[Policy],
        f: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.watch.local_write_begins();
        let r = f();
        self.watch
            .local_write_done(r.is_ok().then(|| touched(policies)));
        r
    }
}

impl Store for NotifyingStore {
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.write(policies, || self.store.create(policies))
    }
    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.write(policies, || self.store.delete(policies))
    }
    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
        self.store.list(filter)
    }
    fn list_rendered(&self, filter: &PolicyFilter) -> Result<Vec<u8>, StoreError> {
        self.store.list_rendered(filter)
    }
    fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        self.store.tags()
    }
    fn create_tag(&self, id: &str, kind: &str) -> Result<Tag, StoreError> {
        self.store.create_tag(id, kind)
    }
    fn last_updated(&self) -> Result<i64, StoreError> {
        self.store.last_updated()
    }
    fn changes_since(&self, after: i64) -> Result<Vec<LoggedChange>, StoreError> {
        self.store.changes_since(after)
    }
    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        self.store.source_policy_counts(ids)
    }
    fn count(&self) -> Result<usize, StoreError> {
        self.store.count()
    }
    fn quarantined_tags(&self) -> Result<usize, StoreError> {
        self.store.quarantined_tags()
    }
    fn check(&self) -> Result<(), StoreError> {
        self.store.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(prev: i64, version: i64) -> LoggedChange {
        LoggedChange {
            version,
            prev,
            ids: None,
        }
    }

    #[test]
    fn only_a_log_that_links_both_versions_is_used() {
        let log = [change(10, 20), change(20, 30), change(30, 40)];
        assert_eq!(linked(10, 30, &log), Some(&log[..2]));
        assert_eq!(linked(10, 40, &log), Some(&log[..]));
        // Starting elsewhere, a gap, or not reaching the version: not used.
        assert_eq!(linked(15, 30, &log), None);
        assert_eq!(linked(10, 30, &[change(10, 20), change(25, 30)]), None);
        assert_eq!(linked(10, 50, &log), None);
        assert_eq!(linked(10, 20, &[]), None);
        // A version the log passes without stopping at: not used either.
        assert_eq!(linked(10, 25, &log), None);
    }
}
