//! The `overlay` CNI plugin: a veth pair with point-to-point /32 addressing via 169.254.0.1,
//! static neighbours on both ends (no ARP), the MTU from the daemon, and an IP from the cell's
//! lease kept in the on-disk IPAM. DEL is idempotent and needs neither the daemon nor the netns.

use super::daemon::NetworkInfo;
use super::ipam::{Ipam, IpamError};
use crate::cni::plugin::Plugin;
use crate::cni::{code, CniResult, Env, Error, Interface, IpConfig, NetConf, RouteEntry};
use crate::netlink::{self, format_mac, Address, Handle, Route, Scope, VethSpec};
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    "/var/vcap/data/overlay".into()
}
fn default_daemon_port() -> u16 {
    23954
}

fn plugin_err(msg: &str, details: impl std::fmt::Display) -> Error {
    Error::new(code::PLUGIN, msg, details.to_string())
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

/// Asks the daemon for the subnet and MTU (`GET /` on loopback).
pub fn network_info(port: u16) -> Result<NetworkInfo, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting to overlay daemon at {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("asking overlay daemon: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("reading overlay daemon answer: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed overlay daemon answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "overlay daemon answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("decoding overlay daemon answer: {e}"))
}

pub struct OverlayPlugin;

fn decode_conf(raw: &[u8]) -> Result<OverlayConf, Error> {
    serde_json::from_slice(raw).map_err(|e| {
        Error::new(
            code::INVALID_CONFIG,
            "invalid overlay configuration",
            e.to_string(),
        )
    })
}

struct Plumbing<'a> {
    netns: &'a str,
    ifname: &'a str,
    ip: Ipv4Addr,
    mtu: u32,
}

/// Creates and configures both ends. On failure the caller removes the host end.
fn plumb(h: &mut Handle, p: &Plumbing) -> Result<(), Error> {
    let netns = std::fs::File::open(p.netns).map_err(|e| {
        plugin_err(
            "create veth pair",
            format!("opening netns {}: {e}", p.netns),
        )
    })?;
    let host_name = host_veth_name(p.ip);
    h.create_veth(&VethSpec {
        name: host_name.clone(),
        peer_name: p.ifname.to_string(),
        mac: Some(host_mac(p.ip)),
        peer_mac: Some(container_mac(p.ip)),
        mtu: Some(p.mtu),
        peer_netns_fd: Some(netns.as_raw_fd()),
    })
    .map_err(|e| plugin_err("create veth pair", e))?;
    let setup_host = |h: &mut Handle| -> Result<(), String> {
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
        netlink::sysctl_set("net.ipv4.ip_forward", "1")?;
        Ok(())
    };
    setup_host(h).map_err(|e| plugin_err("set up host", e))?;
    let (ifname, ip) = (p.ifname.to_string(), p.ip);
    crate::netns::run_in(Path::new(p.netns), move || -> Result<(), String> {
        let mut c = Handle::new()?;
        if let Some(lo) = c.link_by_name("lo")? {
            c.set_up(lo.index)?;
        }
        let index = c.link_index(&ifname)?;
        netlink::disable_ipv6(&ifname)?;
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
        })?;
        Ok(())
    })
    .and_then(|r| r)
    .map_err(|e| plugin_err("set up container", e))
}

