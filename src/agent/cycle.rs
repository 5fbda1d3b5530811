//! The agent's loop: decide when to fetch, plan, apply, record. One cycle runs at a time (the
//! poller and the force-poll endpoint share a mutex).

use super::client::{PolicySource, Watched};
use super::containers::policy_containers;
use super::metrics::{self as m, AgentMetrics};
use super::nft::{C2cLogging, Dataplane, Set};
use super::plan::{plan, Diff, Plan, Skipped};
use super::watch_loop::{self, jitter, LoopSettings, Remote, Watchable};
use super::Error;
use crate::api::policy::Policy;
use crate::cell::{Container, Reader};
use std::collections::BTreeSet;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Settings {
    pub poll_interval: Duration,
    pub full_sync_interval: Duration,
    pub backoff_max: Duration,
    /// How long one watch of the policy version waits; `None` polls only.
    pub watch: Option<Duration>,
    /// After this long without a confirmed sync the cell reports itself stale (`/health` fails,
    /// `vpa_policies_stale` is 1). It keeps enforcing the last rules: see docs/agent.md.
    pub stale_after: Duration,
}

/// What a cycle did to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The plan was already installed (or no cycle was due).
    Nothing,
    /// The table was rebuilt from scratch holding this many elements.
    Full(usize),
    /// This many elements were added or removed.
    Incremental(usize),
}

struct State {
    store: Reader,
    /// The last successfully read containers.
    containers: Vec<Container>,
    /// The error of the last store read, until a read succeeds.
    store_error: Option<Error>,
    /// The last fetched policies (planned again while a fetch fails) and the apps they were
    /// fetched for (a watch names them, so that it wakes only for changes that touch them).
    policies: Vec<Policy>,
    policies_for: Vec<String>,
    /// What this process installed; `None` until its first apply (the kernel may still hold a
    /// previous run's table, which stays until it is replaced as a whole).
    installed: Option<Plan>,
    last_updated: Option<i64>,
    last_full_sync: Option<Instant>,
    /// When the server last confirmed that the enforced policies are its current ones (a fetch
    /// that was applied, or a version equal to the applied one); the start until then.
    last_sync: Instant,
    logging: C2cLogging,
    skipped: Vec<Skipped>,
}

/// Told the containers and policies of every applied cycle (the flow log names apps with them).
pub type Observer = Box<dyn Fn(&[Container], &[Policy], &Plan) + Send + Sync>;

pub struct Agent {
    observers: Mutex<Vec<Observer>>,
    source: Box<dyn PolicySource>,
    dataplane: Box<dyn Dataplane>,
    metrics: AgentMetrics,
    settings: Settings,
    state: Mutex<State>,
}

