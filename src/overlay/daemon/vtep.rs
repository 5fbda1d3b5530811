//! The cell's VXLAN tunnel endpoint: discovery of an existing lease from it, creation (GBP,
//! learning off, MAC and address from the lease), and convergence of routes, permanent
//! neighbours and FDB entries towards the other cells' leases. All through [`crate::netlink`].

use super::error::Error;
use crate::netlink::{self, Address, FdbEntry, Handle, Neighbour, Route, Scope, VxlanSpec};
use crate::overlay::{vtep_mac, ParsedLease};
use ipnet::Ipv4Net;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// VTEP settings from the daemon's config.
#[derive(Debug, Clone)]
pub struct VtepConfig {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub underlay_ip: Ipv4Addr,
    /// The parent device; found from `underlay_ip` when `None`.
    pub underlay_interface: Option<String>,
    pub overlay_network: Ipv4Net,
    pub subnet_prefix_length: u8,
}

/// What an existing VTEP says about the lease it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub index: u32,
    pub subnet: Ipv4Net,
    pub mac: [u8; 6],
    /// The network of the VTEP's address (its mask is the overlay network's).
    pub network: Ipv4Net,
    pub mtu: u32,
}

/// Reads the lease back from the VTEP: MAC, first IPv4 address and its prefix length.
pub fn discover(h: &mut Handle, cfg: &VtepConfig) -> Result<Option<Discovered>, Error> {
    let Some(link) = h.link_by_name(&cfg.name)? else {
        return Ok(None);
    };
    let Some(mac) = link.mac else {
        return Ok(None);
    };
    let Some((_, addr)) = h.addresses(Some(link.index))?.into_iter().next() else {
        return Ok(None);
    };
    let prefix = if cfg.subnet_prefix_length >= addr.prefix_len {
        cfg.subnet_prefix_length
    } else {
        32
    };
    let net = |prefix: u8| {
        Ipv4Net::new(addr.local, prefix)
            .map(|n| n.trunc())
            .map_err(|_| Error::BadVtepAddress {
                address: addr.local,
                prefix,
            })
    };
    let subnet = net(prefix)?;
    let network = net(addr.prefix_len)?;
    Ok(Some(Discovered {
        index: link.index,
        subnet,
        mac,
        network,
        mtu: link.mtu,
    }))
}

/// Finds the link that holds `ip`.
fn interface_of(h: &mut Handle, ip: Ipv4Addr) -> Result<u32, Error> {
    h.addresses(None)?
        .into_iter()
        .find(|(_, a)| a.local == ip)
        .map(|(i, _)| i)
        .ok_or(Error::NoUnderlayInterface(ip))
}

/// Creates the VTEP for `lease` and returns (index, mtu). On any failure the half-made device is
/// removed.
pub fn create(h: &mut Handle, cfg: &VtepConfig, lease: &ParsedLease) -> Result<(u32, u32), Error> {
    let parent = match &cfg.underlay_interface {
        Some(name) => h.link_index(name)?,
        None => interface_of(h, cfg.underlay_ip)?,
    };
    h.create_vxlan(&VxlanSpec {
        name: cfg.name.clone(),
        vni: cfg.vni,
        port: cfg.port,
        local: Some(cfg.underlay_ip),
        parent_index: Some(parent),
        mac: Some(vtep_mac(lease.subnet)),
        mtu: None,
        gbp: true,
        learning: false,
    })?;
    let finish = |h: &mut Handle| -> Result<(u32, u32), Error> {
        let link = h
            .link_by_name(&cfg.name)?
            .ok_or_else(|| Error::VtepVanished(cfg.name.clone()))?;
        // A nolearning VTEP drops IPv6 neighbour discovery: no IPv6 on it at all.
        netlink::disable_ipv6(&cfg.name)?;
        h.add_address(
            link.index,
            &Address {
                local: lease.subnet.network(),
                prefix_len: cfg.overlay_network.prefix_len(),
                peer: None,
                scope: Scope::Link,
            },
        )?;
        h.set_up(link.index)?;
        Ok((link.index, link.mtu))
    };
    match finish(h) {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Ok(Some(l)) = h.link_by_name(&cfg.name) {
                let _ = h.delete_link(l.index);
            }
            Err(e)
        }
    }
}

pub fn delete(h: &mut Handle, name: &str) -> Result<(), Error> {
    if let Some(l) = h.link_by_name(name)? {
        h.delete_link(l.index)?;
    }
    Ok(())
}

/// Changes made by one convergence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvergeStats {
    pub desired: usize,
    pub outside_network: usize,
    pub added: usize,
    pub removed: usize,
}

