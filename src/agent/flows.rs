//! The cell's flow log, run by the agent: a thread reads the NFLOG groups of the cell (the
//! agent's c2c log, the flow table's denied and audit logs, the networker's NetOut logs), names
//! both ends and the deciding rule from the agent's containers and fetched policies, and writes
//! one JSON line per event ([`crate::flowlog`]). It also owns the flow table
//! ([`super::flow_table`]) and its switches: denied c2c logging, egress logging and audit mode,
//! each changed at run time on the debug port.

use super::asg::counters::AsgCounters;
use super::flow_table::{
    self, Count, Counters, FlowRules, AT_SOURCE_DROPPED, AUDIT_DROPPED, C2C_ALLOWED, C2C_AUDIT,
    C2C_DENIED, C2C_DENIED_AT_SOURCE, DENIED_DROPPED,
};
use super::nft::Runner;
use super::plan::{Plan, EXPAND_RANGES_UP_TO};
use crate::api::policy::Policy;
use crate::cell::marks::TAG_MASK;
use crate::cell::Container;
use crate::daemon::Worker;
use crate::flowlog::egress::EgressRules;
use crate::flowlog::event::{protocol_name, Direction, Endpoint, FlowEvent, Rule};
use crate::flowlog::identity::{fill, Identities};
use crate::flowlog::kind::{classify, is_left_out, Kind, Origin};
use crate::flowlog::packet::{parse_datagram, Logged};
use crate::flowlog::sink::FileSink;
use crate::flowlog::socket::{NflogSocket, Read};
use crate::flowlog::syslog::{SyslogSink, Target};
use crate::http::{Request, Response};
use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Audit mode: connections to these destinations that no policy allows pass, logged as `audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// Every container of the cell.
    #[serde(default)]
    pub cell: bool,
    /// The containers of these apps.
    #[serde(default)]
    pub apps: BTreeSet<String>,
}

impl Audit {
    pub fn is_on(&self) -> bool {
        self.cell || !self.apps.is_empty()
    }
}

pub struct FlowSettings {
    pub file: PathBuf,
    pub max_bytes: u64,
    pub keep: usize,
    pub cell: String,
    /// The NFLOG groups to read (c2c, egress).
    pub groups: Vec<u16>,
    pub rules: FlowRules,
    pub egress: bool,
    pub audit: Audit,
    /// Count what the networker's denied-egress log limit left out (its static NetOut chains:
    /// not with dynamic ASGs) from its rules' counters ([`super::netout_limits`]).
    pub netout_limits: bool,
    /// The networker's CNI cache (the static NetOut rules, counted per rule on `/counters`
    /// with `netout_limits`).
    pub netout_cache_dir: PathBuf,
    /// Each line also to syslog.
    pub syslog: Option<SyslogSettings>,
}

pub struct SyslogSettings {
    pub target: Target,
    pub facility: u8,
}

/// Where the lines go: the rotated file, and syslog when configured.
struct Outputs {
    file: FileSink,
    syslog: Option<SyslogSink>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: String,
    pub kind: String,
}

#[derive(Clone)]
pub struct FlowMetrics {
    /// New connections by verdict and kind (the flow table's counters; bounded labels).
    pub connections: Family<VerdictLabels, Counter>,
    /// Lines written, by kind.
    pub events: Family<KindLabels, Counter>,
    /// Connections the rate limit left unlogged, by kind (from the flow table's counters).
    pub rate_limited: Family<KindLabels, Counter>,
    /// Events read while their kind was switched off.
    pub suppressed: Family<KindLabels, Counter>,
    /// Messages that could not be read, socket overruns, failed writes.
    pub errors: Family<KindLabels, Counter>,
    /// 1 while audit mode is on for the cell or any app.
    pub audit: Gauge,
    pub audit_apps: Gauge,
}

impl FlowMetrics {
    pub fn register(registry: &mut Registry) -> FlowMetrics {
        let mut r = crate::metrics::Registrar::new(registry, "vpa_flow");
        FlowMetrics {
            connections: r.metric(
                "connections",
                "New c2c connections to this cell's containers, by verdict (allowed, denied, audit) and kind",
            ),
            events: r.metric("events", "Flow log lines written, by kind"),
            rate_limited: r.metric(
                "rate_limited",
                "Connections the denied-log rate limit left out of the flow log, by kind",
            ),
            suppressed: r.metric(
                "suppressed",
                "Logged packets dropped because their kind is switched off",
            ),
            errors: r.metric(
                "errors",
                "Flow log errors, by kind (unreadable, overrun, write, syslog, unrecognised prefix)",
            ),
            audit: r.metric(
                "audit_mode",
                "1 while audit mode lets would-be-denied c2c connections pass",
            ),
            audit_apps: r.metric("audit_apps", "Apps in audit mode"),
        }
    }

    fn count(family: &Family<KindLabels, Counter>, kind: &str) {
        family
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }
}

struct TableState {
    rules: FlowRules,
    audit: Audit,
    containers: Vec<Container>,
    local: BTreeSet<Ipv4Addr>,
    audit_ips: BTreeSet<Ipv4Addr>,
    /// Last read values of the table's named counters (a restart of the table starts them at 0).
    counters: HashMap<String, u64>,
    /// The agent's plan whose elements the counted sets hold.
    counted: Plan,
    /// Last read unlogged counts of the networker's limited deny logs.
    netout_unlogged: BTreeMap<super::netout_limits::PairKey, u64>,
    /// Last read allowed (new) connections of each of the networker's NetOut chains.
    netout_allowed: BTreeMap<String, u64>,
}

pub struct Flows {
    cell: String,
    identities: ArcSwap<Identities>,
    egress_rules: Box<dyn EgressRules>,
    egress: AtomicBool,
    table: Mutex<TableState>,
    runner: Box<dyn Runner>,
    nft_path: String,
    netout_limits: bool,
    netout_cache_dir: PathBuf,
    /// The ASG table's counters (with `enable_asg_syncing`).
    asg_counters: Option<AsgCounters>,
    pub metrics: FlowMetrics,
}

fn audit_ips(audit: &Audit, containers: &[Container]) -> BTreeSet<Ipv4Addr> {
    containers
        .iter()
        .filter(|c| audit.cell || c.app().is_some_and(|a| audit.apps.contains(a)))
        .map(|c| c.ip)
        .collect()
}

impl Flows {
    /// Installs the flow table (replacing a previous run's) and starts the reader thread.
    pub fn start(
        settings: FlowSettings,
        egress_rules: Box<dyn EgressRules>,
        asg_counters: Option<AsgCounters>,
        runner: Box<dyn Runner>,
        nft_path: &str,
        metrics: FlowMetrics,
    ) -> Result<(Arc<Flows>, Worker), String> {
        let socket = NflogSocket::bind(&settings.groups, Duration::from_millis(200))
            .map_err(|e| format!("flow log: {e}"))?;
        let file = FileSink::open(&settings.file, settings.max_bytes, settings.keep)
            .map_err(|e| format!("flow log: {e}"))?;
        let syslog = match &settings.syslog {
            Some(s) => Some(
                SyslogSink::open(s.target.clone(), s.facility, &settings.cell)
                    .map_err(|e| format!("flow log: {e}"))?,
            ),
            None => None,
        };
        let mut outputs = Outputs { file, syslog };
        runner
            .run(&flow_table::render_full(
                &settings.rules,
                &BTreeSet::new(),
                &BTreeSet::new(),
            ))
            .map_err(|e| format!("installing the flow table: {e}"))?;
        metrics.audit.set(settings.audit.is_on() as i64);
        metrics.audit_apps.set(settings.audit.apps.len() as i64);
        let flows = Arc::new(Flows {
            cell: settings.cell,
            identities: ArcSwap::from_pointee(Identities::default()),
            egress_rules,
            egress: AtomicBool::new(settings.egress),
            table: Mutex::new(TableState {
                rules: settings.rules,
                audit: settings.audit,
                containers: Vec::new(),
                local: BTreeSet::new(),
                audit_ips: BTreeSet::new(),
                counters: HashMap::new(),
                counted: Plan::default(),
                netout_unlogged: BTreeMap::new(),
                netout_allowed: BTreeMap::new(),
            }),
            runner,
            nft_path: nft_path.to_string(),
            netout_limits: settings.netout_limits,
            netout_cache_dir: settings.netout_cache_dir,
            asg_counters,
            metrics,
        });
        if flows.netout_limits {
            flows.refresh_netout_limits(false);
        }
        let reader = flows.clone();
        let worker = Worker::spawn(move |stopped| reader.read_loop(socket, &mut outputs, stopped));
        Ok((flows, worker))
    }

    fn read_loop(
        &self,
        mut socket: NflogSocket,
        out: &mut Outputs,
        stopped: std::sync::mpsc::Receiver<()>,
    ) {
        loop {
            if !matches!(
                stopped.try_recv(),
                Err(std::sync::mpsc::TryRecvError::Empty)
            ) {
                let _ = out.file.flush();
                return;
            }
            match socket.read() {
                Ok(Read::Data(bytes)) => {
                    // Hostile input must not stop the flow log: a panic costs this datagram.
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.write_datagram(bytes, out)
                    }));
                    if handled.is_err() {
                        FlowMetrics::count(&self.metrics.errors, "panic");
                    }
                }
                Ok(Read::Idle) => {}
                Ok(Read::Overrun) => FlowMetrics::count(&self.metrics.errors, "overrun"),
                Err(e) => {
                    log::error!("flow log: {e}");
                    FlowMetrics::count(&self.metrics.errors, "read");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn write_datagram(&self, bytes: &[u8], out: &mut Outputs) {
        let (logged, unreadable) = parse_datagram(bytes);
        for _ in 0..unreadable {
            FlowMetrics::count(&self.metrics.errors, "unreadable");
        }
        for l in logged {
            let Some(event) = self.event(&l) else {
                continue;
            };
            let line = serde_json::to_string(&event).expect("serialisable");
            match out.file.write_line(&line) {
                Ok(()) => FlowMetrics::count(&self.metrics.events, label(&l)),
                Err(e) => {
                    FlowMetrics::count(&self.metrics.errors, "write");
                    log::warn!("{e}");
                }
            }
            if let Some(syslog) = &mut out.syslog {
                // Logged (once per outage) by the sink; counted here.
                if syslog.send(event.verdict, &line).is_err() {
                    FlowMetrics::count(&self.metrics.errors, "syslog");
                }
            }
        }
        if let Err(e) = out.file.flush() {
            FlowMetrics::count(&self.metrics.errors, "write");
            log::warn!("{e}");
        }
    }

    /// The line for one logged packet; `None` for a prefix of no flow kind or a kind that is off.
    pub fn event(&self, l: &Logged) -> Option<FlowEvent> {
        let Some(prefix) = classify(&l.prefix) else {
            // Counted, so that a rule logging with a prefix nobody reads is visible.
            if !is_left_out(&l.prefix) {
                FlowMetrics::count(&self.metrics.errors, "unrecognised");
            }
            return None;
        };
        let ip = l.ip?;
        if prefix.kind.direction() == Direction::Egress && !self.egress.load(Ordering::Relaxed) {
            FlowMetrics::count(&self.metrics.suppressed, prefix.kind.label());
            return None;
        }
        let ids = self.identities.load();
        let (sport, dport) = match ip.ports {
            Some((s, d)) => (Some(s), Some(d)),
            None => (None, None),
        };
        let protocol = protocol_name(ip.protocol);
        let (src, dst, rule) = match prefix.kind.direction() {
            Direction::C2cIngress | Direction::C2cEgress => {
                let tag = Some(l.mark & TAG_MASK).filter(|t| *t != 0);
                let src = ids.endpoint(ip.src, sport, tag);
                let dst = ids.endpoint(ip.dst, dport, None);
                let rule = match prefix.kind {
                    Kind::C2cAllowed => tag
                        .zip(dst.app.as_deref())
                        .zip(dport)
                        .and_then(|((t, app), port)| ids.allowing_policy(t, app, &protocol, port))
                        .unwrap_or(Rule::Unknown),
                    _ => Rule::DefaultDeny,
                };
                (src, dst, rule)
            }
            Direction::Egress => {
                let dst = Endpoint {
                    ip: Some(ip.dst),
                    port: dport,
                    ..Endpoint::default()
                };
                match &prefix.origin {
                    Origin::Netout {
                        handle,
                        deny_network,
                    } => {
                        let mut src = Endpoint {
                            ip: Some(ip.src),
                            port: sport,
                            ..Endpoint::default()
                        };
                        match ids.by_handle(handle) {
                            Some(c) => fill(&mut src, c),
                            None => src.handle = Some(handle.to_string()),
                        }
                        let rule = match (prefix.kind, deny_network) {
                            (Kind::EgressAllowed, _) => self.egress_rules.allowing(handle, &ip),
                            (_, true) => Rule::DenyNetwork,
                            _ => Rule::DefaultDeny,
                        };
                        (src, dst, rule)
                    }
                    _ => {
                        // The ASG table logs by source address: the container is found by it.
                        let verdict = self.egress_rules.security_group(&l.prefix, &ip);
                        let Some((_, rule)) = verdict.filter(|(v, _)| *v == prefix.kind.verdict())
                        else {
                            FlowMetrics::count(&self.metrics.errors, "unrecognised");
                            return None;
                        };
                        (ids.endpoint(ip.src, sport, None), dst, rule)
                    }
                }
            }
        };
        Some(FlowEvent {
            time: crate::logging::timestamp(SystemTime::now()),
            cell: self.cell.clone(),
            verdict: prefix.kind.verdict(),
            direction: prefix.kind.direction(),
            protocol,
            src,
            dst,
            rule,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After every agent cycle: the containers and policies the names come from, and the flow
    /// table's sets.
    pub fn observe(&self, containers: &[Container], policies: &[Policy], plan: &Plan) {
        self.identities
            .store(Arc::new(Identities::new(containers, policies)));
        let mut st = self.lock();
        if st.containers != containers {
            self.egress_rules.refresh();
            st.containers = containers.to_vec();
        }
        if let Err(e) = self.sync_sets(&mut st) {
            log::error!("flow table: {e}");
        }
        let counted = flow_table::render_counted(&st.counted, plan);
        if !counted.is_empty() {
            match self.runner.run(&counted) {
                Ok(()) => st.counted = plan.clone(),
                // Rebuilt from nothing next time: the sets may hold part of the old plan.
                Err(e) => log::error!("flow table counters: {e}"),
            }
        }
    }

    fn sync_sets(&self, st: &mut TableState) -> Result<(), super::nft::Error> {
        let local: BTreeSet<Ipv4Addr> = st.containers.iter().map(|c| c.ip).collect();
        let audit = audit_ips(&st.audit, &st.containers);
        if local != st.local || audit != st.audit_ips {
            self.runner.run(&flow_table::render_sets(&local, &audit))?;
            st.local = local;
            st.audit_ips = audit;
        }
        Ok(())
    }

    pub fn switches(&self) -> (bool, bool) {
        (
            self.lock().rules.denied,
            self.egress.load(Ordering::Relaxed),
        )
    }

    pub fn set_denied(&self, on: bool) -> Result<(), super::nft::Error> {
        let mut st = self.lock();
        let rules = FlowRules {
            denied: on,
            ..st.rules
        };
        if rules != st.rules {
            self.runner.run(&flow_table::render_chain(&rules))?;
            st.rules = rules;
        }
        Ok(())
    }

    pub fn set_egress(&self, on: bool) {
        self.egress.store(on, Ordering::Relaxed);
    }

    pub fn audit(&self) -> Audit {
        self.lock().audit.clone()
    }

    pub fn set_audit(&self, audit: Audit) -> Result<(), super::nft::Error> {
        let mut st = self.lock();
        let old = std::mem::replace(&mut st.audit, audit);
        if let Err(e) = self.sync_sets(&mut st) {
            st.audit = old;
            return Err(e);
        }
        self.metrics.audit.set(st.audit.is_on() as i64);
        self.metrics.audit_apps.set(st.audit.apps.len() as i64);
        if st.audit.is_on() {
            log::warn!("audit mode on: {:?}", st.audit);
        } else {
            log::info!("audit mode off");
        }
        Ok(())
    }

    /// The flow table's counters: with `elements`, every counted set element's too (the whole
    /// table listed); without, only the named counters (a scrape need not list every element).
    fn read_counters(&self, elements: bool) -> Option<Counters> {
        let args: &[&str] = if elements {
            &["-j", "list", "table", "ip", flow_table::TABLE]
        } else {
            &["-j", "list", "counters", "table", "ip", flow_table::TABLE]
        };
        let out = std::process::Command::new(&self.nft_path)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| flow_table::parse_counters(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Adds to `vpa_flow_rate_limited_total{kind="egress_denied"}` what the networker's deny-log
    /// limits left unlogged since the last read (a chain made again starts from 0), and to
    /// `vpa_flow_connections_total{verdict="allowed",kind="egress"}` what its NetOut chains'
    /// allow lines accepted; the first read, at start, is the baseline (what happened before the
    /// agent started is not new).
    fn refresh_netout_limits(&self, count: bool) {
        let state = match filter_counted() {
            Ok(state) => state,
            Err(e) => {
                log::warn!("reading the networker's rule counters: {e}");
                FlowMetrics::count(&self.metrics.errors, "netout_counters");
                return;
            }
        };
        let unlogged = super::netout_limits::unlogged(&state);
        let allowed = super::netout_counters::allowed_by_chain(&state);
        let mut st = self.lock();
        let moved_unlogged = moved_since(&st.netout_unlogged, &unlogged);
        let moved_allowed = moved_since(&st.netout_allowed, &allowed);
        st.netout_unlogged = unlogged;
        st.netout_allowed = allowed;
        if !count {
            return;
        }
        self.metrics
            .rate_limited
            .get_or_create(&KindLabels {
                kind: Kind::EgressDenied.label().into(),
            })
            .inc_by(moved_unlogged);
        self.metrics
            .connections
            .get_or_create(&VerdictLabels {
                verdict: "allowed".into(),
                kind: "egress".into(),
            })
            .inc_by(moved_allowed);
    }

    /// Adds what the ASG table's counters moved since the last read: allowed egress connections,
    /// refused ones by reason, and what the deny logs' limit left out (`egress_denied`: with
    /// dynamic ASGs the ASG table's deny logs are the egress deny lines).
    fn refresh_asg_counters(&self, asg: &AsgCounters) {
        let moved = match asg.moved() {
            Ok(m) => m,
            Err(e) => {
                log::warn!("reading the ASG table's counters: {e}");
                FlowMetrics::count(&self.metrics.errors, "asg_counters");
                return;
            }
        };
        let m = &self.metrics;
        let connections = |verdict: &str, kind: &str| {
            m.connections.get_or_create(&VerdictLabels {
                verdict: verdict.into(),
                kind: kind.into(),
            })
        };
        connections("allowed", "egress").inc_by(moved.allowed);
        for (reason, n) in moved.denied {
            connections("denied", &format!("egress_{reason}")).inc_by(n);
        }
        m.rate_limited
            .get_or_create(&KindLabels {
                kind: Kind::EgressDenied.label().into(),
            })
            .inc_by(moved.log_dropped);
    }

    /// Before a scrape: adds what the table's named counters moved since the last read.
    pub fn refresh_counters(&self) {
        if self.netout_limits {
            self.refresh_netout_limits(true);
        }
        if let Some(asg) = &self.asg_counters {
            self.refresh_asg_counters(asg);
        }
        let Some(counters) = self.read_counters(false) else {
            return;
        };
        let mut st = self.lock();
        for (name, n) in counters.named {
            let last = st.counters.insert(name.clone(), n.packets).unwrap_or(0);
            let moved = if n.packets >= last {
                n.packets - last
            } else {
                n.packets
            };
            let verdict = |verdict: &str, kind: &str| VerdictLabels {
                verdict: verdict.into(),
                kind: kind.into(),
            };
            let kind = |kind: Kind| KindLabels {
                kind: kind.label().into(),
            };
            let m = &self.metrics;
            match name.as_str() {
                C2C_ALLOWED => m
                    .connections
                    .get_or_create(&verdict("allowed", "c2c"))
                    .inc_by(moved),
                C2C_DENIED => m
                    .connections
                    .get_or_create(&verdict("denied", "c2c"))
                    .inc_by(moved),
                C2C_AUDIT => m
                    .connections
                    .get_or_create(&verdict("audit", "c2c"))
                    .inc_by(moved),
                C2C_DENIED_AT_SOURCE => m
                    .connections
                    .get_or_create(&verdict("denied", "c2c_at_source"))
                    .inc_by(moved),
                DENIED_DROPPED => m
                    .rate_limited
                    .get_or_create(&kind(Kind::C2cDenied))
                    .inc_by(moved),
                AUDIT_DROPPED => m
                    .rate_limited
                    .get_or_create(&kind(Kind::C2cAudit))
                    .inc_by(moved),
                AT_SOURCE_DROPPED => m
                    .rate_limited
                    .get_or_create(&kind(Kind::C2cDeniedAtSource))
                    .inc_by(moved),
                _ => 0,
            };
        }
    }

    /// Per policy: the new connections it allowed on this cell since the agent started (every
    /// fetched policy is listed, so one nothing uses shows 0), and the totals by verdict.
    pub fn counters_json(&self) -> Option<serde_json::Value> {
        let counters = self.read_counters(true)?;
        let ids = self.identities.load();
        let policies: Vec<serde_json::Value> = ids
            .policies()
            .iter()
            .filter_map(|p| {
                let tag = p
                    .source
                    .tag
                    .as_deref()
                    .and_then(crate::api::policy::parse_tag)?;
                let dst = p.destination.id.as_str();
                let (start, end) = (p.destination.ports.start, p.destination.ports.end);
                let end = if end == 0 { start } else { end };
                let wide = end - start + 1 > i64::from(EXPAND_RANGES_UP_TO);
                let proto = p.destination.protocol.as_str();
                let mut total = Count::default();
                let mut add = |n: &Count| {
                    total.packets += n.packets;
                    total.bytes += n.bytes;
                };
                for (a, n) in &counters.allowed {
                    let fits = a.mark == tag
                        && a.proto.to_string() == proto
                        && (start..=end).contains(&i64::from(a.port))
                        && ids.app_at(a.daddr) == Some(dst);
                    if fits {
                        add(n);
                    }
                }
                for (k, n) in &counters.ranges {
                    if wide
                        && k.mark == tag
                        && k.proto.to_string() == proto
                        && ids.app_at(k.daddr) == Some(dst)
                    {
                        add(n);
                    }
                }
                // Policies of local sources to remote destinations are enforced on the other cell.
                let enforced_here = ids.has_app(dst);
                enforced_here.then(|| {
                    serde_json::json!({
                        "source": p.source.id, "destination": dst, "protocol": proto,
                        "ports": {"start": start, "end": end},
                        "connections": total.packets, "bytes": total.bytes,
                    })
                })
            })
            .collect();
        let named: serde_json::Map<String, serde_json::Value> = counters
            .named
            .iter()
            .map(|(name, n)| {
                (
                    name.clone(),
                    serde_json::json!({"connections": n.packets, "bytes": n.bytes}),
                )
            })
            .collect();
        let mut out = serde_json::json!({"policies": policies, "totals": named});
        if self.netout_limits {
            let containers = self.lock().containers.clone();
            let netout = filter_counted().map(|state| {
                super::netout_counters::json(&state, &self.netout_cache_dir, &containers)
            });
            match netout {
                Ok(serde_json::Value::Object(parts)) => {
                    out.as_object_mut().expect("an object").extend(parts)
                }
                Ok(_) => {}
                Err(e) => {
                    log::warn!("reading the networker's NetOut counters: {e}");
                    FlowMetrics::count(&self.metrics.errors, "netout_counters");
                    return None;
                }
            }
        }
        if let Some(asg) = &self.asg_counters {
            match asg.json() {
                Ok(serde_json::Value::Object(parts)) => {
                    out.as_object_mut().expect("an object").extend(parts)
                }
                Ok(_) => {}
                Err(e) => {
                    log::warn!("reading the ASG table's counters: {e}");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// The debug port's flow routes: `/flow-logging` and `/audit`.
    pub fn route(
        &self,
        req: &Request,
        c2c_allowed: &dyn Fn(Option<bool>) -> Result<bool, String>,
    ) -> Option<Response> {
        match req.path.as_str() {
            "/enforced" if req.method == "GET" => Some(self.enforced_route(req)),
            "/counters" => Some(match (req.method.as_str(), self.counters_json()) {
                ("GET", Some(json)) => Response::json(200, &json),
                ("GET", None) => Response::error(500, "reading the flow table's counters failed"),
                _ => Response::error(405, "method not allowed"),
            }),
            "/flow-logging" => Some(self.logging_route(req, c2c_allowed)),
            "/audit" => Some(self.audit_route(req)),
            _ => None,
        }
    }

    fn logging_route(
        &self,
        req: &Request,
        c2c_allowed: &dyn Fn(Option<bool>) -> Result<bool, String>,
    ) -> Response {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Switches {
            c2c_allowed: Option<bool>,
            c2c_denied: Option<bool>,
            egress: Option<bool>,
        }
        let current = |allowed: bool| {
            let (denied, egress) = self.switches();
            Response::json(
                200,
                &serde_json::json!({"c2c_allowed": allowed, "c2c_denied": denied, "egress": egress}),
            )
        };
        match req.method.as_str() {
            "GET" => match c2c_allowed(None) {
                Ok(a) => current(a),
                Err(e) => Response::error(500, &e),
            },
            "PUT" | "POST" => {
                let s: Switches = match serde_json::from_slice(&req.body) {
                    Ok(s) => s,
                    Err(e) => {
                        return Response::error(400, &format!("decoding request body as json: {e}"))
                    }
                };
                if let Some(on) = s.c2c_denied {
                    if let Err(e) = self.set_denied(on) {
                        return Response::error(500, &format!("setting denied c2c logging: {e}"));
                    }
                }
                if let Some(on) = s.egress {
                    self.set_egress(on);
                }
                match c2c_allowed(s.c2c_allowed) {
                    Ok(a) => {
                        log::info!(
                            "flow logging set: {:?}",
                            std::str::from_utf8(&req.body).unwrap_or("")
                        );
                        current(a)
                    }
                    Err(e) => Response::error(500, &e),
                }
            }
            _ => Response::error(405, "method not allowed"),
        }
    }

    /// `GET /enforced?source=&destination=&protocol=&port=`: for each container of the
    /// destination app on this cell, whether the agent's table holds the element that allows the
    /// source's tag on that port (asked of the kernel, not of the plan).
    fn enforced_route(&self, req: &Request) -> Response {
        let param = |name: &str| req.query_param(name).filter(|v| !v.is_empty());
        let (Some(source), Some(destination), Some(protocol), Some(port)) = (
            param("source"),
            param("destination"),
            param("protocol"),
            param("port"),
        ) else {
            return Response::error(400, "source, destination, protocol and port are required");
        };
        let Some(proto) = super::plan::Proto::parse(protocol) else {
            return Response::error(400, &format!("invalid protocol {protocol:?} (tcp or udp)"));
        };
        let Some(port) = port.parse::<u16>().ok().filter(|p| *p > 0) else {
            return Response::error(400, &format!("invalid port {port:?}"));
        };
        let ids = self.identities.load();
        let tag = ids.tag_of(source);
        let ranges = self.lock().counted.ranges.clone();
        let containers: Vec<serde_json::Value> = ids
            .containers_of(destination)
            .map(|c| {
                let Some(tag) = tag else {
                    return serde_json::json!({"ip": c.ip, "handle": c.handle, "present": false,
                        "element": null, "why": "the source app's tag is unknown on this cell (no policy names it)"});
                };
                let single = format!("{} . {proto} . {port} . 0x{tag:08x}", c.ip);
                if self.kernel_has(super::nft::Set::Allowed.name(), &single) {
                    return serde_json::json!({"ip": c.ip, "handle": c.handle, "present": true,
                        "set": "allowed", "element": single});
                }
                let key = super::plan::RangeKey { daddr: c.ip, proto, mark: tag };
                let range = format!("{} . {proto} . 0x{tag:08x}", c.ip);
                let covers = ranges
                    .get(&key)
                    .is_some_and(|r| r.ranges().iter().any(|(s, e)| (*s..=*e).contains(&port)));
                if covers && self.kernel_has(super::nft::Set::AllowedRanges.name(), &range) {
                    return serde_json::json!({"ip": c.ip, "handle": c.handle, "present": true,
                        "set": "allowed_ranges", "element": range});
                }
                serde_json::json!({"ip": c.ip, "handle": c.handle, "present": false,
                    "set": "allowed", "element": single})
            })
            .collect();
        Response::json(
            200,
            &serde_json::json!({
                "source": source, "destination": destination,
                "source_tag": tag.map(|t| format!("{t:04x}")),
                "containers": containers,
            }),
        )
    }

    /// Whether the agent's table holds `element` in `set` (`nft get element`).
    fn kernel_has(&self, set: &str, element: &str) -> bool {
        std::process::Command::new(&self.nft_path)
            .args(["get", "element", "ip", super::nft::TABLE, set])
            .arg(format!("{{ {element} }}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn audit_route(&self, req: &Request) -> Response {
        match req.method.as_str() {
            "GET" => Response::json(200, &self.audit()),
            "PUT" | "POST" => {
                let audit: Audit = match serde_json::from_slice(&req.body) {
                    Ok(a) => a,
                    Err(e) => {
                        return Response::error(400, &format!("decoding request body as json: {e}"))
                    }
                };
                if let Some(bad) = audit.apps.iter().find(|a| a.is_empty() || a.len() > 255) {
                    return Response::error(400, &format!("invalid app guid {bad:?}"));
                }
                match self.set_audit(audit) {
                    Ok(()) => Response::json(200, &self.audit()),
                    Err(e) => Response::error(500, &format!("setting audit mode: {e}")),
                }
            }
            _ => Response::error(405, "method not allowed"),
        }
    }
}

/// What counters moved between two reads (one that went back, a chain made again, counts from 0).
fn moved_since<K: Ord>(last: &BTreeMap<K, u64>, now: &BTreeMap<K, u64>) -> u64 {
    now.iter()
        .map(|(k, n)| match last.get(k) {
            Some(last) if n >= last => n - last,
            _ => *n,
        })
        .sum()
}

/// The filter table with its counters (the networker's chains), once per read.
fn filter_counted() -> Result<crate::iptables::TableState, String> {
    crate::iptables::list_counted(crate::iptables::Table::Filter).map_err(|e| e.to_string())
}

fn label(l: &Logged) -> &'static str {
    classify(&l.prefix)
        .map(|p| p.kind.label())
        .unwrap_or("other")
}