impl Agent {
    pub fn new(
        source: Box<dyn PolicySource>,
        dataplane: Box<dyn Dataplane>,
        store: Reader,
        logging: C2cLogging,
        settings: Settings,
        metrics: AgentMetrics,
    ) -> Agent {
        Agent {
            observers: Mutex::new(Vec::new()),
            source,
            dataplane,
            metrics,
            settings,
            state: Mutex::new(State {
                store,
                containers: Vec::new(),
                store_error: None,
                policies: Vec::new(),
                policies_for: Vec::new(),
                installed: None,
                last_updated: None,
                last_full_sync: None,
                last_sync: Instant::now(),
                logging,
                skipped: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// One poll: a cheap `policies_last_updated`, and a full cycle only when it changed, the
    /// container store changed, a full sync is due, or nothing was installed yet.
    pub fn poll(&self) -> Result<Applied, Error> {
        self.poll_with(Remote::Ask)
    }

    fn poll_with(&self, remote: Remote) -> Result<Applied, Error> {
        // A watch that reported nothing confirms nothing by itself (it reports its own answers).
        let asks_server = !matches!(remote, Remote::Unchanged);
        let mut st = self.lock();
        let store_changed = st.store.changed();
        let full_due = st
            .last_full_sync
            .is_none_or(|t| t.elapsed() >= self.settings.full_sync_interval);
        let remote = match (remote, st.last_updated) {
            (Remote::Known(v), _) | (Remote::Unchanged, Some(v)) => Ok(v),
            (Remote::Ask, _) | (Remote::Unchanged, None) => self
                .metrics
                .poll
                .time("last_updated", || self.source.last_updated()),
        };
        match remote {
            Ok(remote) => {
                if st.installed.is_none()
                    || store_changed
                    || full_due
                    || st.last_updated != Some(remote)
                {
                    self.cycle(&mut st, Some(remote), false, full_due)
                } else {
                    if asks_server {
                        self.synced(&mut st);
                    }
                    Ok(Applied::Nothing)
                }
            }
            Err(e) => {
                self.metrics.error(m::POLICY_SERVER);
                if store_changed && st.installed.is_some() {
                    // Containers came or went: apply them with the policies we have.
                    if let Err(e2) = self.cycle(&mut st, None, false, false) {
                        log::warn!("cycle without the policy server: {e2}");
                    }
                }
                Err(e)
            }
        }
    }

    /// Waits (up to `wait`) for the server's version to move from the one last applied.
    /// `Ok(None)` when nothing was applied yet.
    fn watch_once(&self, wait: Duration) -> Result<Option<Watched>, Error> {
        let (after, apps) = {
            let st = self.lock();
            let Some(after) = st.last_updated else {
                return Ok(None);
            };
            (after, st.policies_for.clone())
        };
        let watched = self
            .metrics
            .poll
            .time("watch", || self.source.watch(after, wait, &apps))?;
        match watched {
            Watched::Unaffected(v) => {
                // The policies of these apps did not change: take the version without a fetch.
                let mut st = self.lock();
                if st.last_updated == Some(after) && st.policies_for == apps {
                    st.last_updated = Some(v);
                    self.synced(&mut st);
                }
            }
            Watched::Version(v) if v == after => {
                let mut st = self.lock();
                if st.last_updated == Some(after) {
                    self.synced(&mut st);
                }
            }
            _ => {}
        }
        Ok(Some(watched))
    }

    /// A full cycle now, re-reading the store (the networker calls this on container create).
    pub fn force(&self) -> Result<Applied, Error> {
        let mut st = self.lock();
        let remote = self
            .metrics
            .poll
            .time("last_updated", || self.source.last_updated())
            .ok();
        let applied = self.cycle(&mut st, remote, true, false)?;
        match &st.store_error {
            Some(e) => Err(e.clone()),
            None => Ok(applied),
        }
    }

    /// `rebuild` (the periodic full sync): rewrite the whole table from the plan even when the
    /// plan is unchanged, so whatever changed the kernel's table behind the agent's back (an
    /// operator's `nft`, a flushed ruleset) lasts at most one full-sync interval.
    fn cycle(
        &self,
        st: &mut State,
        remote: Option<i64>,
        force_store: bool,
        rebuild: bool,
    ) -> Result<Applied, Error> {
        let started = Instant::now();
        let result = self.metrics.poll.time("cycle", || {
            self.cycle_inner(st, remote, force_store, rebuild)
        });
        log::debug!(
            "cycle in {:.1} ms: {result:?}",
            started.elapsed().as_secs_f64() * 1000.0
        );
        result
    }

    fn cycle_inner(
        &self,
        st: &mut State,
        remote: Option<i64>,
        force_store: bool,
        rebuild: bool,
    ) -> Result<Applied, Error> {
        match st.store.read_if_changed(force_store) {
            Ok(Some(all)) => {
                st.containers = policy_containers(&all, st.store.path());
                st.store_error = None;
            }
            Ok(None) => {}
            Err(e) => {
                self.metrics.error(m::STORE);
                log::error!("container store: {e}; keeping the last good list of containers");
                st.store_error = Some(e.into());
            }
        }
        let apps: Vec<String> = st
            .containers
            .iter()
            .filter_map(|c| c.app().map(str::to_string))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();

        let mut fetch_error = None;
        let policies = if remote.is_none() {
            fetch_error = Some(Error::PolicyServerUnreachable);
            None
        } else if apps.is_empty() {
            Some(Vec::new())
        } else {
            match self
                .metrics
                .poll
                .time("policies", || self.source.policies(&apps))
            {
                Ok(p) => Some(p),
                Err(e) => {
                    self.metrics.error(m::POLICY_SERVER);
                    fetch_error = Some(e);
                    None
                }
            }
        };
        let policies = match policies {
            Some(p) => p,
            // Never replace a table we did not install with one planned from nothing.
            None if st.installed.is_none() => {
                return Err(fetch_error.unwrap_or(Error::PolicyServerUnreachable))
            }
            None => st.policies.clone(),
        };

        let (plan, skipped) = plan(&st.containers, &policies);
        if skipped != st.skipped {
            for s in &skipped {
                log::warn!("left out: {}", s.0);
            }
            st.skipped = skipped;
        }
        // A rewrite repairs drift only from fresh policies; while fetching fails the full sync
        // stays due, and rewriting on every retry would redo the whole table for nothing.
        let applied = self.apply(st, &plan, rebuild && fetch_error.is_none())?;
        self.notify(&st.containers, &policies, &plan);
        st.installed = Some(plan);
        if fetch_error.is_none() {
            st.policies = policies;
            st.policies_for = apps;
            st.last_updated = remote;
            st.last_full_sync = Some(Instant::now());
            self.synced(st);
            if st.store_error.is_none() {
                self.metrics.success_now();
            }
        }
        match fetch_error {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }

    fn apply(&self, st: &State, plan: &Plan, rebuild: bool) -> Result<Applied, Error> {
        let applied = match &st.installed {
            Some(_) if rebuild => self.replace(st, plan)?,
            Some(old) => {
                let diff = Diff::between(old, plan);
                if diff.is_empty() {
                    return Ok(Applied::Nothing);
                }
                match self
                    .metrics
                    .enforce
                    .time("incremental", || self.dataplane.update(&diff))
                {
                    Ok(()) => Applied::Incremental(diff.len()),
                    Err(e) => {
                        // The kernel's table is not what we think (changed behind our back):
                        // rebuild it as a whole, still in one transaction.
                        self.metrics.error(m::DATAPLANE);
                        log::error!("incremental update failed, rebuilding the table: {e}");
                        self.replace(st, plan)?
                    }
                }
            }
            None => self.replace(st, plan)?,
        };
        self.metrics
            .set_elements(Set::SourceTags.name(), plan.source_tags.len());
        self.metrics
            .set_elements(Set::Allowed.name(), plan.allowed.len());
        self.metrics
            .set_elements(Set::AllowedRanges.name(), plan.ranges.len());
        log::debug!("applied {applied:?}");
        Ok(applied)
    }

    fn replace(&self, st: &State, plan: &Plan) -> Result<Applied, Error> {
        self.metrics
            .enforce
            .time("full", || self.dataplane.replace(plan, &st.logging))
            .inspect_err(|_| self.metrics.error(m::DATAPLANE))?;
        Ok(Applied::Full(plan.element_count()))
    }

    /// Calls `observer` after every applied cycle.
    pub fn observe(&self, observer: Observer) {
        self.observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    fn notify(&self, containers: &[Container], policies: &[Policy], plan: &Plan) {
        for o in self
            .observers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            o(containers, policies, plan);
        }
    }

    pub fn logging(&self) -> C2cLogging {
        self.lock().logging
    }

    /// Turns c2c logging on or off at once (only the chain is rewritten).
    pub fn set_logging(&self, enabled: bool) -> Result<(), Error> {
        let mut st = self.lock();
        let new = C2cLogging {
            enabled,
            ..st.logging
        };
        if st.installed.is_some() && new != st.logging {
            self.metrics
                .enforce
                .time("logging", || self.dataplane.set_logging(&new))?;
        }
        st.logging = new;
        Ok(())
    }

    fn synced(&self, st: &mut State) {
        st.last_sync = Instant::now();
        self.refresh_staleness_of(st);
    }

    /// How long since the server last confirmed the enforced policies, and whether that is
    /// longer than `stale_after`.
    fn staleness(&self, st: &State) -> (Duration, bool) {
        let since = st.last_sync.elapsed();
        (since, since > self.settings.stale_after)
    }

    fn refresh_staleness_of(&self, st: &State) {
        let (since, stale) = self.staleness(st);
        self.metrics.since_sync.set(since.as_secs_f64());
        self.metrics.stale.set(stale as i64);
    }

    /// Sets `vpa_seconds_since_last_sync` and `vpa_policies_stale` (before every scrape).
    pub fn refresh_staleness(&self) {
        self.refresh_staleness_of(&self.lock());
    }

    /// Health: the last store read failed, nothing is installed yet, or the policies have not
    /// been confirmed for longer than `stale_after` (as the debug server's `/health` text).
    pub fn health(&self) -> Result<(), String> {
        let st = self.lock();
        if let Some(e) = &st.store_error {
            return Err(e.to_string());
        }
        if st.installed.is_none() {
            return Err(Error::NotEnforced.to_string());
        }
        let (since, stale) = self.staleness(&st);
        if stale {
            return Err(format!(
                "stale: no sync with the policy server for {} s (policy_stale_after_seconds={}); \
                 the last rules stay enforced, but tags released meanwhile may now belong to \
                 other apps",
                since.as_secs(),
                self.settings.stale_after.as_secs()
            ));
        }
        Ok(())
    }
}

impl Watchable for Agent {
    const WHAT: &'static str = "policy";

    fn poll_with(&self, remote: Remote) -> Result<(), Error> {
        Agent::poll_with(self, remote).map(|_| ())
    }

    fn watch_once(&self, wait: Duration) -> Result<Option<Watched>, Error> {
        Agent::watch_once(self, wait)
    }

    fn known_version(&self) -> Option<i64> {
        self.lock().last_updated
    }
}

/// Polls until `stop` receives or is dropped ([`watch_loop::run`]). The first poll comes after
/// a random part of one interval (so cells restarting together spread out), then every interval
/// while polling; with a watch (the default) the interval only looks at the local container
/// store and the due full sync.
pub fn run_poller(agent: Arc<Agent>, stop: Receiver<()>) {
    let settings = LoopSettings {
        interval: agent.settings.poll_interval,
        backoff_max: agent.settings.backoff_max,
        watch: agent.settings.watch,
        first: jitter(agent.settings.poll_interval),
    };
    watch_loop::run(agent, settings, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::nft::{self, C2cLogging};
    use prometheus_client::registry::Registry;
    use std::sync::atomic::Ordering;

    struct Script {
        last_updated: Mutex<Result<i64, Error>>,
        policies: Mutex<Result<Vec<Policy>, Error>>,
        fetches: Mutex<Vec<Vec<String>>>,
        checks: std::sync::atomic::AtomicUsize,
        /// Watch answers, each waited for; `None`: the server has no watch.
        watches: Mutex<Option<Receiver<Watched>>>,
    }

    impl PolicySource for Arc<Script> {
        fn last_updated(&self) -> Result<i64, Error> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            self.last_updated.lock().unwrap().clone()
        }
        fn watch(&self, _after: i64, wait: Duration, _ids: &[String]) -> Result<Watched, Error> {
            match &*self.watches.lock().unwrap() {
                None => Ok(Watched::Unsupported),
                Some(rx) => rx.recv_timeout(wait).map_err(|e| Error::Request {
                    url: "script".into(),
                    message: e.to_string(),
                }),
            }
        }
        fn policies(&self, ids: &[String]) -> Result<Vec<Policy>, Error> {
            self.fetches.lock().unwrap().push(ids.to_vec());
            self.policies.lock().unwrap().clone()
        }
    }

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        fail: Mutex<bool>,
    }

    impl Dataplane for Arc<Recorder> {
        fn replace(&self, plan: &Plan, log: &C2cLogging) -> Result<(), nft::Error> {
            if *self.fail.lock().unwrap() {
                return Err(boom());
            }
            self.calls.lock().unwrap().push(format!(
                "replace {} log={}",
                plan.element_count(),
                log.enabled
            ));
            Ok(())
        }
        fn update(&self, diff: &Diff) -> Result<(), nft::Error> {
            if *self.fail.lock().unwrap() {
                return Err(boom());
            }
            self.calls
                .lock()
                .unwrap()
                .push(format!("update {}", diff.len()));
            Ok(())
        }
        fn set_logging(&self, log: &C2cLogging) -> Result<(), nft::Error> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("logging {}", log.enabled));
            Ok(())
        }
    }

    fn boom() -> nft::Error {
        nft::Error::Rejected {
            status: None,
            message: "boom".into(),
        }
    }

    /// A failed request to the policy server.
    fn down(message: &str) -> Error {
        Error::Request {
            url: "https://policy-server".into(),
            message: message.into(),
        }
    }

    fn policy(src: &str, dst: &str, port: i64) -> Policy {
        let mut p = Policy::new(src, dst, "tcp", port, port);
        p.source.tag = Some("0001".into());
        p
    }

    struct Fixture {
        dir: tempfile::TempDir,
        script: Arc<Script>,
        rec: Arc<Recorder>,
        agent: Agent,
        version: u32,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let script = Arc::new(Script {
                last_updated: Mutex::new(Ok(1)),
                policies: Mutex::new(Ok(vec![policy("A", "B", 80)])),
                fetches: Mutex::default(),
                checks: Default::default(),
                watches: Mutex::new(None),
            });
            let rec = Arc::new(Recorder::default());
            let mut registry = Registry::default();
            let agent = Agent::new(
                Box::new(script.clone()),
                Box::new(rec.clone()),
                Reader::new(dir.path().join("store.json")),
                C2cLogging {
                    enabled: false,
                    group: 2,
                    udp_per_sec: 100,
                },
                Settings {
                    poll_interval: Duration::from_millis(10),
                    full_sync_interval: Duration::from_secs(3600),
                    watch: None,
                    backoff_max: Duration::from_secs(1),
                    stale_after: Duration::from_secs(3600),
                },
                AgentMetrics::register(&mut registry),
            );
            let mut f = Fixture {
                dir,
                script,
                rec,
                agent,
                version: 0,
            };
            f.containers(&[("a1", "10.255.1.2", "A"), ("b1", "10.255.1.3", "B")]);
            f
        }

        fn containers(&mut self, list: &[(&str, &str, &str)]) {
            let map: serde_json::Map<String, serde_json::Value> = list
                .iter()
                .map(|(h, ip, app)| {
                    (
                        h.to_string(),
                        serde_json::json!({"handle": h, "ip": ip, "metadata": {"policy_group_id": app}}),
                    )
                })
                .collect();
            std::fs::write(
                self.dir.path().join("store.json"),
                serde_json::to_string(&map).unwrap(),
            )
            .unwrap();
            self.version += 1;
            std::fs::write(
                self.dir.path().join("store.json_version"),
                self.version.to_string(),
            )
            .unwrap();
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.rec.calls.lock().unwrap())
        }
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs the poll loop on `agent` in a thread: (stop sender, the thread).
    fn start_loop(agent: Agent) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (stop, stopped) = std::sync::mpsc::channel();
        let agent = Arc::new(agent);
        (stop, std::thread::spawn(move || run_poller(agent, stopped)))
    }

