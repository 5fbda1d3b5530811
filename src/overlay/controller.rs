//! The lease controller: hands every cell a subnet of the overlay network over mutual TLS
//! (acquire, renew, release, list), reclaims expired leases, and reports pool metrics.

use super::store::{LeaseStore, StoreError};
use super::{now_seconds, Lease};
use crate::config::{self, Validate};
use crate::http::{Request, Response};
use crate::metrics::HttpMetrics;
use ipnet::Ipv4Net;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::seq::SliceRandom;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

/// `overlay-controller` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    #[serde(default = "default_listen_host")]
    pub listen_host: String,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    #[serde(default = "default_debug_port")]
    pub debug_server_port: u16,
    pub ca_cert_file: String,
    pub server_cert_file: String,
    pub server_key_file: String,
    #[serde(default = "default_network")]
    pub network: String,
    #[serde(default = "default_prefix")]
    pub subnet_prefix_length: u8,
    pub database: DatabaseConfig,
    #[serde(default = "default_expiration")]
    pub lease_expiration_seconds: u64,
    #[serde(default = "default_staleness")]
    pub staleness_threshold_seconds: u64,
}

/// Where leases are stored: the project's one `database` section (the policy server's keys):
/// `type` sqlite (default build), postgres or mysql, `connection_string` or
/// user/password/host/port/database_name, timeouts, pool limits, TLS.
pub use crate::db::DatabaseConfig;

fn default_listen_host() -> String {
    "0.0.0.0".into()
}
fn default_listen_port() -> u16 {
    4103
}
fn default_debug_port() -> u16 {
    46455
}
fn default_network() -> String {
    "10.255.0.0/16".into()
}
fn default_prefix() -> u8 {
    24
}
fn default_expiration() -> u64 {
    168 * 3600
}
fn default_staleness() -> u64 {
    3600
}

impl Validate for ControllerConfig {
    fn validate(&self) -> Result<(), String> {
        config::require_ip("listen_host", &self.listen_host)?;
        config::require_port("listen_port", self.listen_port)?;
        config::require_port("debug_server_port", self.debug_server_port)?;
        config::require_readable_file("ca_cert_file", &self.ca_cert_file)?;
        config::require_readable_file("server_cert_file", &self.server_cert_file)?;
        config::require_readable_file("server_key_file", &self.server_key_file)?;
        let network = parse_network("network", &self.network)?;
        if !(1..=30).contains(&self.subnet_prefix_length)
            || self.subnet_prefix_length <= network.prefix_len()
        {
            return Err(format!(
                "invalid 'subnet_prefix_length': {} must be in 1-30 and longer than the network's /{}",
                self.subnet_prefix_length,
                network.prefix_len()
            ));
        }
        config::require_positive("lease_expiration_seconds", self.lease_expiration_seconds)?;
        config::require_positive(
            "staleness_threshold_seconds",
            self.staleness_threshold_seconds,
        )?;
        self.database.validate()
    }
}

/// Parses a network CIDR that must be IPv4 and have no host bits.
pub fn parse_network(key: &str, text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = text
        .parse()
        .map_err(|_| format!("invalid '{key}': {text:?} is not an IPv4 CIDR"))?;
    if net.network() != net.addr() {
        return Err(format!("invalid '{key}': {text:?} has host bits set"));
    }
    Ok(net)
}

/// Opens the configured store: connects (retrying until `database.connect_timeout_seconds`) and
/// migrates.
pub fn open_store(db: &DatabaseConfig) -> Result<Arc<dyn LeaseStore>, String> {
    super::store::open(db)
}

/// An API failure with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::new(500, format!("database: {e}"))
    }
}

const ATTEMPTS: usize = 10;

/// Pool sizes and lease counts for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub total: u64,
    pub free: u64,
    pub stale: u64,
}

/// The lease logic, independent of HTTP.
pub struct Controller {
    store: Arc<dyn LeaseStore>,
    network: Ipv4Net,
    prefix: u8,
    expiration: i64,
    staleness: i64,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl Controller {
    pub fn new(
        store: Arc<dyn LeaseStore>,
        network: Ipv4Net,
        prefix: u8,
        expiration_seconds: u64,
        staleness_seconds: u64,
    ) -> Controller {
        Controller {
            store,
            network,
            prefix,
            expiration: expiration_seconds as i64,
            staleness: staleness_seconds as i64,
            clock: Box::new(now_seconds),
        }
    }

    /// Replaces the clock (Unix seconds), for tests of expiry.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Controller {
        self.clock = Box::new(clock);
        self
    }

