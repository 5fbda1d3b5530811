//! The cell's lease and VTEP: at start the lease is rediscovered from the VTEP (kept across
//! restarts) or acquired and the VTEP built for it; every poll renews it and converges the
//! routes, neighbours and FDB entries towards the other cells' leases.

use super::api::NetworkInfo;
use super::config::DaemonConfig;
use super::error::Error;
use super::metrics::DaemonMetrics;
use super::vtep::{self, Discovered, VtepConfig};
use crate::netlink::Handle;
use crate::overlay::client::{ClientError, ControllerClient};
use crate::overlay::{ipam, vtep_mac, Lease, ParsedLease};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    ) -> Result<Daemon, Error> {
        let vtep_cfg = cfg.vtep().map_err(Error::Config)?;
        let mut h = Handle::new()?;
        let found = match vtep::discover(&mut h, &vtep_cfg)? {
            Some(d) => keep_discovered(&mut h, &cfg, &vtep_cfg, &client, d)?,
            None => None,
        };
        let (lease, index, mtu) = match found {
            Some(d) => (Lease::new(vtep_cfg.underlay_ip, d.subnet), d.index, d.mtu),
            None => acquire_and_build(&mut h, &cfg, &vtep_cfg, &client)?,
        };
        let parsed = lease.parse().map_err(Error::InvalidLease)?;
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
    pub fn poll(&mut self) -> Result<(), Error> {
        let problem = self.poll_once()?;
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
        Ok(())
    }

    /// `Err`: fatal. `Ok(Some(reason))`: this poll could not do all of its work.
    fn poll_once(&mut self) -> Result<Option<String>, Error> {
        let mut problems: Vec<String> = Vec::new();
        if let Some(problem) = self.renew()? {
            problems.push(problem);
        }
        let leases = match self.client.leases() {
            Ok(l) => l,
            Err(e) => {
                self.metrics.converge_failure.inc();
                let e = Error::ListLeases(e);
                log::warn!("{e}");
                problems.push(e.to_string());
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
                problems.push(e.to_string());
            }
        }
        Ok((!problems.is_empty()).then(|| problems.join("; ")))
    }

    /// Renews the lease. `Err`: fatal (refused, or the partition lasted too long);
    /// `Ok(Some(problem))`: the controller could not be reached this time.
    fn renew(&mut self) -> Result<Option<String>, Error> {
        let m = match self.client.renew(&self.lease) {
            Ok(()) => {
                self.metrics.renew_success.inc();
                self.last_renewed = Instant::now();
                return Ok(None);
            }
            Err(e) => {
                self.metrics.renew_failure.inc();
                e
            }
        };
        let subnet = self.lease.overlay_subnet.clone();
        let m = match m {
            ClientError::NonRetriable(reason) => {
                return Err(Error::RenewRefused { subnet, reason })
            }
            ClientError::Other(m) => m,
        };
        let seconds = self.last_renewed.elapsed().as_secs();
        let tolerance = Duration::from_secs(self.cfg.partition_tolerance_seconds);
        if self.last_renewed.elapsed() >= tolerance {
            return Err(Error::PartitionExceeded {
                subnet,
                seconds,
                reason: m,
            });
        }
        log::warn!("renewing lease: {m}");
        Ok(Some(format!(
            "lease {subnet} not renewed for {seconds}s: {m}"
        )))
    }

    fn converge(&mut self, leases: &[Lease]) -> Result<vtep::ConvergeStats, Error> {
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

/// The VTEP found at start, if its lease can be kept: it fits the overlay network and the
/// controller does not refuse it (an unreachable controller is no refusal: the poll loop renews
/// within the partition tolerance). A lease that cannot be kept is given up (the VTEP deleted)
/// unless containers use it, which is fatal.
fn keep_discovered(
    h: &mut Handle,
    cfg: &DaemonConfig,
    vtep_cfg: &VtepConfig,
    client: &ControllerClient,
    d: Discovered,
) -> Result<Option<Discovered>, Error> {
    let network = vtep_cfg.overlay_network;
    let fits = d.network == network && network.contains(&d.subnet) && d.mac == vtep_mac(d.subnet);
    if !fits {
        let fatal = Error::LeaseDoesNotFit {
            subnet: d.subnet,
            network,
        };
        let why = format!("discarding VTEP lease {} outside {network}", d.subnet);
        return give_up(h, cfg, vtep_cfg, fatal, &why);
    }
    match client.renew(&Lease::new(vtep_cfg.underlay_ip, d.subnet)) {
        Ok(()) => log::info!("rediscovered lease {} from the VTEP", d.subnet),
        Err(ClientError::NonRetriable(reason)) => {
            let why = format!("lease {} refused ({reason}); acquiring a new one", d.subnet);
            let fatal = Error::LeaseRefusedAtStart {
                subnet: d.subnet,
                reason,
            };
            return give_up(h, cfg, vtep_cfg, fatal, &why);
        }
        Err(ClientError::Other(m)) => log::warn!("renewing rediscovered lease {}: {m}", d.subnet),
    }
    Ok(Some(d))
}

/// Gives up the VTEP's lease (the VTEP is deleted, `why` logged), or fails with `fatal` when
/// containers use it.
fn give_up(
    h: &mut Handle,
    cfg: &DaemonConfig,
    vtep_cfg: &VtepConfig,
    fatal: Error,
    why: &str,
) -> Result<Option<Discovered>, Error> {
    if containers_exist(cfg) {
        return Err(fatal);
    }
    log::warn!("{why}");
    vtep::delete(h, &vtep_cfg.name)?;
    Ok(None)
}

/// Acquires a lease and builds the VTEP for it: (lease, VTEP index, MTU).
fn acquire_and_build(
    h: &mut Handle,
    cfg: &DaemonConfig,
    vtep_cfg: &VtepConfig,
    client: &ControllerClient,
) -> Result<(Lease, u32, u32), Error> {
    let lease = client
        .acquire(&cfg.underlay_ip, cfg.single_ip_only)
        .map_err(Error::Acquire)?;
    let parsed = lease.parse().map_err(Error::InvalidLease)?;
    let (index, mtu) = vtep::create(h, vtep_cfg, &parsed).map_err(|e| Error::CreateVtep {
        name: vtep_cfg.name.clone(),
        cause: Box::new(e),
    })?;
    log::info!(
        "acquired lease {} and created {}",
        lease.overlay_subnet,
        vtep_cfg.name
    );
    Ok((lease, index, mtu))
}
