//! A read cache in front of any backend: the whole policy list, indexed by source and destination
//! id, valid for exactly one `policies_info.last_updated` value. Every create/delete moves
//! `last_updated` (strictly, in the same transaction), and nothing else changes a listed policy or
//! its tags, so "cached version == current version" means the cached list is the database's list —
//! also when other servers write to the same database.
//!
//! A list costs one primary-key read of `last_updated` plus an in-memory lookup. When the version
//! moved, a background thread rebuilds the index (one at a time, at most once per
//! [`REBUILD_INTERVAL`]). Lists that arrive while a rebuild runs wait for it (up to
//! [`REBUILD_WAIT`]) and are answered from the new index when it covers their version; otherwise
//! SQL answers. (Answering every list of the rebuild window by SQL made right after a change —
//! when all agents fetch — the slowest requests: with 60,000 policies, a third of the reads of
//! that second took over 20 ms, and they were half of a run's reads over 20 ms.)

use super::{PolicyFilter, Store, StoreError};
use crate::api::policy::{Policy, Tag};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

const REBUILD_INTERVAL: Duration = Duration::from_millis(500);
/// The longest a list waits for a running rebuild before SQL answers it.
const REBUILD_WAIT: Duration = Duration::from_secs(1);

pub struct CachedStore {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    index: RwLock<Option<Arc<Index>>>,
    rebuilding: AtomicBool,
    last_rebuild: Mutex<Option<Instant>>,
    /// Rebuilds finished so far; waiters wake on every change.
    finished: Mutex<u64>,
    rebuilt: Condvar,
}

struct Index {
    version: i64,
    /// In creation order (the order of the SQL lists).
    policies: Vec<Policy>,
    by_source: HashMap<String, Vec<u32>>,
    by_destination: HashMap<String, Vec<u32>>,
}

impl Index {
    fn new(version: i64, policies: Vec<Policy>) -> Index {
        let mut by_source: HashMap<String, Vec<u32>> = HashMap::new();
        let mut by_destination: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            by_source
                .entry(p.source.id.clone())
                .or_default()
                .push(i as u32);
            by_destination
                .entry(p.destination.id.clone())
                .or_default()
                .push(i as u32);
        }
        Index {
            version,
            policies,
            by_source,
            by_destination,
        }
    }

    fn positions<'a>(map: &'a HashMap<String, Vec<u32>>, ids: &'a [String]) -> Vec<u32> {
        ids.iter()
            .filter_map(|id| map.get(id))
            .flatten()
            .copied()
            .collect()
    }

    fn select(&self, filter: &PolicyFilter) -> Vec<Policy> {
        let mut at = match filter {
            PolicyFilter::All => return self.policies.clone(),
            PolicyFilter::Source(ids) => Self::positions(&self.by_source, ids),
            PolicyFilter::Destination(ids) => Self::positions(&self.by_destination, ids),
            PolicyFilter::Either(ids) => {
                let mut at = Self::positions(&self.by_source, ids);
                at.extend(Self::positions(&self.by_destination, ids));
                at
            }
            PolicyFilter::SourceAndDestination(src, dst) => Self::positions(&self.by_source, src)
                .into_iter()
                .filter(|i| dst.contains(&self.policies[*i as usize].destination.id))
                .collect(),
        };
        at.sort_unstable();
        at.dedup();
        at.into_iter()
            .map(|i| self.policies[i as usize].clone())
            .collect()
    }
}

impl CachedStore {
    pub fn new(store: Arc<dyn Store>) -> CachedStore {
        CachedStore {
            shared: Arc::new(Shared {
                store,
                index: RwLock::new(None),
                rebuilding: AtomicBool::new(false),
                last_rebuild: Mutex::new(None),
                finished: Mutex::new(0),
                rebuilt: Condvar::new(),
            }),
        }
    }

    fn current(&self) -> Option<Arc<Index>> {
        self.shared
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a background rebuild unless one runs or one ran very recently.
    fn refresh(&self) {
        let shared = &self.shared;
        {
            let last = shared
                .last_rebuild
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REBUILD_INTERVAL) {
                return;
            }
        }
        if shared.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("store-cache".into())
            .spawn(move || {
                shared.rebuild();
                *shared
                    .last_rebuild
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                shared.rebuilding.store(false, Ordering::Release);
                *shared.finished.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                shared.rebuilt.notify_all();
            });
        if spawned.is_err() {
            self.shared.rebuilding.store(false, Ordering::Release);
        }
    }

    /// An index at `version` or later: the current one, or the one a running rebuild makes
    /// within [`REBUILD_WAIT`]. `None` when no rebuild runs or it did not reach `version`.
    fn wait_for(&self, version: i64) -> Option<Arc<Index>> {
        let shared = &self.shared;
        let fresh = || self.current().filter(|i| i.version >= version);
        let finished = shared.finished.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock the rebuild thread takes after clearing the flag: a rebuild
        // seen running here notifies after this thread waits.
        if !shared.rebuilding.load(Ordering::Acquire) {
            return fresh();
        }
        let seen = *finished;
        let _unused = shared
            .rebuilt
            .wait_timeout_while(finished, REBUILD_WAIT, |n| *n == seen)
            .unwrap_or_else(|e| e.into_inner());
        fresh()
    }

    /// Whether the next list at the current version is answered from memory (tests, benches).
    pub fn is_fresh(&self) -> bool {
        match (self.current(), self.shared.store.last_updated()) {
            (Some(index), Ok(version)) => index.version == version,
            _ => false,
        }
    }
}

