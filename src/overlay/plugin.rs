//! The `overlay` CNI plugin: a veth pair with point-to-point /32 addressing via 169.254.0.1,
//! static neighbours on both ends (no ARP), the MTU from the daemon, and an IP from the cell's
//! lease kept in the on-disk IPAM. DEL is idempotent and needs neither the daemon nor the netns.

use super::defaults;
use super::info::InfoError;
use super::ipam::{Ipam, IpamError};
use super::requested_ip::{self, Refused};
use crate::cni::plugin::Plugin;
use crate::cni::{code, CniResult, Env, Interface, IpConfig, NetConf, RouteEntry};
use crate::netlink::{self, format_mac, Address, Handle, Route, Scope, VethSpec};
use crate::netns;
use crate::os_error::OsError;
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use super::info::network_info;

/// The shared host-side address of every container veth.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// The plugin's own keys in the network configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayConf {
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    #[serde(default = "default_daemon_port")]
    pub daemon_port: u16,
    /// 0: take the daemon's (the VTEP's) MTU.
    #[serde(default)]
    pub mtu: u32,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_data_dir() -> String {
    defaults::DATA_DIR.into()
}
fn default_daemon_port() -> u16 {
    defaults::DAEMON_PORT
}

/// The step of ADD, DEL or CHECK that failed: the CNI error message of a plugin failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    DiscoverNetworkInfo,
    CreateVethPair,
    SetUpHost,
    SetUpContainer,
    Teardown,
    Check,
}

impl Step {
    fn msg(self) -> &'static str {
        match self {
            Step::DiscoverNetworkInfo => "discover network info",
            Step::CreateVethPair => "create veth pair",
            Step::SetUpHost => "set up host",
            Step::SetUpContainer => "set up container",
            Step::Teardown => "teardown failed",
            Step::Check => "check",
        }
    }
}

/// What the IPAM was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpamOp {
    Allocate,
    Release,
    List,
    Gc,
}

/// A failure of the plugin; [`From<Error> for crate::cni::Error`] turns it into the CNI error
/// JSON (code, message, details) at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The network configuration's plugin keys do not decode.
    Config(String),
    /// ADD could not ask the daemon for the subnet and MTU (try again later).
    NetworkInfo(InfoError),
    /// STATUS: the daemon does not answer.
    DaemonNotAvailable(InfoError),
    /// STATUS: every address of the cell's subnet is allocated.
    NoAddressFree(Ipv4Net),
    /// ADD: the requested IP (`CNI_ARGS` `IP=`, `runtimeConfig.ips`) is malformed or not one of
    /// the cell's subnet.
    RequestedIp(Refused),
    /// CHECK without the ADD result it must consult.
    NoPrevResult,
    Ipam(IpamOp, IpamError),
    /// CHECK of a container the IPAM does not know.
    UnknownContainer {
        container_id: String,
        ifname: String,
    },
    Netlink(Step, netlink::Error),
    Netns(Step, netns::Error),
    Os(Step, OsError),
    /// A state that is not as it should be (CHECK), or a daemon answer that makes no sense.
    Invalid(Step, String),
}

impl Error {
    /// The step that failed, for failures of the plumbing.
    pub fn step(&self) -> Option<Step> {
        match self {
            Error::Netlink(s, _) | Error::Netns(s, _) | Error::Os(s, _) | Error::Invalid(s, _) => {
                Some(*s)
            }
            _ => None,
        }
    }

    fn code(&self) -> u32 {
        match self {
            Error::Config(_) => code::INVALID_CONFIG,
            Error::NetworkInfo(_) => code::TRY_AGAIN_LATER,
            Error::DaemonNotAvailable(_) | Error::NoAddressFree(_) => code::NOT_AVAILABLE,
            Error::RequestedIp(_) | Error::NoPrevResult => code::INVALID_CONFIG,
            Error::Ipam(_, IpamError::Exhausted(_)) => code::PLUGIN,
            Error::Ipam(_, IpamError::Taken { .. } | IpamError::HoldsOther { .. }) => code::PLUGIN,
            Error::Ipam(_, IpamError::Io(_)) => code::IO_FAILURE,
            Error::UnknownContainer { .. } => code::UNKNOWN_CONTAINER,
            Error::Netlink(..) | Error::Netns(..) | Error::Os(..) | Error::Invalid(..) => {
                code::PLUGIN
            }
        }
    }

