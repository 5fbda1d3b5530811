//! The per-cell overlay daemon: gets its lease (rediscovered from the VTEP after a restart),
//! keeps the VTEP, renews the lease and converges the other cells' routes, neighbours and FDB
//! entries every poll interval, and tells the CNI plugin its subnet and MTU.

use super::client::{ClientError, ControllerClient};
use super::controller::parse_network;
use super::vtep::{self, VtepConfig};
use super::{ipam, Lease, ParsedLease};
use crate::config::{self, Validate};
use crate::http::{Request, Response};
use crate::metrics::OpMetrics;
use crate::netlink::Handle;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `overlay-daemon` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub underlay_ip: String,
    /// Parent device of the VTEP; by default the interface holding `underlay_ip`.
    #[serde(default)]
    pub underlay_interface: Option<String>,
    #[serde(default = "default_vtep_name")]
    pub vtep_name: String,
    #[serde(default = "default_vni")]
    pub vni: u32,
    #[serde(default = "default_vtep_port")]
    pub vtep_port: u16,
    #[serde(default = "default_network")]
    pub overlay_network: String,
    #[serde(default = "default_prefix")]
    pub subnet_prefix_length: u8,
    pub controller_url: String,
    pub ca_cert_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    #[serde(default = "default_timeout")]
    pub client_timeout_seconds: u64,
    #[serde(default = "default_poll")]
    pub poll_interval_seconds: u64,
    #[serde(default = "default_partition")]
    pub partition_tolerance_seconds: u64,
    #[serde(default = "default_listen_host")]
    pub listen_host: String,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    #[serde(default = "default_debug_port")]
    pub debug_server_port: u16,
    /// The overlay CNI plugin's `dataDir`: allocations there mean containers exist.
    #[serde(default = "default_data_dir")]
    pub plugin_data_dir: String,
    #[serde(default)]
    pub single_ip_only: bool,
}

fn default_vtep_name() -> String {
    crate::cell::DEFAULT_VTEP.into()
}
fn default_vni() -> u32 {
    1
}
fn default_vtep_port() -> u16 {
    4789
}
fn default_network() -> String {
    "10.255.0.0/16".into()
}
fn default_prefix() -> u8 {
    24
}
fn default_timeout() -> u64 {
    5
}
fn default_poll() -> u64 {
    30
}
fn default_partition() -> u64 {
    168 * 3600
}
fn default_listen_host() -> String {
    "127.0.0.1".into()
}
fn default_listen_port() -> u16 {
    super::defaults::DAEMON_PORT
}
fn default_debug_port() -> u16 {
    22233
}
fn default_data_dir() -> String {
    super::defaults::DATA_DIR.into()
}

impl Validate for DaemonConfig {
    fn validate(&self) -> Result<(), String> {
        match config::require_ip("underlay_ip", &self.underlay_ip)? {
            std::net::IpAddr::V4(_) => {}
            _ => return Err("invalid 'underlay_ip': must be IPv4".into()),
        }
        if self.vtep_name.is_empty() || self.vtep_name.len() > 15 || self.vtep_name.contains('/') {
            return Err(format!(
                "invalid 'vtep_name': {:?} must be 1-15 characters without '/'",
                self.vtep_name
            ));
        }
        if self.vni == 0 || self.vni >= 1 << 24 {
            return Err(format!("invalid 'vni': {} must be in 1-16777215", self.vni));
        }
        config::require_port("vtep_port", self.vtep_port)?;
        let network = parse_network("overlay_network", &self.overlay_network)?;
        if !(1..=30).contains(&self.subnet_prefix_length)
            || self.subnet_prefix_length <= network.prefix_len()
        {
            return Err(format!(
                "invalid 'subnet_prefix_length': {} must be in 1-30 and longer than /{}",
                self.subnet_prefix_length,
                network.prefix_len()
            ));
        }
        if !(self.controller_url.starts_with("https://")) {
            return Err(format!(
                "invalid 'controller_url': {:?} must be https://",
                self.controller_url
            ));
        }
        config::require_readable_file("ca_cert_file", &self.ca_cert_file)?;
        config::require_readable_file("client_cert_file", &self.client_cert_file)?;
        config::require_readable_file("client_key_file", &self.client_key_file)?;
        config::require_positive("client_timeout_seconds", self.client_timeout_seconds)?;
        config::require_positive("poll_interval_seconds", self.poll_interval_seconds)?;
        config::require_positive(
            "partition_tolerance_seconds",
            self.partition_tolerance_seconds,
        )?;
        config::require_ip("listen_host", &self.listen_host)?;
        config::require_port("listen_port", self.listen_port)?;
        config::require_port("debug_server_port", self.debug_server_port)?;
        config::require_nonempty("plugin_data_dir", &self.plugin_data_dir)
    }
}

