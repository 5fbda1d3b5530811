//! The version watch behind `policies_last_updated?wait=&after=`: one cached copy of
//! `policies_info.last_updated` per server and a [`Signal`] that wakes the parked watch requests
//! when it moves.
//!
//! A change made through this server wakes its watchers at once (the store wrapper
//! [`NotifyingStore`] nudges the checker after every write). A change made through another server
//! on the same database is seen by a version check: one `SELECT` of `last_updated` every
//! [`CHECK_INTERVAL`], made only while at least one request is parked. That bounds the wake-up
//! delay across servers to one interval plus one query on every backend (PostgreSQL, MySQL and
//! SQLite alike), at a cost of ten primary-key reads a second per server with watchers and none
//! without; PostgreSQL `LISTEN/NOTIFY` would save those reads but has no MySQL counterpart and
//! needs a dedicated connection per server, so the check was chosen (figures in docs/fleet.md).

use super::store::{PolicyFilter, Store, StoreError};
use crate::api::policy::{Policy, Tag};
use crate::http::Signal;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often the database is asked for the version while requests are parked.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct VersionWatch {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
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

    /// Records a version read from the database; wakes the watchers when it moved.
    fn record(&self, version: i64) {
        let moved = {
            let mut st = self.lock();
            let moved = st.version.is_some_and(|v| v != version);
            st.version = Some(version);
            moved
        };
        if moved {
            self.signal.notify();
        }
    }

    fn check(&self) {
        match self.store.last_updated() {
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
        let inner = Arc::new(Inner {
            store,
            signal: Signal::new(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            interval,
        });
        let thread_inner = Arc::clone(&inner);
        let spawned = std::thread::Builder::new()
            .name("policy-version-watch".into())
            .spawn(move || thread_inner.run());
        if let Err(e) = spawned {
            log::error!("cannot start the policy version watch: {e}");
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

    /// Reads the version from the database now (a new watch request starts from the truth).
    pub fn refresh(&self) -> Result<i64, StoreError> {
        let v = self.inner.store.last_updated()?;
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

impl Store for NotifyingStore {
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError> {
        let r = self.store.create(policies);
        self.watch.nudge();
        r
    }
    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError> {
        let r = self.store.delete(policies);
        self.watch.nudge();
        r
    }
    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
        self.store.list(filter)
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
    fn source_policy_counts(&self, ids: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        self.store.source_policy_counts(ids)
    }
    fn count(&self) -> Result<usize, StoreError> {
        self.store.count()
    }
    fn check(&self) -> Result<(), StoreError> {
        self.store.check()
    }
}