impl Shared {
    /// Reads the version, the whole list, and the version again: equal versions mean no write
    /// committed in between, so the list belongs to that version.
    fn rebuild(&self) {
        let build = || -> Result<Option<Index>, StoreError> {
            let before = self.store.last_updated()?;
            let policies = self.store.list(&PolicyFilter::All)?;
            let after = self.store.last_updated()?;
            Ok((before == after).then(|| Index::new(before, policies)))
        };
        match build() {
            Ok(Some(index)) => {
                let mut slot = self.index.write().unwrap_or_else(|e| e.into_inner());
                if slot.as_ref().is_none_or(|old| old.version < index.version) {
                    *slot = Some(Arc::new(index));
                }
            }
            Ok(None) => {}
            Err(e) => log::debug!("store cache: rebuild failed: {e}"),
        }
    }
}

impl Store for CachedStore {
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.shared.store.create(policies)
    }

    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError> {
        self.shared.store.delete(policies)
    }

    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
        let version = self.shared.store.last_updated()?;
        if let Some(index) = self.current() {
            if index.version == version {
                return Ok(index.select(filter));
            }
        }
        self.refresh();
        // A newer index than `version` is as good as SQL read now: both may hold later writes.
        match self.wait_for(version) {
            Some(index) => Ok(index.select(filter)),
            None => self.shared.store.list(filter),
        }
    }

    fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        self.shared.store.tags()
    }

    fn create_tag(&self, id: &str, kind: &str) -> Result<Tag, StoreError> {
        self.shared.store.create_tag(id, kind)
    }

    fn last_updated(&self) -> Result<i64, StoreError> {
        self.shared.store.last_updated()
    }

    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        self.shared.store.source_policy_counts(ids)
    }

    fn count(&self) -> Result<usize, StoreError> {
        self.shared.store.count()
    }

    fn check(&self) -> Result<(), StoreError> {
        self.shared.store.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A store whose full list is slow, counting the filtered lists it answers.
    struct SlowStore {
        version: std::sync::atomic::AtomicI64,
        policies: Vec<Policy>,
        filtered: std::sync::atomic::AtomicUsize,
    }

    impl Store for SlowStore {
        fn create(&self, _: &[Policy]) -> Result<(), StoreError> {
            unreachable!()
        }
        fn delete(&self, _: &[Policy]) -> Result<(), StoreError> {
            unreachable!()
        }
        fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
            if *filter == PolicyFilter::All {
                std::thread::sleep(Duration::from_millis(200));
                return Ok(self.policies.clone());
            }
            self.filtered.fetch_add(1, Ordering::SeqCst);
            Ok(Index::new(0, self.policies.clone()).select(filter))
        }
        fn tags(&self) -> Result<Vec<Tag>, StoreError> {
            unreachable!()
        }
        fn create_tag(&self, _: &str, _: &str) -> Result<Tag, StoreError> {
            unreachable!()
        }
        fn last_updated(&self) -> Result<i64, StoreError> {
            Ok(self.version.load(Ordering::SeqCst))
        }
        fn source_policy_counts(&self, _: &[String]) -> Result<HashMap<String, usize>, StoreError> {
            unreachable!()
        }
        fn count(&self) -> Result<usize, StoreError> {
            unreachable!()
        }
        fn check(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn lists_during_a_rebuild_wait_for_it_and_stale_ones_without_a_rebuild_go_to_the_store() {
        let slow = Arc::new(SlowStore {
            version: 1.into(),
            policies: vec![
                Policy::new("a", "b", "tcp", 1, 1),
                Policy::new("c", "d", "tcp", 2, 2),
            ],
            filtered: 0.into(),
        });
        let cached = CachedStore::new(slow.clone());
        let either = PolicyFilter::Either(ids(&["a"]));
        let first = cached.list(&either).unwrap();
        assert_eq!(first, vec![slow.policies[0].clone()]);
        assert_eq!(
            slow.filtered.load(Ordering::SeqCst),
            0,
            "answered by the rebuild"
        );
        assert!(cached.is_fresh());
        // The version moves while a rebuild may not start yet: the store answers, never the old
        // index.
        slow.version.store(2, Ordering::SeqCst);
        assert_eq!(cached.list(&either).unwrap(), first);
        assert_eq!(
            slow.filtered.load(Ordering::SeqCst),
            1,
            "answered by the store"
        );
    }

    #[test]
    fn index_selects_like_the_filters() {
        let all = vec![
            Policy::new("a", "b", "tcp", 1, 1),
            Policy::new("a", "c", "tcp", 2, 2),
            Policy::new("b", "c", "udp", 3, 4),
            Policy::new("c", "a", "tcp", 5, 5),
            Policy::new("d", "d", "tcp", 6, 6),
        ];
        let index = Index::new(7, all.clone());
        let pick = |idx: &[usize]| idx.iter().map(|i| all[*i].clone()).collect::<Vec<_>>();
        assert_eq!(index.select(&PolicyFilter::All), all);
        assert_eq!(
            index.select(&PolicyFilter::Either(ids(&["a", "a"]))),
            pick(&[0, 1, 3])
        );
        assert_eq!(index.select(&PolicyFilter::Either(ids(&["d"]))), pick(&[4]));
        assert_eq!(
            index.select(&PolicyFilter::Source(ids(&["b", "c"]))),
            pick(&[2, 3])
        );
        assert_eq!(
            index.select(&PolicyFilter::Destination(ids(&["c", "x"]))),
            pick(&[1, 2])
        );
        assert_eq!(
            index.select(&PolicyFilter::SourceAndDestination(
                ids(&["a", "b"]),
                ids(&["c"])
            )),
            pick(&[1, 2])
        );
        assert!(index.select(&PolicyFilter::Either(vec![])).is_empty());
    }
}