impl DaemonConfig {
    pub fn vtep(&self) -> Result<VtepConfig, String> {
        Ok(VtepConfig {
            name: self.vtep_name.clone(),
            vni: self.vni,
            port: self.vtep_port,
            underlay_ip: self
                .underlay_ip
                .parse()
                .map_err(|_| "invalid 'underlay_ip'".to_string())?,
            underlay_interface: self.underlay_interface.clone().filter(|s| !s.is_empty()),
            overlay_network: parse_network("overlay_network", &self.overlay_network)?,
            subnet_prefix_length: self.subnet_prefix_length,
        })
    }
}

/// What the plugin asks the daemon for (`GET /`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub overlay_subnet: String,
    pub mtu: u32,
}

/// Answers any path with the network info (as the original did: `/` for the plugin, `/ping`
/// for drain scripts).
pub struct InfoHandler {
    pub info: NetworkInfo,
}

impl crate::http::Handler for InfoHandler {
    fn handle(&self, _req: &Request) -> Response {
        Response::json(200, &self.info)
    }
}

#[derive(Clone)]
pub struct DaemonMetrics {
    renew_success: Counter,
    renew_failure: Counter,
    converge_success: Counter,
    converge_failure: Counter,
    leases: Gauge,
    converge_time: OpMetrics,
}

impl DaemonMetrics {
    pub fn register(r: &mut Registry) -> DaemonMetrics {
        let m = DaemonMetrics {
            renew_success: Counter::default(),
            renew_failure: Counter::default(),
            converge_success: Counter::default(),
            converge_failure: Counter::default(),
            leases: Gauge::default(),
            converge_time: OpMetrics::register(
                r,
                "overlay_daemon_operation_duration_seconds",
                "Duration of daemon operations",
            ),
        };
        r.register(
            "overlay_daemon_renew_success",
            "Lease renewals that succeeded",
            m.renew_success.clone(),
        );
        r.register(
            "overlay_daemon_renew_failure",
            "Lease renewals that failed",
            m.renew_failure.clone(),
        );
        r.register(
            "overlay_daemon_converge_success",
            "Convergences that succeeded",
            m.converge_success.clone(),
        );
        r.register(
            "overlay_daemon_converge_failure",
            "Convergences that failed",
            m.converge_failure.clone(),
        );
        r.register(
            "overlay_daemon_number_leases",
            "Leases listed by the controller",
            m.leases.clone(),
        );
        m
    }
}

/// The running daemon's state.
pub struct Daemon {
    cfg: DaemonConfig,
    vtep_cfg: VtepConfig,
    client: ControllerClient,
    handle: Handle,
    pub lease: Lease,
    parsed: ParsedLease,
    vtep_index: u32,
    pub info: NetworkInfo,
    last_renewed: Instant,
    metrics: DaemonMetrics,
    /// What kept the last poll from renewing, listing or converging (`None`: it all worked).
    /// The debug server's `/health` answers 500 with it; the data plane keeps working meanwhile.
    pub problem: Arc<Mutex<Option<String>>>,
}

fn containers_exist(cfg: &DaemonConfig) -> bool {
    ipam::any_allocations(&PathBuf::from(&cfg.plugin_data_dir))
}