    fn msg(&self) -> &'static str {
        match self {
            Error::Config(_) => "invalid overlay configuration",
            Error::NetworkInfo(_) => Step::DiscoverNetworkInfo.msg(),
            Error::DaemonNotAvailable(_) => "overlay daemon not available",
            Error::Ipam(_, IpamError::Exhausted(_)) | Error::NoAddressFree(_) => {
                "no IP address available"
            }
            Error::RequestedIp(_)
            | Error::Ipam(_, IpamError::Taken { .. } | IpamError::HoldsOther { .. }) => {
                "requested IP refused"
            }
            Error::NoPrevResult => "CHECK needs prevResult",
            Error::Ipam(op, IpamError::Io(_)) => match op {
                IpamOp::Allocate => "run ipam",
                IpamOp::Release => "release IP",
                IpamOp::List => "read allocations",
                IpamOp::Gc => "gc",
            },
            Error::UnknownContainer { .. } => "no overlay IP for this container",
            Error::Netlink(s, _) | Error::Netns(s, _) | Error::Os(s, _) | Error::Invalid(s, _) => {
                s.msg()
            }
        }
    }

    fn details(&self) -> String {
        match self {
            Error::Config(d) | Error::Invalid(_, d) => d.clone(),
            Error::NetworkInfo(e) | Error::DaemonNotAvailable(e) => e.to_string(),
            Error::Ipam(_, e) => e.to_string(),
            Error::NoAddressFree(s) => IpamError::Exhausted(*s).to_string(),
            Error::RequestedIp(r) => r.to_string(),
            Error::NoPrevResult => "the result of ADD must be given as prevResult".into(),
            Error::UnknownContainer {
                container_id,
                ifname,
            } => format!("{container_id} {ifname}"),
            Error::Netlink(_, e) => e.to_string(),
            Error::Netns(_, e) => e.to_string(),
            Error::Os(_, e) => e.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.msg(), self.details())
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::cni::Error {
    fn from(e: Error) -> crate::cni::Error {
        crate::cni::Error::new(e.code(), e.msg(), e.details())
    }
}

/// Host veth name for a container IP: `s-` + the four bytes as zero-padded decimals.
pub fn host_veth_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("s-{:03}{:03}{:03}{:03}", o[0], o[1], o[2], o[3])
}

pub fn container_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0xee, 0xee, o[0], o[1], o[2], o[3]]
}

pub fn host_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0xaa, 0xaa, o[0], o[1], o[2], o[3]]
}

pub struct OverlayPlugin;

fn decode_conf(raw: &[u8]) -> Result<OverlayConf, Error> {
    serde_json::from_slice(raw).map_err(|e| Error::Config(e.to_string()))
}

struct Plumbing<'a> {
    netns: &'a str,
    ifname: &'a str,
    ip: Ipv4Addr,
    mtu: u32,
}

/// Creates the veth pair with its container end inside the netns. Nothing is left on failure.
fn create_veth_pair(h: &mut Handle, p: &Plumbing) -> Result<(), Error> {
    let netns = std::fs::File::open(p.netns).map_err(|e| {
        Error::Os(
            Step::CreateVethPair,
            OsError::io(format!("opening netns {}", p.netns), &e),
        )
    })?;
    h.create_veth(&VethSpec {
        name: host_veth_name(p.ip),
        peer_name: p.ifname.to_string(),
        mac: Some(host_mac(p.ip)),
        peer_mac: Some(container_mac(p.ip)),
        mtu: Some(p.mtu),
        peer_netns_fd: Some(netns.as_raw_fd()),
    })
    .map_err(|e| Error::Netlink(Step::CreateVethPair, e))
}

/// The host end: no IPv6, a static neighbour for the container, 169.254.0.1 peer the container's
/// IP, reverse-path filtering, up; and forwarding on.
fn set_up_host(h: &mut Handle, p: &Plumbing) -> Result<(), netlink::Error> {
    let host_name = host_veth_name(p.ip);
    let index = h.link_index(&host_name)?;
    netlink::disable_ipv6(&host_name)?;
    h.neighbour_set(index, p.ip, container_mac(p.ip))?;
    h.add_address(
        index,
        &Address {
            local: HOST_IP,
            prefix_len: 32,
            peer: Some(p.ip),
            scope: Scope::Link,
        },
    )?;
    netlink::sysctl_set(&format!("net.ipv4.conf.{host_name}.rp_filter"), "1")?;
    h.set_up(index)?;
    netlink::sysctl_set("net.ipv4.ip_forward", "1")
}