    /// Every block of the network except the first (kept for single-IP leases).
    fn block_pool(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.network
            .subnets(self.prefix)
            .into_iter()
            .flatten()
            .skip(1)
    }

    /// Every /32 of the first block except its network address.
    fn single_pool(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let first = self
            .network
            .subnets(self.prefix)
            .into_iter()
            .flatten()
            .next();
        first
            .into_iter()
            .flat_map(|b| b.subnets(32).into_iter().flatten().skip(1))
    }

    fn pool_size(&self) -> u64 {
        let blocks = 1u64 << (self.prefix - self.network.prefix_len());
        blocks - 1
    }

    pub fn acquire(&self, underlay_ip: &str, single: bool) -> Result<Lease, ApiError> {
        let ip: Ipv4Addr = underlay_ip
            .parse()
            .map_err(|_| ApiError::new(500, format!("underlay_ip {underlay_ip:?} is not IPv4")))?;
        let now = (self.clock)();
        if let Some(existing) = self.store.lease_for_underlay(underlay_ip)? {
            let inside = existing
                .lease
                .parse()
                .map(|p| self.network.contains(&p.subnet))
                .unwrap_or(false);
            if inside {
                self.store.renew(underlay_ip, now)?;
                return Ok(existing.lease);
            }
            log::info!(
                "lease {} of {underlay_ip} is outside {}; replacing it",
                existing.lease.overlay_subnet,
                self.network
            );
            self.store.delete(underlay_ip)?;
        }
        for _ in 0..ATTEMPTS {
            let leases = self.store.leases()?;
            let taken: HashSet<String> = leases
                .iter()
                .map(|l| l.lease.overlay_subnet.clone())
                .collect();
            let free: Vec<Ipv4Net> = if single {
                self.single_pool()
                    .filter(|s| !taken.contains(&s.to_string()))
                    .collect()
            } else {
                self.block_pool()
                    .filter(|s| !taken.contains(&s.to_string()))
                    .collect()
            };
            if let Some(subnet) = free.choose(&mut rand::thread_rng()) {
                let lease = Lease::new(ip, *subnet);
                match self.store.insert(&lease, now) {
                    Ok(()) => {
                        log::info!("leased {} to {underlay_ip}", lease.overlay_subnet);
                        return Ok(lease);
                    }
                    Err(StoreError::Conflict(m)) => {
                        log::debug!("acquire race: {m}");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // Nothing free: take over the oldest expired lease of the same kind.
            let cutoff = now - self.expiration;
            let oldest = leases
                .iter()
                .filter(|l| l.last_renewed_at <= cutoff)
                .filter(|l| {
                    l.lease.parse().is_ok_and(|p| {
                        self.network.contains(&p.subnet) && (p.subnet.prefix_len() == 32) == single
                    })
                })
                .min_by_key(|l| l.last_renewed_at);
            let Some(oldest) = oldest else {
                return Err(ApiError::new(409, "no lease available"));
            };
            let subnet: Ipv4Net = oldest
                .lease
                .overlay_subnet
                .parse()
                .map_err(|_| ApiError::new(500, "stored lease has an invalid subnet"))?;
            let lease = Lease::new(ip, subnet);
            match self
                .store
                .reclaim(&oldest.lease.underlay_ip, cutoff, &lease, now)
            {
                Ok(true) => {
                    log::info!(
                        "reclaimed expired lease {} of {} for {underlay_ip}",
                        lease.overlay_subnet,
                        oldest.lease.underlay_ip
                    );
                    return Ok(lease);
                }
                Ok(false) | Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            500,
            "could not acquire a lease: too many conflicts",
        ))
    }

    pub fn renew(&self, lease: &Lease) -> Result<(), ApiError> {
        lease
            .parse()
            .map_err(|e| ApiError::new(409, format!("invalid lease: {e}")))?;
        let now = (self.clock)();
        match self.store.lease_for_underlay(&lease.underlay_ip)? {
            Some(stored) if stored.lease != *lease => {
                return Err(ApiError::new(
                    409,
                    format!(
                        "lease mismatch: {} holds {}",
                        lease.underlay_ip, stored.lease.overlay_subnet
                    ),
                ))
            }
            Some(_) => {}
            None => match self.store.insert(lease, now) {
                Ok(()) => {
                    log::info!(
                        "renew inserted lease {} of {}",
                        lease.overlay_subnet,
                        lease.underlay_ip
                    );
                    return Ok(());
                }
                Err(StoreError::Conflict(m)) => {
                    return Err(ApiError::new(409, format!("lease conflict: {m}")))
                }
                Err(e) => return Err(e.into()),
            },
        }
        self.store.renew(&lease.underlay_ip, now)?;
        Ok(())
    }

    pub fn release(&self, underlay_ip: &str) -> Result<(), ApiError> {
        self.store.delete(underlay_ip)?;
        Ok(())
    }

    /// Non-expired leases, including those outside the current network.
    pub fn list(&self) -> Result<Vec<Lease>, ApiError> {
        let now = (self.clock)();
        Ok(self
            .store
            .leases()?
            .into_iter()
            .filter(|l| l.last_renewed_at + self.expiration > now)
            .map(|l| l.lease)
            .collect())
    }

    pub fn stats(&self) -> Result<PoolStats, ApiError> {
        let now = (self.clock)();
        let leases = self.store.leases()?;
        let total = leases.len() as u64;
        let blocks = leases
            .iter()
            .filter(|l| {
                l.lease.parse().is_ok_and(|p| {
                    self.network.contains(&p.subnet) && p.subnet.prefix_len() == self.prefix
                })
            })
            .count() as u64;
        let stale = leases
            .iter()
            .filter(|l| l.last_renewed_at + self.staleness < now)
            .count() as u64;
        Ok(PoolStats {
            total,
            free: self.pool_size().saturating_sub(blocks),
            stale,
        })
    }

    pub fn health(&self) -> Result<(), String> {
        self.store.ping().map_err(|e| e.to_string())
    }
}

#[derive(Deserialize)]
struct AcquireRequest {
    underlay_ip: String,
    #[serde(default)]
    single_overlay_ip: bool,
}

#[derive(Deserialize)]
struct ReleaseRequest {
    underlay_ip: String,
}

/// Metrics of the controller.
#[derive(Clone)]
pub struct ControllerMetrics {
    pub http: HttpMetrics,
    total: Gauge,
    free: Gauge,
    stale: Gauge,
}

impl ControllerMetrics {
    pub fn register(registry: &mut Registry) -> ControllerMetrics {
        let m = ControllerMetrics {
            http: HttpMetrics::register(registry, "overlay_controller"),
            total: Gauge::default(),
            free: Gauge::default(),
            stale: Gauge::default(),
        };
        registry.register(
            "overlay_controller_total_leases",
            "Leases stored",
            m.total.clone(),
        );
        registry.register(
            "overlay_controller_free_leases",
            "Subnets of the network not leased",
            m.free.clone(),
        );
        registry.register(
            "overlay_controller_stale_leases",
            "Leases not renewed within the staleness threshold",
            m.stale.clone(),
        );
        m
    }

    pub fn refresh(&self, controller: &Controller) {
        match controller.stats() {
            Ok(s) => {
                self.total.set(s.total as i64);
                self.free.set(s.free as i64);
                self.stale.set(s.stale as i64);
            }
            Err(e) => log::warn!("lease metrics: {}", e.message),
        }
    }
}

/// The mTLS API handler.
pub struct ApiHandler {
    pub controller: Arc<Controller>,
    pub metrics: Option<ControllerMetrics>,
}

impl ApiHandler {
    fn route(&self, req: &Request) -> (&'static str, Response) {
        let result = match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/leases/acquire") => (
                "acquire",
                decode::<AcquireRequest>(&req.body).and_then(|r| {
                    self.controller
                        .acquire(&r.underlay_ip, r.single_overlay_ip)
                        .map(|l| Response::json(200, &l))
                }),
            ),
            ("PUT", "/leases/renew") => (
                "renew",
                decode::<Lease>(&req.body).and_then(|l| {
                    self.controller
                        .renew(&l)
                        .map(|_| Response::json(200, &serde_json::json!({})))
                }),
            ),
            ("PUT", "/leases/release") => (
                "release",
                decode::<ReleaseRequest>(&req.body).and_then(|r| {
                    self.controller
                        .release(&r.underlay_ip)
                        .map(|_| Response::json(200, &serde_json::json!({})))
                }),
            ),
            ("GET", "/leases") => (
                "list",
                self.controller
                    .list()
                    .map(|l| Response::json(200, &serde_json::json!({ "leases": l }))),
            ),
            (_, "/leases/acquire" | "/leases/renew" | "/leases/release" | "/leases") => {
                ("other", Err(ApiError::new(405, "method not allowed")))
            }
            _ => ("other", Err(ApiError::new(404, "not found"))),
        };
        let (route, r) = result;
        (
            route,
            r.unwrap_or_else(|e| {
                if e.status >= 500 {
                    log::error!("{} {}: {}", req.method, req.path, e.message);
                }
                Response::error(e.status, &e.message)
            }),
        )
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("invalid request body: {e}")))
}