impl Daemon {
    /// Startup: rediscover the lease from the VTEP, or acquire one and build the VTEP. Never
    /// gives up a discovered subnet while containers exist.
    pub fn start(
        cfg: DaemonConfig,
        client: ControllerClient,
        metrics: DaemonMetrics,
    ) -> Result<Daemon, String> {
        let vtep_cfg = cfg.vtep()?;
        let mut h = Handle::new()?;
        let underlay: Ipv4Addr = vtep_cfg.underlay_ip;
        let mut found = vtep::discover(&mut h, &vtep_cfg)?;
        if let Some(d) = &found {
            let lease = Lease::new(underlay, d.subnet);
            let usable = d.network == vtep_cfg.overlay_network
                && vtep_cfg.overlay_network.contains(&d.subnet)
                && d.mac == super::vtep_mac(d.subnet);
            if !usable {
                if containers_exist(&cfg) {
                    return Err(format!(
                        "the VTEP's lease {} does not fit overlay network {} and containers exist; this cell must be drained and restarted",
                        d.subnet, vtep_cfg.overlay_network
                    ));
                }
                log::warn!(
                    "discarding VTEP lease {} outside {}",
                    d.subnet,
                    vtep_cfg.overlay_network
                );
                vtep::delete(&mut h, &vtep_cfg.name)?;
                found = None;
            } else {
                match client.renew(&lease) {
                    Ok(()) => log::info!("rediscovered lease {} from the VTEP", d.subnet),
                    Err(ClientError::NonRetriable(m)) => {
                        if containers_exist(&cfg) {
                            return Err(format!(
                                "the controller refused our lease {} ({m}) and containers exist; this cell must be restarted",
                                d.subnet
                            ));
                        }
                        log::warn!("lease {} refused ({m}); acquiring a new one", d.subnet);
                        vtep::delete(&mut h, &vtep_cfg.name)?;
                        found = None;
                    }
                    // The controller is unreachable: keep the lease; the poll loop renews it
                    // within the partition tolerance.
                    Err(ClientError::Other(m)) => {
                        log::warn!("renewing rediscovered lease {}: {m}", d.subnet)
                    }
                }
            }
        }
        let (lease, index, mtu) = match found {
            Some(d) => (Lease::new(underlay, d.subnet), d.index, d.mtu),
            None => {
                let lease = client
                    .acquire(&cfg.underlay_ip, cfg.single_ip_only)
                    .map_err(|e| format!("acquiring a lease: {e}"))?;
                let parsed = lease
                    .parse()
                    .map_err(|e| format!("controller answered an invalid lease: {e}"))?;
                let (index, mtu) = vtep::create(&mut h, &vtep_cfg, &parsed)
                    .map_err(|e| format!("creating VTEP {}: {e}", vtep_cfg.name))?;
                log::warn!(
                    "acquired lease {} and created {}",
                    lease.overlay_subnet,
                    vtep_cfg.name
                );
                (lease, index, mtu)
            }
        };
        let parsed = lease.parse()?;
        Ok(Daemon {
            info: NetworkInfo {
                overlay_subnet: lease.overlay_subnet.clone(),
                mtu,
            },
            cfg,
            vtep_cfg,
            client,
            handle: h,
            lease,
            parsed,
            vtep_index: index,
            last_renewed: Instant::now(),
            metrics,
            problem: Arc::new(Mutex::new(None)),
        })
    }

    /// One poll: renew, list, converge. An error is fatal (the process must exit).
    pub fn poll(&mut self) -> Result<(), String> {
        let problem = self.poll_once()?;
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
        Ok(())
    }

    /// `Err`: fatal. `Ok(Some(reason))`: this poll could not do all of its work.
    fn poll_once(&mut self) -> Result<Option<String>, String> {
        let mut problems: Vec<String> = Vec::new();
        match self.client.renew(&self.lease) {
            Ok(()) => {
                self.metrics.renew_success.inc();
                self.last_renewed = Instant::now();
            }
            Err(ClientError::NonRetriable(m)) => {
                self.metrics.renew_failure.inc();
                return Err(format!(
                    "renewing lease {}: {m}; this cell must be restarted",
                    self.lease.overlay_subnet
                ));
            }
            Err(ClientError::Other(m)) => {
                self.metrics.renew_failure.inc();
                let tolerance = Duration::from_secs(self.cfg.partition_tolerance_seconds);
                if self.last_renewed.elapsed() >= tolerance {
                    return Err(format!(
                        "lease {} not renewed for {}s (partition tolerance): {m}; this cell must be restarted",
                        self.lease.overlay_subnet,
                        self.last_renewed.elapsed().as_secs()
                    ));
                }
                log::warn!("renewing lease: {m}");
                problems.push(format!(
                    "lease {} not renewed for {}s: {m}",
                    self.lease.overlay_subnet,
                    self.last_renewed.elapsed().as_secs()
                ));
            }
        }
        let leases = match self.client.leases() {
            Ok(l) => l,
            Err(e) => {
                self.metrics.converge_failure.inc();
                log::warn!("listing leases: {e}");
                problems.push(format!("listing leases: {e}"));
                return Ok(Some(problems.join("; ")));
            }
        };
        self.metrics.leases.set(leases.len() as i64);
        match self.converge(&leases) {
            Ok(stats) => {
                self.metrics.converge_success.inc();
                if stats.added + stats.removed > 0 {
                    log::info!("converged: {stats:?}");
                }
            }
            Err(e) => {
                self.metrics.converge_failure.inc();
                log::error!("{e}");
                problems.push(e);
            }
        }
        Ok((!problems.is_empty()).then(|| problems.join("; ")))
    }

    fn converge(&mut self, leases: &[Lease]) -> Result<vtep::ConvergeStats, String> {
        let parsed: Vec<ParsedLease> = leases
            .iter()
            .filter_map(|l| match l.parse() {
                Ok(p) => Some(p),
                Err(e) => {
                    log::warn!("ignoring lease {l:?}: {e}");
                    None
                }
            })
            .collect();
        let (h, index, local, network) = (
            &mut self.handle,
            self.vtep_index,
            self.parsed,
            self.vtep_cfg.overlay_network,
        );
        let metrics = self.metrics.converge_time.clone();
        metrics.time("converge", || {
            vtep::converge(h, index, &local, network, &parsed)
        })
    }
}