/// The container end, inside its netns: lo up, no IPv6, a static neighbour for the host side,
/// the IP peer 169.254.0.1, up, and the default route through 169.254.0.1.
fn set_up_container(ifname: &str, ip: Ipv4Addr) -> Result<(), netlink::Error> {
    let mut c = Handle::new()?;
    if let Some(lo) = c.link_by_name("lo")? {
        c.set_up(lo.index)?;
    }
    let index = c.link_index(ifname)?;
    netlink::disable_ipv6(ifname)?;
    c.neighbour_set(index, HOST_IP, host_mac(ip))?;
    c.add_address(
        index,
        &Address {
            local: ip,
            prefix_len: 32,
            peer: Some(HOST_IP),
            scope: Scope::Universe,
        },
    )?;
    c.set_up(index)?;
    c.route_add(&Route {
        dst: Ipv4Net::default(),
        gateway: Some(HOST_IP),
        oif: Some(index),
        src: None,
        scope: Scope::Universe,
        onlink: false,
    })
}

/// Creates and configures both ends. On failure after the pair exists the caller removes the
/// host end (which takes the container end with it).
fn plumb(h: &mut Handle, p: &Plumbing) -> Result<(), Error> {
    create_veth_pair(h, p)?;
    set_up_host(h, p).map_err(|e| Error::Netlink(Step::SetUpHost, e))?;
    let (ifname, ip) = (p.ifname.to_string(), p.ip);
    netns::run_in(Path::new(p.netns), move || set_up_container(&ifname, ip))
        .map_err(|e| Error::Netns(Step::SetUpContainer, e))?
        .map_err(|e| Error::Netlink(Step::SetUpContainer, e))
}