fn remove_host_veth(ip: Ipv4Addr) -> Result<(), String> {
    let mut h = Handle::new()?;
    if let Some(l) = h.link_by_name(&host_veth_name(ip))? {
        match h.delete_link(l.index) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

impl Plugin for OverlayPlugin {
    fn add(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<CniResult, Error> {
        let oc = decode_conf(raw)?;
        let info = network_info(oc.daemon_port)
            .map_err(|e| Error::new(code::TRY_AGAIN_LATER, "discover network info", e))?;
        let subnet: Ipv4Net = info.overlay_subnet.parse().map_err(|e| {
            plugin_err(
                "discover network info",
                format!("subnet {}: {e}", info.overlay_subnet),
            )
        })?;
        let mtu = if oc.mtu > 0 { oc.mtu } else { info.mtu };
        let ipam = Ipam::new(Path::new(&oc.data_dir), &conf.name);
        let (ip, new) = ipam
            .allocate(subnet, &env.container_id, &env.ifname)
            .map_err(|e| match e {
                IpamError::Exhausted(_) => plugin_err("no IP address available", e),
                IpamError::Io(m) => Error::new(code::IO_FAILURE, "run ipam", m),
            })?;
        let mut h = Handle::new().map_err(|e| plugin_err("create veth pair", e))?;
        let plumbing = Plumbing {
            netns: &env.netns,
            ifname: &env.ifname,
            ip,
            mtu,
        };
        if let Err(e) = plumb(&mut h, &plumbing) {
            // Roll back: the host end takes the container end with it; the IP goes back.
            if !e.msg.contains("create veth pair") {
                let _ = remove_host_veth(ip);
            }
            if new {
                let _ = ipam.release(&env.container_id, &env.ifname);
            }
            return Err(e);
        }
        Ok(CniResult {
            cni_version: conf.cni_version.clone(),
            interfaces: vec![
                Interface {
                    name: host_veth_name(ip),
                    mac: format_mac(&host_mac(ip)),
                    mtu: Some(mtu),
                    sandbox: String::new(),
                },
                Interface {
                    name: env.ifname.clone(),
                    mac: format_mac(&container_mac(ip)),
                    mtu: Some(mtu),
                    sandbox: env.netns.clone(),
                },
            ],
            ips: vec![IpConfig {
                version: None,
                address: format!("{ip}/32"),
                gateway: Some(HOST_IP.to_string()),
                interface: Some(1),
            }],
            routes: vec![RouteEntry {
                dst: "0.0.0.0/0".into(),
                gw: Some(HOST_IP.to_string()),
            }],
            dns: conf.dns.clone().unwrap_or_default(),
        })
    }

    fn del(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error> {
        let oc = decode_conf(raw)?;
        let ipam = Ipam::new(Path::new(&oc.data_dir), &conf.name);
        let released = ipam
            .release(&env.container_id, &env.ifname)
            .map_err(|e| Error::new(code::IO_FAILURE, "release IP", e.to_string()))?;
        if !env.netns.is_empty() && Path::new(&env.netns).exists() {
            let ifname = env.ifname.clone();
            let r = crate::netns::run_in(Path::new(&env.netns), move || -> Result<(), String> {
                let mut c = Handle::new()?;
                if let Some(l) = c.link_by_name(&ifname)? {
                    match c.delete_link(l.index) {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(())
            });
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(plugin_err("teardown failed", e)),
                // The namespace went away meanwhile (or the path is no longer a namespace):
                // nothing is left inside.
                Err(e) if e.contains("No such file") || e.contains("EINVAL") => {}
                Err(e) => return Err(plugin_err("teardown failed", e)),
            }
        }
        for ip in released {
            remove_host_veth(ip).map_err(|e| plugin_err("teardown failed", e))?;
        }
        Ok(())
    }

    fn check(&self, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error> {
        let oc = decode_conf(raw)?;
        let ipam = Ipam::new(Path::new(&oc.data_dir), &conf.name);
        let alloc = ipam
            .allocations()
            .map_err(|e| Error::new(code::IO_FAILURE, "read allocations", e.to_string()))?
            .into_iter()
            .find(|a| a.container_id == env.container_id && a.ifname == env.ifname)
            .ok_or_else(|| {
                Error::new(
                    code::UNKNOWN_CONTAINER,
                    "no overlay IP for this container",
                    format!("{} {}", env.container_id, env.ifname),
                )
            })?;
        let ip = alloc.ip;
        let mut h = Handle::new().map_err(|e| plugin_err("check", e))?;
        let host = h
            .link_by_name(&host_veth_name(ip))
            .map_err(|e| plugin_err("check", e))?
            .ok_or_else(|| {
                plugin_err("check", format!("host veth {} missing", host_veth_name(ip)))
            })?;
        if !host.up {
            return Err(plugin_err(
                "check",
                format!("host veth {} is down", host.name),
            ));
        }
        let ifname = env.ifname.clone();
        crate::netns::run_in(Path::new(&env.netns), move || -> Result<(), String> {
            let mut c = Handle::new()?;
            let l = c
                .link_by_name(&ifname)?
                .ok_or_else(|| format!("{ifname} missing in container"))?;
            if !l.up {
                return Err(format!("{ifname} is down"));
            }
            let has_ip = c
                .addresses(Some(l.index))?
                .iter()
                .any(|(_, a)| a.local == ip && a.peer == Some(HOST_IP));
            if !has_ip {
                return Err(format!("{ifname} lacks {ip} peer {HOST_IP}"));
            }
            let has_default = c
                .routes()?
                .iter()
                .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(HOST_IP));
            if !has_default {
                return Err("default route via 169.254.0.1 missing".into());
            }
            Ok(())
        })
        .and_then(|r| r)
        .map_err(|e| plugin_err("check", e))
    }

    fn gc(&self, _env: &Env, conf: &NetConf, raw: &[u8]) -> Result<(), Error> {
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
            .map_err(|e| Error::new(code::IO_FAILURE, "gc", e.to_string()))?;
        for ip in released {
            if let Err(e) = remove_host_veth(ip) {
                log::warn!("gc: {e}");
            }
        }
        Ok(())
    }

    fn status(&self, _env: &Env, _conf: &NetConf, raw: &[u8]) -> Result<(), Error> {
        let oc = decode_conf(raw)?;
        network_info(oc.daemon_port)
            .map(|_| ())
            .map_err(|e| Error::new(code::NOT_AVAILABLE, "overlay daemon not available", e))
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
}