impl crate::http::Handler for ApiHandler {
    fn handle(&self, req: &Request) -> Response {
        let started = Instant::now();
        let (route, resp) = self.route(req);
        if let Some(m) = &self.metrics {
            m.http.observe(route, resp.status, started.elapsed());
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn controller(dir: &Path, network: &str, prefix: u8) -> (Controller, Arc<AtomicI64>) {
        let path = dir.join("db");
        let store = Arc::new(
            super::super::store::SqlLeaseStore::open(&DatabaseConfig::sqlite(
                path.to_str().unwrap(),
            ))
            .unwrap(),
        );
        let now = Arc::new(AtomicI64::new(1_000_000));
        let n = now.clone();
        (
            Controller::new(store, network.parse().unwrap(), prefix, 100, 10)
                .with_clock(move || n.load(Ordering::SeqCst)),
            now,
        )
    }

    #[test]
    fn acquire_is_stable_unique_and_exhausts_with_409() {
        let dir = tempfile::tempdir().unwrap();
        // /22 in /24s: 4 blocks, the first kept back: 3 leases.
        let (c, _) = controller(dir.path(), "10.255.0.0/22", 24);
        let a = c.acquire("10.0.0.1", false).unwrap();
        assert_eq!(
            c.acquire("10.0.0.1", false).unwrap(),
            a,
            "same cell, same lease"
        );
        let b = c.acquire("10.0.0.2", false).unwrap();
        let d = c.acquire("10.0.0.3", false).unwrap();
        let subnets: HashSet<_> = [&a, &b, &d]
            .iter()
            .map(|l| l.overlay_subnet.clone())
            .collect();
        assert_eq!(subnets.len(), 3);
        assert!(
            !subnets.contains("10.255.0.0/24"),
            "first block is not leased"
        );
        let e = c.acquire("10.0.0.4", false).unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (409, "no lease available"));
        assert_eq!(c.acquire("::1", false).unwrap_err().status, 500);
        let s = c.stats().unwrap();
        assert_eq!((s.total, s.free, s.stale), (3, 0, 0));
        // Single IPs come from the first block.
        let single = c.acquire("10.0.0.9", true).unwrap();
        assert!(
            single.overlay_subnet.starts_with("10.255.0.")
                && single.overlay_subnet.ends_with("/32")
        );
        assert_ne!(single.overlay_subnet, "10.255.0.0/32");
    }

    #[test]
    fn expiry_reclaim_and_renew_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (c, now) = controller(dir.path(), "10.255.0.0/23", 24);
        let a = c.acquire("10.0.0.1", false).unwrap();
        assert_eq!(c.acquire("10.0.0.2", false).unwrap_err().status, 409);
        now.fetch_add(50, Ordering::SeqCst);
        assert_eq!(c.stats().unwrap().stale, 1);
        c.renew(&a).unwrap();
        now.fetch_add(99, Ordering::SeqCst);
        assert_eq!(c.list().unwrap(), vec![a.clone()], "renewed, not expired");
        assert_eq!(c.acquire("10.0.0.2", false).unwrap_err().status, 409);
        now.fetch_add(1, Ordering::SeqCst);
        assert!(
            c.list().unwrap().is_empty(),
            "expired leases are not listed"
        );
        let b = c.acquire("10.0.0.2", false).unwrap();
        assert_eq!(
            b.overlay_subnet, a.overlay_subnet,
            "expired lease reclaimed"
        );
        // The old holder's renew now conflicts: non-retriable 409.
        assert_eq!(c.renew(&a).unwrap_err().status, 409);
        // A mismatching renew is 409; an invalid one too.
        let mut wrong = b.clone();
        wrong.overlay_hardware_addr = "ee:ee:00:00:00:00".into();
        assert_eq!(c.renew(&wrong).unwrap_err().status, 409);
        // Renew without a stored lease inserts it.
        c.release("10.0.0.2").unwrap();
        c.release("10.0.0.2").unwrap();
        c.renew(&b).unwrap();
        assert_eq!(c.list().unwrap(), vec![b]);
    }
}