/// Deletes a link by name if it is there.
fn delete_link_named(h: &mut Handle, name: &str) -> Result<(), netlink::Error> {
    if let Some(l) = h.link_by_name(name)? {
        match h.delete_link(l.index) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How the name of a retired end of a veth pair starts (see [`retire_named`]).
pub const RETIRED_PREFIX: &str = "gone-";

/// The name a retired end takes: unique in its namespace, since an ifindex is never given to a
/// second link while the first one exists, and never an `s-` name.
pub fn retired_veth_name(index: u32) -> String {
    format!("{RETIRED_PREFIX}{index:x}")
}

/// Takes one end of a container's veth pair out of service without deleting it: down, its
/// addresses removed (and with them the routes through it), renamed.
fn retire_link(h: &mut Handle, index: u32) -> Result<(), netlink::Error> {
    h.set_down(index)?;
    for (_, a) in h.addresses(Some(index))? {
        h.delete_address(index, &a)?;
    }
    h.set_name(index, &retired_veth_name(index))
}

/// Retires the link called `name`, if there is one: the host end of a container's veth pair
/// (`s-<ip>`: down, so the container end loses its carrier; its address, and so the host's route
/// to the container, gone; renamed, so a new container given the same IP gets `s-<ip>` again),
/// or, inside the container's namespace, its end (without an address, and its name free for an
/// ADD into the same namespace: a runtime retrying). The pair goes with the container's network
/// namespace, which the kernel tears down in the background once its last reference (the
/// networker's bind mount, the container's processes) is gone. Deleting the link here instead
/// waits in the kernel for pending RCU callbacks (`rcu_barrier` in `netdev_run_todo`: 18-45 ms
/// on the 2-core test machine, against well under 1 ms for retiring it).
fn retire_named(h: &mut Handle, name: &str) -> Result<(), netlink::Error> {
    match h.link_by_name(name)? {
        Some(link) => retire_link(h, link.index),
        None => Ok(()),
    }
}

fn remove_host_veth(ip: Ipv4Addr) -> Result<(), netlink::Error> {
    delete_link_named(&mut Handle::new()?, &host_veth_name(ip))
}

/// CHECK inside the container: the interface is up with its IP peer 169.254.0.1, and the
/// default route goes through 169.254.0.1.
fn check_container(ifname: &str, ip: Ipv4Addr) -> Result<(), Error> {
    let nl = |e| Error::Netlink(Step::Check, e);
    let invalid = |m: String| Error::Invalid(Step::Check, m);
    let mut c = Handle::new().map_err(nl)?;
    let l = c
        .link_by_name(ifname)
        .map_err(nl)?
        .ok_or_else(|| invalid(format!("{ifname} missing in container")))?;
    if !l.up {
        return Err(invalid(format!("{ifname} is down")));
    }
    let has_ip = c
        .addresses(Some(l.index))
        .map_err(nl)?
        .iter()
        .any(|(_, a)| a.local == ip && a.peer == Some(HOST_IP));
    if !has_ip {
        return Err(invalid(format!("{ifname} lacks {ip} peer {HOST_IP}")));
    }
    let has_default = c
        .routes()
        .map_err(nl)?
        .iter()
        .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(HOST_IP));
    if !has_default {
        return Err(invalid("default route via 169.254.0.1 missing".into()));
    }
    Ok(())
}

impl OverlayPlugin {
    fn run_add(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<CniResult, Error> {
        let oc = decode_conf(raw)?;
        let requested = requested_ip::requested(&env.args, conf.runtime_config.as_ref())
            .map_err(Error::RequestedIp)?;
        let (subnet, daemon_mtu) = cell_subnet(oc.daemon_port)?;
        if let Some(ip) = requested {
            requested_ip::check_in(ip, subnet).map_err(Error::RequestedIp)?;
        }
        let mtu = if oc.mtu > 0 { oc.mtu } else { daemon_mtu };
        let ipam = Ipam::new(Path::new(&oc.data_dir), &conf.name);
        let (ip, new) = ipam
            .allocate(subnet, &env.container_id, &env.ifname, requested)
            .map_err(|e| Error::Ipam(IpamOp::Allocate, e))?;
        let plumbing = Plumbing {
            netns: &env.netns,
            ifname: &env.ifname,
            ip,
            mtu,
        };
        let plumbed = Handle::new()
            .map_err(|e| Error::Netlink(Step::CreateVethPair, e))
            .and_then(|mut h| plumb(&mut h, &plumbing));
        if let Err(e) = plumbed {
            // Roll back: the host end takes the container end with it; the IP goes back.
            if e.step() != Some(Step::CreateVethPair) {
                let _ = remove_host_veth(ip);
            }
            if new {
                let _ = ipam.release(&env.container_id, &env.ifname);
            }
            return Err(e);
        }
        Ok(add_result(conf, env, ip, mtu))
    }

    /// The container loses its address and its way out, the host every route to it, and only
    /// then the IPAM the address; the veth pair itself, both ends renamed, is left to the
    /// container's network namespace (see [`retire_named`]).
    fn run_del(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error> {
        let oc = decode_conf(raw)?;
        let ipam = Ipam::new(Path::new(&oc.data_dir), &conf.name);
        let held: Vec<Ipv4Addr> = ipam
            .allocations()
            .map_err(|e| Error::Ipam(IpamOp::List, e))?
            .into_iter()
            .filter(|a| a.container_id == env.container_id && a.ifname == env.ifname)
            .map(|a| a.ip)
            .collect();
        if !env.netns.is_empty() && Path::new(&env.netns).exists() {
            let ifname = env.ifname.clone();
            let inside = netns::run_in(Path::new(&env.netns), move || {
                retire_named(&mut Handle::new()?, &ifname)
            });
            match inside {
                Ok(r) => r.map_err(|e| Error::Netlink(Step::Teardown, e))?,
                // The namespace went away meanwhile (or the path is no longer a namespace):
                // nothing is left inside.
                Err(e) if e.is_gone() => {}
                Err(e) => return Err(Error::Netns(Step::Teardown, e)),
            }
        }
        let mut h = Handle::new().map_err(|e| Error::Netlink(Step::Teardown, e))?;
        for ip in &held {
            retire_named(&mut h, &host_veth_name(*ip))
                .map_err(|e| Error::Netlink(Step::Teardown, e))?;
        }
        ipam.release(&env.container_id, &env.ifname)
            .map_err(|e| Error::Ipam(IpamOp::Release, e))?;
        Ok(())
    }

    fn run_check(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error> {
        let oc = decode_conf(raw)?;
        let ipam = Ipam::new(Path::new(&oc.data_dir), &conf.name);
        let alloc = ipam
            .allocations()
            .map_err(|e| Error::Ipam(IpamOp::List, e))?
            .into_iter()
            .find(|a| a.container_id == env.container_id && a.ifname == env.ifname)
            .ok_or_else(|| Error::UnknownContainer {
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
            })?;
        let ip = alloc.ip;
        let prev = conf.prev_result.as_ref().ok_or(Error::NoPrevResult)?;
        check_prev_result(prev, env, ip)?;
        let nl = |e| Error::Netlink(Step::Check, e);
        let host_name = host_veth_name(ip);
        let host = Handle::new()
            .and_then(|mut h| h.link_by_name(&host_name))
            .map_err(nl)?
            .ok_or_else(|| Error::Invalid(Step::Check, format!("host veth {host_name} missing")))?;
        if !host.up {
            return Err(Error::Invalid(
                Step::Check,
                format!("host veth {} is down", host.name),
            ));
        }
        let ifname = env.ifname.clone();
        netns::run_in(Path::new(&env.netns), move || check_container(&ifname, ip))
            .map_err(|e| Error::Netns(Step::Check, e))?
    }

    fn run_gc(&self, conf: &NetConf, raw: &[u8]) -> Result<(), Error> {
        let oc = decode_conf(raw)?;
        let valid: HashSet<(String, String)> = oc
            .valid_attachments
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        let ipam = Ipam::new(Path::new(&oc.data_dir), &conf.name);
        let released = ipam
            .release_where(|a| !valid.contains(&(a.container_id.clone(), a.ifname.clone())))
            .map_err(|e| Error::Ipam(IpamOp::Gc, e))?;
        for ip in released {
            if let Err(e) = remove_host_veth(ip) {
                log::warn!("gc: {e}");
            }
        }
        Ok(())
    }

    /// Ready: the daemon answers and an address can be allocated.
    fn run_status(&self, conf: &NetConf, raw: &[u8]) -> Result<(), Error> {
        let oc = decode_conf(raw)?;
        let subnet = cell_subnet(oc.daemon_port)
            .map_err(|e| match e {
                Error::NetworkInfo(i) => Error::DaemonNotAvailable(i),
                other => other,
            })?
            .0;
        let free = Ipam::new(Path::new(&oc.data_dir), &conf.name)
            .free(subnet)
            .map_err(|e| Error::Ipam(IpamOp::List, e))?;
        if free == 0 {
            return Err(Error::NoAddressFree(subnet));
        }
        Ok(())
    }
}

/// The cell's subnet and MTU, from the daemon.
fn cell_subnet(daemon_port: u16) -> Result<(Ipv4Net, u32), Error> {
    let info = network_info(daemon_port).map_err(Error::NetworkInfo)?;
    let subnet = info.overlay_subnet.parse().map_err(|e| {
        Error::Invalid(
            Step::DiscoverNetworkInfo,
            format!("subnet {}: {e}", info.overlay_subnet),
        )
    })?;
    Ok((subnet, info.mtu))
}

/// CHECK's reading of `prevResult` (the spec's MUST): the container interface it names is
/// `CNI_IFNAME` in `CNI_NETNS`, and the IPv4 addresses it gives that interface are the one the
/// container holds.
fn check_prev_result(prev: &serde_json::Value, env: &Env, ip: Ipv4Addr) -> Result<(), Error> {
    let invalid = |m: String| Error::Invalid(Step::Check, m);
    let prev: CniResult = serde_json::from_value(prev.clone())
        .map_err(|e| invalid(format!("prevResult does not decode: {e}")))?;
    let ifname = &env.ifname;
    let index = prev
        .interfaces
        .iter()
        .position(|i| &i.name == ifname && !i.sandbox.is_empty())
        .ok_or_else(|| invalid(format!("prevResult names no container interface {ifname}")))?;
    let sandbox = &prev.interfaces[index].sandbox;
    if sandbox != &env.netns {
        return Err(invalid(format!(
            "prevResult puts {ifname} in sandbox {sandbox}, not {}",
            env.netns
        )));
    }
    let mac = &prev.interfaces[index].mac;
    if !mac.is_empty() && !mac.eq_ignore_ascii_case(&format_mac(&container_mac(ip))) {
        return Err(invalid(format!(
            "prevResult gives {ifname} MAC {mac}, the container's is {}",
            format_mac(&container_mac(ip))
        )));
    }
    let mut named = prev
        .ips
        .iter()
        .filter(|c| c.interface.is_none_or(|i| i == index))
        .filter_map(|c| c.address.split('/').next()?.parse::<Ipv4Addr>().ok())
        .peekable();
    if named.peek().is_none() {
        return Err(invalid(format!(
            "prevResult gives {ifname} no IPv4 address (the container has {ip})"
        )));
    }
    match named.find(|a| *a != ip) {
        Some(other) => Err(invalid(format!(
            "prevResult names {other} for {ifname}, but the container has {ip}"
        ))),
        None => Ok(()),
    }
}

fn add_result(conf: &NetConf, env: &Env, ip: Ipv4Addr, mtu: u32) -> CniResult {
    CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: host_veth_name(ip),
                mac: format_mac(&host_mac(ip)),
                mtu: Some(mtu),
                ..Default::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: format_mac(&container_mac(ip)),
                mtu: Some(mtu),
                sandbox: env.netns.clone(),
                ..Default::default()
            },
        ],
        ips: vec![IpConfig {
            address: format!("{ip}/32"),
            gateway: Some(HOST_IP.to_string()),
            interface: Some(1),
            ..Default::default()
        }],
        routes: vec![RouteEntry {
            dst: "0.0.0.0/0".into(),
            gw: Some(HOST_IP.to_string()),
            ..Default::default()
        }],
        dns: conf.dns.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// The CNI edge: typed failures become the spec's error JSON.
impl Plugin for OverlayPlugin {
    fn add(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<CniResult, crate::cni::Error> {
        Ok(self.run_add(env, conf, raw)?)
    }
    fn del(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), crate::cni::Error> {
        Ok(self.run_del(env, conf, raw)?)
    }
    fn check(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), crate::cni::Error> {
        Ok(self.run_check(env, conf, raw)?)
    }
    fn gc(&self, _env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), crate::cni::Error> {
        Ok(self.run_gc(conf, raw)?)
    }
    fn status(&self, _env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), crate::cni::Error> {
        Ok(self.run_status(conf, raw)?)
    }
}

/// Where a network's allocations live (for tools and tests).
pub fn ipam_dir(data_dir: &Path, network_name: &str) -> PathBuf {
    data_dir.join("ipam").join(network_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_follow_the_scheme() {
        let ip: Ipv4Addr = "10.255.211.40".parse().unwrap();
        assert_eq!(host_veth_name(ip), "s-010255211040");
        assert_eq!(format_mac(&container_mac(ip)), "ee:ee:0a:ff:d3:28");
        assert_eq!(format_mac(&host_mac(ip)), "aa:aa:0a:ff:d3:28");
    }

    #[test]
    fn failures_become_the_cni_codes_and_messages() {
        let os = OsError::io("writing x", &std::io::Error::from_raw_os_error(28));
        let subnet: Ipv4Net = "10.255.5.0/29".parse().unwrap();
        let cases = [
            (
                Error::Config("bad".into()),
                7,
                "invalid overlay configuration",
            ),
            (
                Error::Ipam(IpamOp::Allocate, IpamError::Exhausted(subnet)),
                100,
                "no IP address available",
            ),
            (
                Error::Ipam(IpamOp::Allocate, IpamError::Io(os.clone())),
                5,
                "run ipam",
            ),
            (
                Error::Ipam(IpamOp::Release, IpamError::Io(os.clone())),
                5,
                "release IP",
            ),
            (
                Error::UnknownContainer {
                    container_id: "c".into(),
                    ifname: "eth0".into(),
                },
                3,
                "no overlay IP for this container",
            ),
            (Error::Os(Step::CreateVethPair, os), 100, "create veth pair"),
            (
                Error::Netns(Step::SetUpContainer, netns::Error::Panicked),
                100,
                "set up container",
            ),
        ];
        for (e, code, msg) in cases {
            let cni: crate::cni::Error = e.into();
            assert_eq!((cni.code, cni.msg.as_str()), (code, msg));
        }
    }
}
