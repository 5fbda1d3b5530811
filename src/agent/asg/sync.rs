//! The ASG loop: fetch the security groups only after a change (the version check; every
//! `asg_poll_interval_seconds` against a server without one), re-read the container store only
//! when its version moved, compile, and apply the difference to `ip netman_asg` in one
//! transaction. The force endpoints (`/force-asgs-for-container`, `/force-orphaned-asgs-cleanup`)
//! run the same cycle synchronously, for the container's `up` and `down`: they re-read the store,
//! but ask the server for its version only when the loop's watch is not holding (while it holds,
//! the groups in force are the server's: a change would have ended it), and they leave the
//! periodic sync to the loop. That sync (every `asg_poll_interval_seconds`) refetches, applies
//! the difference and checks the kernel's table ([`drift`]); the table is rewritten whole only at
//! start, after a failed transaction, or when the check finds it changed from outside, and every
//! rewrite carries the table's counters over. One cycle at a time.

use super::bulk::{self, TableState};
use super::client::AsgSource;
use super::compile::{compile_with, Cache, Compiled, LoggedRule, Settings, SPACE_KEY};
use super::counters;
use super::drift;
use super::objects::{
    declarations_changed, render_delete, render_diff, render_full_carrying, Carried, TABLE,
};
use crate::agent::client::Watched;
use crate::agent::nft::Runner;
use crate::agent::watch_loop::{Remote, Watchable};
use crate::agent::Error;
use crate::api::security_groups::SecurityGroup;
use crate::cell::{Container, Reader};
use crate::metrics::{OpMetrics, Registrar};
use crate::steps::Steps;
use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct AsgMetrics {
    /// op = full | incremental | check
    pub enforce: OpMetrics,
    /// op = version | groups | cycle
    pub poll: OpMetrics,
    pub elements: Gauge,
    pub groups: Gauge,
    pub errors: Counter,
    pub drift_repairs: Counter,
}

impl AsgMetrics {
    pub fn register(registry: &mut Registry) -> AsgMetrics {
        let mut r = Registrar::new(registry, "vpa_asg");
        AsgMetrics {
            enforce: r.ops(
                "enforce_duration_seconds",
                "Time to apply the ASG table, by op (full, incremental), and to check it (check)",
            ),
            poll: r.ops(
                "poll_duration_seconds",
                "Time of security group requests and whole ASG cycles, by op (version, groups, cycle)",
            ),
            elements: r.metric("nft_elements", "Elements in the ASG table's sets and maps"),
            groups: r.metric("security_groups", "Security groups last fetched"),
            errors: r.metric("errors", "Failed ASG cycles (policy server, store or dataplane)"),
            drift_repairs: r.metric(
                "drift_repairs",
                "Times the periodic check found the ASG table changed from outside and rewrote it",
            ),
        }
    }
}

/// What a cycle did to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Nothing,
    Full(usize),
    Incremental,
}

pub struct Timing {
    /// Re-fetch the groups and check the table in the kernel at least this often (the only
    /// trigger against a server without a version; drift repair).
    pub full_sync: Duration,
}

struct State {
    store: Reader,
    containers: Vec<Container>,
    groups: Option<Vec<SecurityGroup>>,
    /// The spaces the groups were fetched for.
    fetched_for: BTreeSet<String>,
    version: Option<i64>,
    last_full: Option<Instant>,
    installed: Option<Compiled>,
    skipped: Vec<String>,
    cache: Cache,
}

/// What the flow log reads of the table in force, published after each cycle that compiled,
/// once the flow log asked (its reader never waits for a cycle, which holds the state across its
/// requests): the log prefixes, and the groups and containers compiled (`ASG_OK` alone names no
/// rule: the reader finds it).
#[derive(Debug, Default)]
pub struct Enforced {
    pub logged: BTreeMap<String, LoggedRule>,
    pub groups: Vec<SecurityGroup>,
    pub containers: HashMap<Ipv4Addr, Container>,
}

