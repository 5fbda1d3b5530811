//! The lease logic, independent of HTTP: hands every cell a subnet of the overlay network
//! (acquire, renew, release, list), reclaims expired leases, and counts the pool for metrics.

use super::error::{Error, ErrorKind};
use crate::overlay::store::{LeaseStore, StoreError, StoredLease};
use crate::overlay::{now_seconds, Lease};
use ipnet::Ipv4Net;
use rand::seq::SliceRandom;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

const ATTEMPTS: usize = 10;

/// What one try at acquiring works from: who asks, for a block or a single IP, the store's
/// leases as just read, and the time.
struct Wanted {
    ip: Ipv4Addr,
    single: bool,
    leases: Vec<StoredLease>,
    now: i64,
}

/// One try at leasing a subnet.
enum Attempt {
    Leased(Lease),
    /// Another controller changed the store meanwhile: read it again.
    Raced,
    NothingFree,
}

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

    pub fn acquire(&self, underlay_ip: &str, single: bool) -> Result<Lease, Error> {
        let ip: Ipv4Addr = underlay_ip
            .parse()
            .map_err(|_| ErrorKind::InvalidUnderlayIp(underlay_ip.to_string()))?;
        let now = (self.clock)();
        if let Some(lease) = self.keep_existing(underlay_ip, now)? {
            return Ok(lease);
        }
        for _ in 0..ATTEMPTS {
            let wanted = Wanted {
                ip,
                single,
                leases: self.store.leases()?,
                now,
            };
            match self.lease_free_subnet(&wanted)? {
                Attempt::Leased(lease) => return Ok(lease),
                Attempt::Raced => continue,
                Attempt::NothingFree => {}
            }
            match self.reclaim_expired(&wanted)? {
                Attempt::Leased(lease) => return Ok(lease),
                Attempt::Raced => continue,
                Attempt::NothingFree => return Err(ErrorKind::NoLeaseAvailable.into()),
            }
        }
        Err(ErrorKind::TooManyConflicts.into())
    }

    /// The lease `underlay_ip` already holds, renewed, when it is inside the network; a lease
    /// outside it (the network was changed) is deleted.
    fn keep_existing(&self, underlay_ip: &str, now: i64) -> Result<Option<Lease>, Error> {
        let Some(existing) = self.store.lease_for_underlay(underlay_ip)? else {
            return Ok(None);
        };
        let inside = existing
            .lease
            .parse()
            .map(|p| self.network.contains(&p.subnet))
            .unwrap_or(false);
        if inside {
            self.store.renew(underlay_ip, now)?;
            return Ok(Some(existing.lease));
        }
        log::info!(
            "lease {} of {underlay_ip} is outside {}; replacing it",
            existing.lease.overlay_subnet,
            self.network
        );
        self.store.delete(underlay_ip)?;
        Ok(None)
    }

    /// Leases a random subnet nobody holds.
    fn lease_free_subnet(&self, w: &Wanted) -> Result<Attempt, Error> {
        let taken: HashSet<String> = w
            .leases
            .iter()
            .map(|l| l.lease.overlay_subnet.clone())
            .collect();
        let free: Vec<Ipv4Net> = if w.single {
            self.single_pool()
                .filter(|s| !taken.contains(&s.to_string()))
                .collect()
        } else {
            self.block_pool()
                .filter(|s| !taken.contains(&s.to_string()))
                .collect()
        };
        let Some(subnet) = free.choose(&mut rand::thread_rng()) else {
            return Ok(Attempt::NothingFree);
        };
        let lease = Lease::new(w.ip, *subnet);
        match self.store.insert(&lease, w.now) {
            Ok(()) => {
                log::info!("leased {} to {}", lease.overlay_subnet, w.ip);
                Ok(Attempt::Leased(lease))
            }
            Err(StoreError::Conflict(m)) => {
                log::debug!("acquire race: {m}");
                Ok(Attempt::Raced)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes over the oldest expired lease of the same kind (block or single IP).
    fn reclaim_expired(&self, w: &Wanted) -> Result<Attempt, Error> {
        let cutoff = w.now - self.expiration;
        let oldest = w
            .leases
            .iter()
            .filter(|l| l.last_renewed_at <= cutoff)
            .filter(|l| {
                l.lease.parse().is_ok_and(|p| {
                    self.network.contains(&p.subnet) && (p.subnet.prefix_len() == 32) == w.single
                })
            })
            .min_by_key(|l| l.last_renewed_at);
        let Some(oldest) = oldest else {
            return Ok(Attempt::NothingFree);
        };
        let subnet: Ipv4Net = oldest
            .lease
            .overlay_subnet
            .parse()
            .map_err(|_| ErrorKind::DamagedStoredLease(oldest.lease.overlay_subnet.clone()))?;
        let lease = Lease::new(w.ip, subnet);
        match self
            .store
            .reclaim(&oldest.lease.underlay_ip, cutoff, &lease, w.now)
        {
            Ok(true) => {
                log::info!(
                    "reclaimed expired lease {} of {} for {}",
                    lease.overlay_subnet,
                    oldest.lease.underlay_ip,
                    w.ip
                );
                Ok(Attempt::Leased(lease))
            }
            Ok(false) | Err(StoreError::Conflict(_)) => Ok(Attempt::Raced),
            Err(e) => Err(e.into()),
        }
    }

    pub fn renew(&self, lease: &Lease) -> Result<(), Error> {
        lease
            .parse()
            .map_err(|e| ErrorKind::InvalidLease(e.to_string()))?;
        let now = (self.clock)();
        match self.store.lease_for_underlay(&lease.underlay_ip)? {
            Some(stored) if stored.lease != *lease => {
                return Err(ErrorKind::LeaseMismatch {
                    underlay_ip: lease.underlay_ip.clone(),
                    held: stored.lease.overlay_subnet,
                }
                .into())
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
                Err(StoreError::Conflict(m)) => return Err(ErrorKind::LeaseConflict(m).into()),
                Err(e) => return Err(e.into()),
            },
        }
        self.store.renew(&lease.underlay_ip, now)?;
        Ok(())
    }

    pub fn release(&self, underlay_ip: &str) -> Result<(), Error> {
        self.store.delete(underlay_ip)?;
        Ok(())
    }

    /// Non-expired leases, including those outside the current network.
    pub fn list(&self) -> Result<Vec<Lease>, Error> {
        let now = (self.clock)();
        Ok(self
            .store
            .leases()?
            .into_iter()
            .filter(|l| l.last_renewed_at + self.expiration > now)
            .map(|l| l.lease)
            .collect())
    }

    pub fn stats(&self) -> Result<PoolStats, Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::controller::DatabaseConfig;
    use std::path::Path;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn controller(dir: &Path, network: &str, prefix: u8) -> (Controller, Arc<AtomicI64>) {
        let path = dir.join("db");
        let store = Arc::new(
            crate::overlay::store::SqlLeaseStore::open(&DatabaseConfig::sqlite(
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
        assert_eq!(e.kind, ErrorKind::NoLeaseAvailable);
        assert_eq!(
            (e.status, e.to_string().as_str()),
            (409, "no lease available")
        );
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
}