/// Makes the VTEP's routes, neighbours and FDB match `leases`: for each other lease inside
/// `network`, a route to its subnet via its first IP (source: our first IP), a permanent
/// neighbour (first IP -> MAC) and a permanent FDB entry (MAC -> underlay IP); everything else
/// on the VTEP that points into the overlay is removed. Only differences are written.
pub fn converge(
    h: &mut Handle,
    vtep_index: u32,
    local: &ParsedLease,
    network: Ipv4Net,
    leases: &[ParsedLease],
) -> Result<ConvergeStats, Error> {
    let mut stats = ConvergeStats::default();
    let desired = desired(local, network, leases, &mut stats);
    let present = Present {
        routes: h
            .routes()?
            .into_iter()
            .filter(|r| {
                r.oif == Some(vtep_index) && r.gateway.is_some_and(|g| network.contains(&g))
            })
            .collect(),
        neighbours: h.neighbours(vtep_index)?,
        fdb: h.fdb_entries(vtep_index)?,
    };
    let mut changes = Changes {
        h,
        vtep_index,
        stats,
        failed: 0,
        first_error: None,
    };
    changes.add_missing(&desired, &present, local.subnet.network());
    changes.remove_stale(&desired, &present);
    match changes.first_error {
        None => Ok(changes.stats),
        Some(first) => Err(Error::Converge {
            failed: changes.failed,
            first,
        }),
    }
}

/// The other cells' leases inside `network`, by subnet.
fn desired(
    local: &ParsedLease,
    network: Ipv4Net,
    leases: &[ParsedLease],
    stats: &mut ConvergeStats,
) -> HashMap<Ipv4Net, ParsedLease> {
    let mut desired = HashMap::new();
    for l in leases {
        if l.subnet == local.subnet {
            continue;
        }
        if !network.contains(&l.subnet) {
            stats.outside_network += 1;
            continue;
        }
        desired.insert(l.subnet, *l);
    }
    stats.desired = desired.len();
    desired
}

/// What the VTEP has now.
struct Present {
    routes: Vec<Route>,
    neighbours: Vec<Neighbour>,
    fdb: Vec<FdbEntry>,
}

/// The writes of one convergence: counted; of the failures, how many and the first.
struct Changes<'a> {
    h: &'a mut Handle,
    vtep_index: u32,
    stats: ConvergeStats,
    failed: usize,
    first_error: Option<netlink::Error>,
}

impl Changes<'_> {
    fn added(&mut self, result: netlink::Result<()>) {
        match result {
            Ok(()) => self.stats.added += 1,
            Err(e) => self.failed(e),
        }
    }

    /// A removal of something already gone counts as neither.
    fn removed(&mut self, result: netlink::Result<()>) {
        match result {
            Ok(()) => self.stats.removed += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => self.failed(e),
        }
    }

    fn failed(&mut self, e: netlink::Error) {
        self.failed += 1;
        self.first_error.get_or_insert(e);
    }

    fn add_missing(
        &mut self,
        desired: &HashMap<Ipv4Net, ParsedLease>,
        present: &Present,
        src: Ipv4Addr,
    ) {
        let index = self.vtep_index;
        for l in desired.values() {
            let gw = l.subnet.network();
            let route = Route {
                dst: l.subnet,
                gateway: Some(gw),
                oif: Some(index),
                src: Some(src),
                scope: Scope::Universe,
                onlink: true,
            };
            if !present
                .routes
                .iter()
                .any(|r| r.dst == route.dst && r.gateway == route.gateway && r.src == route.src)
            {
                let result = self.h.route_replace(&route);
                self.added(result);
            }
            if !present
                .neighbours
                .iter()
                .any(|n| n.ip == gw && n.mac == Some(l.mac) && n.permanent)
            {
                let result = self.h.neighbour_set(index, gw, l.mac);
                self.added(result);
            }
            if !present
                .fdb
                .iter()
                .any(|f| f.mac == l.mac && f.dst == Some(l.underlay_ip))
            {
                let result = self.h.fdb_set(index, l.mac, l.underlay_ip);
                self.added(result);
            }
        }
    }

    fn remove_stale(&mut self, desired: &HashMap<Ipv4Net, ParsedLease>, present: &Present) {
        let index = self.vtep_index;
        let wanted_gw: HashSet<Ipv4Addr> = desired.keys().map(|s| s.network()).collect();
        let wanted_mac: HashMap<[u8; 6], Ipv4Addr> =
            desired.values().map(|l| (l.mac, l.underlay_ip)).collect();
        for r in present
            .routes
            .iter()
            .filter(|r| !desired.contains_key(&r.dst))
        {
            let result = self.h.route_delete(r);
            self.removed(result);
        }
        for n in present
            .neighbours
            .iter()
            .filter(|n| !wanted_gw.contains(&n.ip))
        {
            let result = self.h.neighbour_delete(index, n.ip);
            self.removed(result);
        }
        for f in present.fdb.iter().filter(|f| f.permanent) {
            let keep = wanted_mac
                .get(&f.mac)
                .is_some_and(|dst| f.dst == Some(*dst));
            if !keep {
                let result = self.h.fdb_delete(index, f.mac, f.dst);
                self.removed(result);
            }
        }
    }
}