pub struct AsgAgent {
    source: Box<dyn AsgSource>,
    runner: Box<dyn Runner>,
    settings: Settings,
    timing: Timing,
    metrics: AsgMetrics,
    state: Mutex<State>,
    /// Published only once the flow log asks ([`AsgAgent::publish_enforced`]): the copy costs a
    /// cycle time on a large fleet.
    publish: AtomicBool,
    enforced: ArcSwap<Enforced>,
    /// Set by the loop while its watch holds ([`Watchable::watch_flag`]).
    watch_holds: Arc<AtomicBool>,
}

/// Why a cycle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The loop, with where the server's version comes from.
    Tick(Remote),
    /// A force endpoint: the store re-read, the version asked.
    Force,
}

impl AsgAgent {
    pub fn new(
        source: Box<dyn AsgSource>,
        runner: Box<dyn Runner>,
        store: Reader,
        settings: Settings,
        timing: Timing,
        metrics: AsgMetrics,
    ) -> AsgAgent {
        AsgAgent {
            source,
            runner,
            settings,
            timing,
            metrics,
            state: Mutex::new(State {
                store,
                containers: Vec::new(),
                groups: None,
                fetched_for: BTreeSet::new(),
                version: None,
                last_full: None,
                installed: None,
                skipped: Vec::new(),
                cache: Cache::default(),
            }),
            publish: AtomicBool::new(false),
            enforced: ArcSwap::from_pointee(Enforced::default()),
            watch_holds: Arc::new(AtomicBool::new(false)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the ASG table (syncing disabled): no leftover of an earlier run refuses egress.
    pub fn remove_table(runner: &dyn Runner) -> Result<(), Error> {
        Ok(runner.run(&render_delete())?)
    }

    /// One tick of the loop, asking the server for its version.
    pub fn poll(&self) -> Result<Applied, Error> {
        self.poll_with(Remote::Ask)
    }

    /// One tick of the loop, the server's version taken from `remote`.
    pub fn poll_with(&self, remote: Remote) -> Result<Applied, Error> {
        let mut st = self.lock();
        self.cycle(&mut st, Trigger::Tick(remote), &mut Steps::start())
    }

    /// Waits (up to `wait`) for the server's version to move from the one last fetched. A
    /// server that answered no version is asked with 0 (it answers 404: no watch either).
    pub fn watch_once(&self, wait: Duration) -> Result<Option<Watched>, Error> {
        let after = {
            let st = self.lock();
            if st.groups.is_none() {
                return Ok(None);
            }
            st.version.unwrap_or(0)
        };
        self.metrics
            .poll
            .time("watch", || self.source.watch(after, wait))
            .map(Some)
    }

    /// The groups' version last fetched.
    pub fn version(&self) -> Option<i64> {
        self.lock().version
    }

    /// `/force-asgs-for-container`: the container's rules hold when this returns `Ok`.
    pub fn force_container(&self, handle: &str) -> Result<(), Error> {
        self.forced("force-asgs-for-container", handle, true)
    }

    /// `/force-orphaned-asgs-cleanup`: the container's entry is gone when this returns `Ok`
    /// (the networker removed it from the store first).
    pub fn cleanup_container(&self, handle: &str) -> Result<(), Error> {
        self.forced("force-orphaned-asgs-cleanup", handle, false)
    }

    /// A forced cycle, then the container is (`present`) or is not in the table; its steps are
    /// logged at `info` as one line.
    fn forced(&self, route: &str, handle: &str, present: bool) -> Result<(), Error> {
        let mut steps = Steps::start();
        let mut st = self.lock();
        steps.mark("lock");
        let applied = self.cycle(&mut st, Trigger::Force, &mut steps)?;
        log::info!("{route} {handle}: {applied:?}, {}", steps.line());
        if st.containers.iter().any(|c| c.handle == handle) != present {
            let message = if present {
                format!("container {handle} is not in the container store")
            } else {
                format!("container {handle} is still in the container store")
            };
            return Err(Error::Decode {
                what: "container store",
                message,
            });
        }
        Ok(())
    }

    /// The rule a log prefix names, from the compiled state in force.
    pub fn logged_rule(&self, prefix: &str) -> Option<LoggedRule> {
        let st = self.lock();
        st.installed
            .as_ref()
            .and_then(|c| c.logged.get(prefix.trim_end()).cloned())
    }

    /// From now on, every cycle publishes the table in force for [`AsgAgent::enforced`].
    pub fn publish_enforced(&self) {
        let st = self.lock();
        self.publish.store(true, Ordering::Relaxed);
        if let Some(c) = &st.installed {
            self.publish_from(&st, c);
        }
    }

    fn publish_from(&self, st: &State, compiled: &Compiled) {
        self.enforced.store(Arc::new(Enforced {
            logged: compiled.logged.clone(),
            groups: st.groups.clone().unwrap_or_default(),
            containers: st.containers.iter().map(|c| (c.ip, c.clone())).collect(),
        }));
    }

    /// The table in force as the flow log reads it.
    pub fn enforced(&self) -> Arc<Enforced> {
        self.enforced.load_full()
    }

    /// Every log prefix of the table in force and the rule it names.
    pub fn logged_rules(&self) -> Vec<(String, LoggedRule)> {
        let st = self.lock();
        st.installed
            .as_ref()
            .map(|c| {
                c.logged
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The rule-set chain each container IP points at (tests and diagnostics).
    pub fn container_chains(&self) -> Vec<(std::net::Ipv4Addr, String)> {
        let st = self.lock();
        st.installed
            .as_ref()
            .map(|c| c.containers.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn health(&self) -> Result<(), String> {
        match self.lock().installed {
            Some(_) => Ok(()),
            None => Err("no security groups enforced yet".into()),
        }
    }

    fn cycle(&self, st: &mut State, trigger: Trigger, steps: &mut Steps) -> Result<Applied, Error> {
        let r = self
            .metrics
            .poll
            .time("cycle", || self.cycle_inner(st, trigger, steps));
        if r.is_err() {
            self.metrics.errors.inc();
        }
        r
    }

    fn cycle_inner(
        &self,
        st: &mut State,
        trigger: Trigger,
        steps: &mut Steps,
    ) -> Result<Applied, Error> {
        let store_changed = match st.store.read_if_changed(trigger == Trigger::Force) {
            Ok(Some(all)) => {
                st.containers = all.iter().cloned().collect();
                true
            }
            Ok(None) => false,
            Err(e) => return Err(e.into()),
        };
        let spaces: BTreeSet<String> = st
            .containers
            .iter()
            .filter_map(|c| c.metadata.get(SPACE_KEY).and_then(|v| v.as_str()))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        // A forced cycle runs for a container's up or down: the periodic full rewrite waits
        // for the loop (one after a failed apply does not).
        let full_due = match st.last_full {
            None => true,
            Some(_) if trigger == Trigger::Force => false,
            Some(t) => t.elapsed() >= self.timing.full_sync,
        };
        steps.mark("store");
        let watch_holds = trigger == Trigger::Force && self.watch_holds.load(Ordering::SeqCst);
        let version = match (trigger, st.version) {
            (Trigger::Tick(Remote::Known(v)), _) | (Trigger::Tick(Remote::Unchanged), Some(v)) => {
                Ok(Some(v))
            }
            (Trigger::Force, Some(v)) if watch_holds => Ok(Some(v)),
            _ => {
                let v = self.metrics.poll.time("version", || self.source.version());
                steps.mark("version");
                v
            }
        };
        let must_fetch = st.groups.is_none()
            || full_due
            || !spaces.is_subset(&st.fetched_for)
            || match &version {
                Ok(Some(v)) => st.version != Some(*v),
                // No version on the server: a forced cycle fetches, as the original's does.
                Ok(None) => trigger == Trigger::Force,
                Err(_) => false,
            };
        let mut fetched = false;
        if must_fetch {
            let groups = match &version {
                Err(e) => Err(e.clone()),
                Ok(_) => self
                    .metrics
                    .poll
                    .time("groups", || self.source.groups(Some(&spaces))),
            };
            steps.mark("groups");
            match groups {
                Ok(g) => {
                    self.metrics.groups.set(g.len() as i64);
                    st.groups = Some(g);
                    st.fetched_for = spaces;
                    st.version = version.as_ref().ok().copied().flatten();
                    fetched = true;
                }
                // Containers that come or go are still applied with the groups last fetched
                // (a re-sync that fails must not fail a container's creation), unless the
                // new container's space was never fetched: then its rules are unknown.
                Err(e) if st.groups.is_some() && spaces.is_subset(&st.fetched_for) => {
                    log::warn!("security groups: {e}; applying the groups last fetched");
                    self.metrics.errors.inc();
                }
                Err(e) => return Err(e),
            }
        } else if let Err(e) = &version {
            log::debug!("security groups version: {e}");
        }
        if !fetched && !store_changed && st.installed.is_some() {
            return Ok(Applied::Nothing);
        }
        let groups = st.groups.take().unwrap_or_default();
        steps.skip();
        let compiled = compile_with(&mut st.cache, &groups, &st.containers, &self.settings);
        st.groups = Some(groups);
        steps.mark("compile");
        if compiled.skipped != st.skipped {
            for s in &compiled.skipped {
                log::warn!("security groups: left out: {s}");
            }
            st.skipped = compiled.skipped.clone();
        }
        let periodic = fetched && full_due;
        let applied = self.apply(st.installed.as_ref(), &compiled);
        steps.mark("nft");
        let applied = match applied {
            Ok(Applied::Incremental | Applied::Nothing) if periodic => self.repair_drift(&compiled),
            other => other,
        };
        let applied = match applied {
            Ok(applied) => applied,
            Err(e) => {
                // The next cycle must try again (a refetch, and the check of what the kernel
                // holds: a transaction that failed changed nothing), not find the version
                // unchanged and the store read, and do nothing until the periodic sync.
                st.last_full = None;
                return Err(e);
            }
        };
        if periodic {
            st.last_full = Some(Instant::now());
        }
        self.metrics
            .elements
            .set(compiled.objects.element_count() as i64);
        // Also when the table did not change: a group's name or description may have.
        if self.publish.load(Ordering::Relaxed) {
            self.publish_from(st, &compiled);
        }
        st.installed = Some(compiled);
        Ok(applied)
    }

    /// The table rewritten whole, its counters carried over from the table it replaces (none
    /// at a first start; the rewrite loses only what is counted between the read and the commit).
    fn full(&self, new: &Compiled) -> Result<Applied, Error> {
        if matches!(
            self.table_state(),
            Some(TableState::Absent | TableState::Dormant)
        ) {
            match self
                .metrics
                .enforce
                .time("full", || bulk::apply_first(self.runner.as_ref(), &new.objects))
            {
                Ok(()) => return Ok(Applied::Full(new.objects.element_count())),
                Err(e) => log::warn!(
                    "security groups: a first apply over nfnetlink failed ({e}); writing the table in one libnftables transaction"
                ),
            }
        }
        let carried = match counters::read_with(self.runner.as_ref()) {
            Ok(read) => counters::carried(&read),
            Err(e) => {
                log::debug!("security groups: no counters to carry over: {e}");
                Carried::default()
            }
        };
        self.metrics.enforce.time("full", || {
            self.runner
                .run(&render_full_carrying(&new.objects, &carried))
        })?;
        Ok(Applied::Full(new.objects.element_count()))
    }

    /// Whether the table exists and filters (`None`: it cannot be told, so it is replaced as a
    /// live one would be).
    fn table_state(&self) -> Option<TableState> {
        match bulk::table_state(self.runner.as_ref()) {
            Ok(state) => Some(state),
            Err(e) => {
                log::debug!("security groups: cannot look the table up: {e}");
                None
            }
        }
    }

    /// The periodic check ([`drift`]): the table rewritten whole only when the kernel's differs
    /// from `installed`, or cannot be read.
    fn repair_drift(&self, installed: &Compiled) -> Result<Applied, Error> {
        let found = self.metrics.enforce.time("check", || {
            drift::check(self.runner.as_ref(), &installed.objects)
        });
        match found {
            Ok(d) if d.is_empty() => return Ok(Applied::Nothing),
            Ok(d) => {
                log::warn!(
                    "security groups: the table {TABLE} was changed from outside ({}{}); rewriting it",
                    d.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
                    if d.len() > 5 { "; ..." } else { "" }
                );
                self.metrics.drift_repairs.inc();
            }
            Err(e) => {
                log::warn!("security groups: cannot check the table {TABLE} ({e}); rewriting it");
                self.metrics.errors.inc();
            }
        }
        self.full(installed)
    }

    fn apply(&self, installed: Option<&Compiled>, new: &Compiled) -> Result<Applied, Error> {
        let full = || self.full(new);
        match installed {
            Some(old) if !declarations_changed(&old.objects, &new.objects) => {
                match render_diff(&old.objects, &new.objects) {
                    None => Ok(Applied::Nothing),
                    Some(script) => match self
                        .metrics
                        .enforce
                        .time("incremental", || self.runner.run(&script))
                    {
                        Ok(()) => Ok(Applied::Incremental),
                        Err(e) => {
                            log::error!("incremental ASG update failed, rebuilding the table: {e}");
                            full()
                        }
                    },
                }
            }
            _ => full(),
        }
    }
}

impl Watchable for AsgAgent {
    const WHAT: &'static str = "security groups";

    fn poll_with(&self, remote: Remote) -> Result<(), Error> {
        AsgAgent::poll_with(self, remote).map(|_| ())
    }

    fn watch_once(&self, wait: Duration) -> Result<Option<Watched>, Error> {
        AsgAgent::watch_once(self, wait)
    }

    fn known_version(&self) -> Option<i64> {
        self.version()
    }

    fn watch_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.watch_holds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Store;
    use std::sync::atomic::AtomicUsize;

    /// One global group; counts the requests a server would get.
    #[derive(Default)]
    struct Counting {
        versions: AtomicUsize,
        fetches: AtomicUsize,
    }

    impl AsgSource for Arc<Counting> {
        fn version(&self) -> Result<Option<i64>, Error> {
            self.versions.fetch_add(1, Ordering::SeqCst);
            Ok(Some(1))
        }
        fn groups(&self, _: Option<&BTreeSet<String>>) -> Result<Vec<SecurityGroup>, Error> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            Ok(vec![SecurityGroup {
                guid: "g".into(),
                name: "g".into(),
                rules: r#"[{"protocol":"tcp","destination":"1.1.1.1","ports":"443"}]"#.into(),
                running_default: true,
                staging_default: false,
                running_space_guids: vec![],
                staging_space_guids: vec![],
            }])
        }
    }

    struct NoKernel;

    impl Runner for NoKernel {
        fn run(&self, _: &str) -> Result<(), crate::agent::nft::Error> {
            Ok(())
        }
    }

    /// libnftables in a namespace of its own, whose element batches fail (a kernel that
    /// refuses them): the first call of the nfnetlink socket (the table lookup) goes through.
    struct RefusingBatches {
        nft: crate::agent::libnft::LibNft,
        calls: Arc<AtomicUsize>,
    }

    impl Runner for RefusingBatches {
        fn run(&self, script: &str) -> Result<(), crate::agent::nft::Error> {
            self.nft.run(script)
        }
        fn with_netlink(
            &self,
            exchange: &mut crate::agent::nft::Exchange,
        ) -> Result<(), crate::agent::nft::Error> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                self.nft.with_netlink(exchange)
            } else {
                Err(crate::agent::nft::Error::Library("refused here".into()))
            }
        }
    }

    #[test]
    fn a_first_apply_whose_element_batch_fails_writes_the_table_whole() {
        let ns = crate::lab::netns::NamedNetns::create(&format!(
            "nmfirst{}",
            std::process::id() % 100000
        ))
        .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let runner = crate::netns::run_in(&ns.path(), move || RefusingBatches {
            nft: crate::agent::libnft::LibNft::open().unwrap(),
            calls: counted,
        })
        .unwrap();
        let (mut agent, _server, store, _dir) = agent(Duration::from_secs(3600));
        agent.runner = Box::new(runner);
        store.add(app("c1", 2)).unwrap();
        assert!(matches!(agent.poll().unwrap(), Applied::Full(_)));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the table looked up, then the element batch tried"
        );
        let (flags, listed) = crate::netns::run_in(&ns.path(), || {
            let nft = crate::agent::libnft::LibNft::open().unwrap();
            (
                bulk::table_state(&nft).unwrap(),
                nft.run_listing(&format!("list table ip {TABLE}")).unwrap(),
            )
        })
        .unwrap();
        assert_eq!(flags, TableState::Live, "{listed}");
        assert!(listed.contains("10.255.0.2 : jump rs_"), "{listed}");
        assert!(listed.contains("1.1.1.1"), "{listed}");
    }

    fn agent(full_sync: Duration) -> (AsgAgent, Arc<Counting>, Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let server = Arc::new(Counting::default());
        let settings = Settings {
            overlay: "10.255.0.0/16".parse().unwrap(),
            deny: Default::default(),
            log_all: false,
            nflog_group: 1,
            denied_logs_per_sec: 1,
            accepted_udp_logs_per_sec: 100,
        };
        let agent = AsgAgent::new(
            Box::new(Arc::clone(&server)),
            Box::new(NoKernel),
            Reader::new(&path),
            settings,
            Timing { full_sync },
            AsgMetrics::register(&mut Registry::default()),
        );
        (agent, server, Store::new(&path), dir)
    }

    fn app(handle: &str, last: u8) -> Container {
        let mut c = Container::for_app(handle, Ipv4Addr::new(10, 255, 0, last), "a");
        c.metadata
            .insert("container_workload".into(), serde_json::json!("app"));
        c
    }

    fn requests(server: &Counting) -> (usize, usize) {
        (
            server.versions.load(Ordering::SeqCst),
            server.fetches.load(Ordering::SeqCst),
        )
    }

    #[test]
    fn forced_cycles_ask_the_server_nothing_while_the_watch_holds() {
        let (agent, server, store, _dir) = agent(Duration::from_secs(3600));
        agent.poll().unwrap();
        assert_eq!(requests(&server), (1, 1));

        let holds = agent.watch_flag();
        holds.store(true, Ordering::SeqCst);
        store.add(app("c1", 2)).unwrap();
        agent.force_container("c1").unwrap();
        assert_eq!(agent.container_chains().len(), 1, "c1 is in the table");
        store.delete("c1").unwrap();
        agent.cleanup_container("c1").unwrap();
        assert!(agent.container_chains().is_empty(), "c1 left the table");
        assert_eq!(
            requests(&server),
            (1, 1),
            "no request while the watch holds"
        );

        // Without the watch (it reported a change, failed, or never ran) the version is asked.
        holds.store(false, Ordering::SeqCst);
        store.add(app("c2", 3)).unwrap();
        agent.force_container("c2").unwrap();
        assert_eq!(requests(&server), (2, 1));
        assert_eq!(agent.container_chains().len(), 1, "c2 is in the table");
    }

    #[test]
    fn forced_cycles_leave_the_periodic_sync_to_the_loop() {
        // A periodic sync due at every cycle: the loop's ticks fetch every time, forced ones
        // not. This runner cannot list the table, so every periodic check ends in a rewrite.
        let (agent, server, store, _dir) = agent(Duration::ZERO);
        assert!(matches!(agent.poll().unwrap(), Applied::Full(_)));
        store.add(app("c1", 2)).unwrap();
        agent.force_container("c1").unwrap();
        assert_eq!(requests(&server).1, 1, "the forced cycle fetched nothing");
        assert_eq!(agent.container_chains().len(), 1);
        assert!(matches!(agent.poll().unwrap(), Applied::Full(_)));
        assert_eq!(requests(&server).1, 2, "the tick did the periodic sync");
    }
}
