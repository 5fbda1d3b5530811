//! A read cache in front of any backend: the whole policy list, indexed by source and destination
//! id, valid for exactly one `policies_info.last_updated` value. Every create/delete moves
//! `last_updated` (strictly, in the same transaction), and nothing else changes a listed policy or
//! its tags, so "cached version == current version" means the cached list is the database's list —
//! also when other servers write to the same database.
//!
//! A list costs one primary-key read of `last_updated` plus an in-memory lookup. Every policy is
//! also kept rendered as JSON, so the internal API's answer ([`Store::list_rendered`]) is a
//! concatenation of stored bytes (about 200 bytes a policy: 12 MB for 60,000), not a clone and a
//! serialisation of each policy per request. When the version
//! moved, a background thread rebuilds the index (one at a time, at most once per
//! [`REBUILD_INTERVAL`]). Lists that arrive while a rebuild runs wait for it (up to
//! [`REBUILD_WAIT`]) and are answered from the new index when it covers their version; otherwise
//! SQL answers. (Answering every list of the rebuild window by SQL made right after a change —
//! when all agents fetch — the slowest requests: with 60,000 policies, a third of the reads of
//! that second took over 20 ms, and they were half of a run's reads over 20 ms.)

use super::{render_list, PolicyFilter, Store, StoreError};
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
    /// Every policy's JSON, back to back; `spans[i]` is where policy `i`'s is.
    rendered: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Index {
    fn new(version: i64, policies: Vec<Policy>) -> Result<Index, StoreError> {
        let mut rendered = Vec::with_capacity(policies.len() * 200);
        let mut spans = Vec::with_capacity(policies.len());
        for p in &policies {
            let start = rendered.len();
            crate::api::gojson::write(&mut rendered, p)
                .map_err(|e| StoreError::Database(format!("rendering policies: {e}")))?;
            spans.push((start, rendered.len()));
        }
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
        Ok(Index {
            version,
            policies,
            by_source,
            by_destination,
            rendered,
            spans,
        })
    }

    fn positions<'a>(map: &'a HashMap<String, Vec<u32>>, ids: &'a [String]) -> Vec<u32> {
        ids.iter()
            .filter_map(|id| map.get(id))
            .flatten()
            .copied()
            .collect()
    }

    fn select(&self, filter: &PolicyFilter) -> Vec<Policy> {
        self.positions_of(filter)
            .into_iter()
            .map(|i| self.policies[i as usize].clone())
            .collect()
    }

    /// The policies of `filter` as the internal API's answer: the bytes `serde_json` makes of a
    /// `PoliciesResponse` of [`Index::select`], from the rendered policies.
    fn render(&self, filter: &PolicyFilter) -> Vec<u8> {
        let at = self.positions_of(filter);
        let span = |i: &u32| self.spans[*i as usize];
        let size: usize = at.iter().map(|i| span(i).1 - span(i).0 + 1).sum();
        let mut out = Vec::with_capacity(size + 48);
        out.extend_from_slice(b"{\"total_policies\":");
        out.extend_from_slice(at.len().to_string().as_bytes());
        out.extend_from_slice(b",\"policies\":[");
        for (n, i) in at.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let (start, end) = span(i);
            out.extend_from_slice(&self.rendered[start..end]);
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// Positions of the policies of `filter`, in creation order, each once.
    fn positions_of(&self, filter: &PolicyFilter) -> Vec<u32> {
        let mut at = match filter {
            PolicyFilter::All => return (0..self.policies.len() as u32).collect(),
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
        at
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

    /// From an index of the current version (or one a running rebuild makes), else from SQL.
    fn answer<T>(
        &self,
        from_index: impl FnOnce(&Index) -> T,
        from_store: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let version = self.shared.store.last_updated()?;
        if let Some(index) = self.current() {
            if index.version == version {
                return Ok(from_index(&index));
            }
        }
        self.refresh();
        // A newer index than `version` is as good as SQL read now: both may hold later writes.
        match self.wait_for(version) {
            Some(index) => Ok(from_index(&index)),
            None => from_store(),
        }
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
            (before == after)
                .then(|| Index::new(before, policies))
                .transpose()
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
        self.answer(
            |index| index.select(filter),
            || self.shared.store.list(filter),
        )
    }

    fn list_rendered(&self, filter: &PolicyFilter) -> Result<Vec<u8>, StoreError> {
        self.answer(
            |index| index.render(filter),
            || render_list(self.shared.store.list(filter)?),
        )
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

    fn changes_since(&self, after: i64) -> Result<Vec<super::LoggedChange>, StoreError> {
        self.shared.store.changes_since(after)
    }

    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        self.shared.store.source_policy_counts(ids)
    }

    fn count(&self) -> Result<usize, StoreError> {
        self.shared.store.count()
    }

    fn quarantined_tags(&self) -> Result<usize, StoreError> {
        self.shared.store.quarantined_tags()
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
            Ok(Index::new(0, self.policies.clone())?.select(filter))
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
        fn quarantined_tags(&self) -> Result<usize, StoreError> {
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
        let index = Index::new(7, all.clone()).unwrap();
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

    #[test]
    fn rendered_answers_are_the_bytes_of_the_serialised_selection() {
        let mut tagged = Policy::new("a", "b", "tcp", 1, 1);
        tagged.source.tag = Some("0001".into());
        tagged.destination.tag = Some("0002".into());
        let all = vec![
            tagged,
            Policy::new("a", "c\"\u{e9}\\", "udp", 2, 65535),
            Policy::new("b", "c", "icmp", 0, 0),
            Policy::new("c", "a", "tcp", 5, 5),
        ];
        let index = Index::new(1, all).unwrap();
        for filter in [
            PolicyFilter::All,
            PolicyFilter::Either(ids(&["a", "a"])),
            PolicyFilter::Either(ids(&["c\"\u{e9}\\"])),
            PolicyFilter::Either(vec![]),
            PolicyFilter::Source(ids(&["b", "c"])),
            PolicyFilter::Destination(ids(&["x"])),
            PolicyFilter::SourceAndDestination(ids(&["a"]), ids(&["b"])),
        ] {
            let expected = render_list(index.select(&filter)).unwrap();
            assert_eq!(
                String::from_utf8(index.render(&filter)).unwrap(),
                String::from_utf8(expected).unwrap(),
                "{filter:?}"
            );
        }
    }
}
