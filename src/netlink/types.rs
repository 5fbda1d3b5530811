//! Plain values the netlink wrapper takes and returns.

use netlink_packet_route::address::AddressScope;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::RouteScope;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

/// A link as dumped by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
    /// `veth`, `vxlan`, `bridge`, …
    pub kind: Option<String>,
    pub vxlan: Option<VxlanInfo>,
}

/// The VXLAN settings of a dumped VXLAN link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanInfo {
    pub vni: u32,
    pub port: u16,
    pub local: Option<Ipv4Addr>,
    pub gbp: bool,
    pub learning: bool,
}

impl Link {
    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mtu: 0,
            mac: None,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
            vxlan: None,
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::Address(a) if a.len() == 6 => {
                    link.mac = <[u8; 6]>::try_from(a.as_slice()).ok()
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => {
                                link.kind = Some(match k {
                                    InfoKind::Veth => "veth".to_string(),
                                    InfoKind::Vxlan => "vxlan".to_string(),
                                    InfoKind::Bridge => "bridge".to_string(),
                                    other => format!("{other:?}").to_lowercase(),
                                })
                            }
                            LinkInfo::Data(InfoData::Vxlan(data)) => {
                                let mut v = VxlanInfo::default();
                                for d in data {
                                    match d {
                                        InfoVxlan::Id(id) => v.vni = *id,
                                        InfoVxlan::Port(p) => v.port = *p,
                                        InfoVxlan::Local(l) => v.local = Some(*l),
                                        InfoVxlan::Gbp => v.gbp = true,
                                        InfoVxlan::Learning(l) => v.learning = *l,
                                        _ => {}
                                    }
                                }
                                link.vxlan = Some(v);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A veth pair to create.
#[derive(Debug, Clone, Default)]
pub struct VethSpec {
    pub name: String,
    pub peer_name: String,
    pub mac: Option<[u8; 6]>,
    pub peer_mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Create the peer directly in this namespace (an open netns file descriptor).
    pub peer_netns_fd: Option<RawFd>,
}

/// A VXLAN device to create.
#[derive(Debug, Clone)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Option<Ipv4Addr>,
    pub parent_index: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub gbp: bool,
    pub learning: bool,
}

/// Address and route scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    Universe,
    Link,
    Host,
    Other(u8),
}

impl Scope {
    pub(crate) fn to_address(self) -> AddressScope {
        match self {
            Scope::Universe => AddressScope::Universe,
            Scope::Link => AddressScope::Link,
            Scope::Host => AddressScope::Host,
            Scope::Other(v) => AddressScope::from(v),
        }
    }
    pub(crate) fn from_address(s: AddressScope) -> Scope {
        match s {
            AddressScope::Universe => Scope::Universe,
            AddressScope::Link => Scope::Link,
            AddressScope::Host => Scope::Host,
            other => Scope::Other(u8::from(other)),
        }
    }
    pub(crate) fn to_route(self) -> RouteScope {
        match self {
            Scope::Universe => RouteScope::Universe,
            Scope::Link => RouteScope::Link,
            Scope::Host => RouteScope::Host,
            Scope::Other(v) => RouteScope::from(v),
        }
    }
    pub(crate) fn from_route(s: RouteScope) -> Scope {
        match s {
            RouteScope::Universe => Scope::Universe,
            RouteScope::Link => Scope::Link,
            RouteScope::Host => Scope::Host,
            other => Scope::Other(u8::from(other)),
        }
    }
}

/// An IPv4 interface address; `peer` makes it point-to-point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub local: Ipv4Addr,
    pub prefix_len: u8,
    pub peer: Option<Ipv4Addr>,
    pub scope: Scope,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.peer {
            Some(p) => write!(f, "{} peer {p}/{}", self.local, self.prefix_len),
            None => write!(f, "{}/{}", self.local, self.prefix_len),
        }
    }
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: ipnet::Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub src: Option<Ipv4Addr>,
    pub scope: Scope,
    pub onlink: bool,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(o) = self.oif {
            write!(f, " dev #{o}")?;
        }
        if let Some(s) = self.src {
            write!(f, " src {s}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

/// An IPv4 neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
}

/// A bridge FDB entry of a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: Option<Ipv4Addr>,
    pub permanent: bool,
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("invalid MAC address {text:?}"));
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(format!("invalid MAC address {text:?}"));
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| format!("invalid MAC address {text:?}"))?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_rejects() {
        let mac = parse_mac("ee:ee:0a:ff:22:00").unwrap();
        assert_eq!(mac, [0xee, 0xee, 0x0a, 0xff, 0x22, 0x00]);
        assert_eq!(format_mac(&mac), "ee:ee:0a:ff:22:00");
        assert!(parse_mac("ee:ee:0a:ff:22").is_err());
        assert!(parse_mac("ee:ee:0a:ff:22:zz").is_err());
        assert!(parse_mac("eee:e:0a:ff:22:00").is_err());
    }
}