    #[test]
    fn the_loop_follows_the_watch_without_polling_the_server() {
        let mut f = Fixture::new();
        let (tell, watches) = std::sync::mpsc::channel();
        *f.script.watches.lock().unwrap() = Some(watches);
        f.agent.settings.watch = Some(Duration::from_secs(5));
        let (stop, poller) = start_loop(f.agent);
        let fetches = || f.script.fetches.lock().unwrap().len();
        wait_for("first sync", || fetches() == 1);
        // Many intervals pass while the watch holds: no request to the server.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(f.script.checks.load(Ordering::SeqCst), 1);
        assert_eq!(fetches(), 1);
        // The watch reports a change: fetched and applied at once.
        *f.script.policies.lock().unwrap() = Ok(vec![policy("A", "B", 80), policy("B", "A", 81)]);
        tell.send(Watched::Version(2)).unwrap();
        wait_for("fetch after the watch", || fetches() == 2);
        wait_for("applied", || {
            f.rec
                .calls
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.starts_with("update"))
        });
        assert_eq!(f.script.checks.load(Ordering::SeqCst), 1);
        stop.send(()).unwrap();
        poller.join().unwrap();
    }

    #[test]
    fn against_a_server_without_the_watch_the_loop_polls() {
        let mut f = Fixture::new();
        f.agent.settings.watch = Some(Duration::from_secs(5));
        let (stop, poller) = start_loop(f.agent);
        wait_for("polls every interval", || {
            f.script.checks.load(Ordering::SeqCst) >= 5
        });
        *f.script.last_updated.lock().unwrap() = Ok(2);
        *f.script.policies.lock().unwrap() = Ok(vec![policy("A", "B", 80), policy("B", "A", 81)]);
        wait_for("fetch after a polled change", || {
            f.script.fetches.lock().unwrap().len() == 2
        });
        stop.send(()).unwrap();
        poller.join().unwrap();
    }

    /// Issue 18, item 1: a cell that cannot sync for longer than `stale_after` says so in health
    /// and metrics, keeps enforcing its last rules, and recovers with the server.
    #[test]
    fn a_cell_that_cannot_sync_reports_stale_and_keeps_its_rules() {
        let mut f = Fixture::new();
        f.agent.settings.stale_after = Duration::from_millis(300);
        assert_eq!(f.agent.poll().unwrap(), Applied::Full(2));
        f.calls();
        assert_eq!(f.agent.health(), Ok(()));
        *f.script.last_updated.lock().unwrap() = Err(down("connection refused"));
        assert!(f.agent.poll().is_err());
        assert_eq!(f.agent.health(), Ok(()), "not stale yet");
        std::thread::sleep(Duration::from_millis(400));
        assert!(f.agent.poll().is_err());
        let health = f.agent.health().unwrap_err();
        assert!(
            health.contains("stale") && health.contains("policy_stale_after_seconds"),
            "{health}"
        );
        f.agent.refresh_staleness();
        assert_eq!(f.agent.metrics.stale.get(), 1);
        assert!(f.agent.metrics.since_sync.get() >= 0.4);
        assert!(f.calls().is_empty(), "the last rules stay as they are");
        // An answer that only repeats the applied version is a sync too.
        *f.script.last_updated.lock().unwrap() = Ok(1);
        assert_eq!(f.agent.poll().unwrap(), Applied::Nothing);
        assert_eq!(f.agent.health(), Ok(()));
        f.agent.refresh_staleness();
        assert_eq!(f.agent.metrics.stale.get(), 0);
        assert!(f.agent.metrics.since_sync.get() < 0.3);
    }

    /// While a watch runs, the loop's own ticks ask no one: they must not count as syncs.
    #[test]
    fn ticks_without_an_answer_are_not_syncs() {
        let mut f = Fixture::new();
        f.agent.settings.stale_after = Duration::from_millis(200);
        assert_eq!(f.agent.poll().unwrap(), Applied::Full(2));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            f.agent.poll_with(Remote::Unchanged).unwrap(),
            Applied::Nothing
        );
        assert!(f.agent.health().unwrap_err().contains("stale"));
    }

    #[test]
    fn first_poll_replaces_then_only_changes_are_applied() {
        let f = Fixture::new();
        assert_eq!(f.agent.poll().unwrap(), Applied::Full(2));
        assert_eq!(f.calls(), ["replace 2 log=false"]);
        assert_eq!(f.script.fetches.lock().unwrap()[0], ["A", "B"]);
        // Nothing changed: no fetch, no apply.
        assert_eq!(f.agent.poll().unwrap(), Applied::Nothing);
        assert_eq!(f.script.fetches.lock().unwrap().len(), 1);
        // Server says changed, same plan: fetched, nothing applied.
        *f.script.last_updated.lock().unwrap() = Ok(2);
        assert_eq!(f.agent.poll().unwrap(), Applied::Nothing);
        assert_eq!(f.script.fetches.lock().unwrap().len(), 2);
        *f.script.last_updated.lock().unwrap() = Ok(3);
        *f.script.policies.lock().unwrap() = Ok(vec![policy("A", "B", 80), policy("A", "B", 81)]);
        assert_eq!(f.agent.poll().unwrap(), Applied::Incremental(1));
        assert_eq!(f.calls(), ["update 1"]);
    }

    #[test]
    fn a_due_full_sync_rewrites_the_whole_table_even_when_nothing_changed() {
        let mut f = Fixture::new();
        assert_eq!(f.agent.poll().unwrap(), Applied::Full(2));
        assert_eq!(f.agent.poll().unwrap(), Applied::Nothing);
        f.agent.settings.full_sync_interval = Duration::ZERO;
        assert_eq!(f.agent.poll().unwrap(), Applied::Full(2));
        assert_eq!(f.calls(), ["replace 2 log=false", "replace 2 log=false"]);
        // The policy server unreachable: the table is left as it is until the server answers.
        *f.script.last_updated.lock().unwrap() = Err(down("connection refused"));
        assert!(f.agent.poll().is_err());
        assert!(f.calls().is_empty(), "no rewrite without the policy server");
        // It answers the cheap check but not the policies: still no rewrite, on any retry.
        *f.script.last_updated.lock().unwrap() = Ok(1);
        *f.script.policies.lock().unwrap() = Err(down("500"));
        assert!(f.agent.poll().is_err());
        assert!(f.agent.poll().is_err());
        assert!(f.calls().is_empty(), "no rewrite from stale policies");
        // Once the policies come again, the due full sync rewrites the table.
        *f.script.policies.lock().unwrap() = Ok(vec![policy("A", "B", 80)]);
        assert_eq!(f.agent.poll().unwrap(), Applied::Full(2));
    }

    #[test]
    fn store_changes_trigger_a_cycle_even_without_policy_changes() {
        let mut f = Fixture::new();
        f.agent.poll().unwrap();
        f.containers(&[
            ("a1", "10.255.1.2", "A"),
            ("b1", "10.255.1.3", "B"),
            ("b2", "10.255.1.4", "B"),
        ]);
        assert_eq!(f.agent.poll().unwrap(), Applied::Incremental(1));
        // An unparsable store keeps the last containers and rules, and is reported.
        std::fs::write(f.dir.path().join("store.json"), "{garbage").unwrap();
        std::fs::write(f.dir.path().join("store.json_version"), "99").unwrap();
        assert_eq!(f.agent.poll().unwrap(), Applied::Nothing);
        assert!(f
            .agent
            .health()
            .unwrap_err()
            .contains("corrupt container store"));
        assert!(f
            .agent
            .force()
            .unwrap_err()
            .to_string()
            .contains("corrupt container store"));
        assert_eq!(f.calls(), ["replace 2 log=false", "update 1"]);
    }

    #[test]
    fn server_failures_keep_the_rules_and_never_wipe_a_previous_table() {
        let f = Fixture::new();
        *f.script.last_updated.lock().unwrap() = Err(down("connection refused"));
        assert!(f.agent.poll().is_err());
        assert!(f.agent.force().is_err());
        assert!(f.calls().is_empty(), "nothing applied from nothing");
        *f.script.last_updated.lock().unwrap() = Ok(5);
        *f.script.policies.lock().unwrap() = Err(down("status 500"));
        assert!(f.agent.poll().is_err());
        assert!(f.calls().is_empty());
        *f.script.policies.lock().unwrap() = Ok(vec![policy("A", "B", 80)]);
        assert_eq!(f.agent.poll().unwrap(), Applied::Full(2));
        *f.script.last_updated.lock().unwrap() = Err(down("timeout"));
        assert!(f.agent.poll().is_err());
        assert_eq!(f.calls(), ["replace 2 log=false"]);
    }

    #[test]
    fn a_failed_incremental_update_falls_back_to_a_rebuild_and_logging_toggles_the_chain() {
        let f = Fixture::new();
        f.agent.poll().unwrap();
        f.agent.set_logging(true).unwrap();
        assert!(f.agent.logging().enabled);
        f.agent.set_logging(true).unwrap();
        *f.rec.fail.lock().unwrap() = true;
        *f.script.last_updated.lock().unwrap() = Ok(9);
        *f.script.policies.lock().unwrap() = Ok(vec![]);
        assert!(f.agent.poll().is_err());
        *f.rec.fail.lock().unwrap() = false;
        // Still the old plan installed: the next poll tries again.
        assert_eq!(f.agent.poll().unwrap(), Applied::Incremental(2));
        assert_eq!(
            f.calls(),
            ["replace 2 log=false", "logging true", "update 2"]
        );
    }
}
