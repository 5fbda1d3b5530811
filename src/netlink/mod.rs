//! A synchronous rtnetlink wrapper over netlink-packet-route / netlink-sys: links (veth, vxlan),
//! IPv4 addresses, routes, neighbours and FDB entries. One [`Handle`] is one NETLINK_ROUTE socket
//! in the network namespace of the thread that opened it (open it after `setns`, or inside
//! [`crate::netns::run_in`]). Every request waits for the kernel's ACK; errors carry the
//! operation and the errno.

mod types;

pub use types::*;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

pub type Result<T> = std::result::Result<T, Error>;

/// An rtnetlink failure: what was attempted and the kernel's errno (if the kernel answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub context: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl Error {
    fn io(context: &str, e: std::io::Error) -> Error {
        Error {
            context: context.to_string(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
    fn other(context: &str, message: impl std::fmt::Display) -> Error {
        Error {
            context: context.to_string(),
            errno: None,
            message: message.to_string(),
        }
    }
    /// EEXIST
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc_errno::EEXIST)
    }
    /// ENOENT, ENODEV, ESRCH, EADDRNOTAVAIL: the object is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            Some(libc_errno::ENOENT)
                | Some(libc_errno::ENODEV)
                | Some(libc_errno::ESRCH)
                | Some(libc_errno::EADDRNOTAVAIL)
        )
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EEXIST: i32 = 17;
    pub const ENODEV: i32 = 19;
    pub const EADDRNOTAVAIL: i32 = 99;
}

/// One NETLINK_ROUTE socket.
pub struct Handle {
    socket: Socket,
    seq: u32,
}

impl Handle {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> Result<Handle> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| Error::io("open netlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| Error::io("bind netlink socket", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io("connect netlink socket", e))?;
        let _ = socket.set_ext_ack(true);
        Ok(Handle { socket, seq: 1 })
    }

    fn send(&mut self, context: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| Error::io(context, e))?;
        Ok(self.seq)
    }

    /// Receives the messages answering `seq` until the ACK/error (requests, and GETs sent with
    /// NLM_F_ACK) or NLMSG_DONE (dumps).
    fn receive(&mut self, context: &str, seq: u32) -> Result<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| Error::io(context, e))?;
            let mut offset = 0;
            while offset + 16 <= data.len() {
                let len = u32::from_ne_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
                if len < 16 || offset + len > data.len() {
                    return Err(Error::other(context, "truncated netlink message"));
                }
                let bytes = &data[offset..offset + len];
                offset += (len + 3) & !3;
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| Error::other(context, format!("decoding reply: {e}")))?;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(err) => match err.code {
                        None => return Ok(out),
                        Some(_) => return Err(Error::io(context, err.to_io())),
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                    }
                    _ => {}
                }
            }
        }
    }

    /// A change request: waits for the ACK.
    fn request(&mut self, context: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let seq = self.send(context, msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.receive(context, seq).map(|_| ())
    }

    fn dump(
        &mut self,
        context: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(context, msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        self.receive(context, seq)
    }

    // ---------------------------------------------------------------- links

    /// All links of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msgs = self.dump(
            "dump links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(&l)),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, if present.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let context = format!("get link {name}");
        let seq = self.send(
            &context,
            RouteNetlinkMessage::GetLink(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )?;
        match self.receive(&context, seq) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(&l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of link `name`, or a not-found error.
    pub fn link_index(&mut self, name: &str) -> Result<u32> {
        match self.link_by_name(name)? {
            Some(l) => Ok(l.index),
            None => Err(Error {
                context: format!("find link {name}"),
                errno: Some(libc_errno::ENODEV),
                message: "no such device".into(),
            }),
        }
    }

    /// Creates a veth pair. The peer is created directly in the namespace `peer_netns` (an open
    /// namespace file) when given, so it never appears in this one.
    pub fn create_veth(&mut self, spec: &VethSpec) -> Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer_name.clone()));
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(fd) = spec.peer_netns_fd {
            peer.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(spec.name.clone()));
        if let Some(mac) = spec.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(
            &format!("create veth {} peer {}", spec.name, spec.peer_name),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates a dummy device (a local address of its own that no other device owns).
    pub fn create_dummy(&mut self, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy,
            )]));
        self.request(
            &format!("create dummy {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates a VXLAN device.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> Result<()> {
        let mut data = vec![
            InfoVxlan::Id(spec.vni),
            InfoVxlan::Port(spec.port),
            InfoVxlan::Learning(spec.learning),
        ];
        if let Some(local) = spec.local {
            data.push(InfoVxlan::Local(local));
        }
        if let Some(parent) = spec.parent_index {
            data.push(InfoVxlan::Link(parent));
        }
        if spec.gbp {
            data.push(InfoVxlan::Gbp);
        }
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(spec.name.clone()));
        if let Some(mac) = spec.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        self.request(
            &format!("create vxlan {}", spec.name),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn set_link(
        &mut self,
        context: &str,
        index: u32,
        edit: impl FnOnce(&mut LinkMessage),
    ) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        edit(&mut msg);
        self.request(context, RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_link(&format!("set link {index} up"), index, |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_link(&format!("set link {index} down"), index, |m| {
            m.header.flags = LinkFlags::empty();
            m.header.change_mask = LinkFlags::Up;
        })
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.set_link(&format!("set link {index} mtu {mtu}"), index, |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu))
        })
    }

    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        self.set_link(&format!("rename link {index} to {name}"), index, |m| {
            m.attributes.push(LinkAttribute::IfName(name.to_string()))
        })
    }

    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set_link(
            &format!("set link {index} address {}", format_mac(&mac)),
            index,
            |m| m.attributes.push(LinkAttribute::Address(mac.to_vec())),
        )
    }

    /// Moves a link into the namespace open as `netns_fd`.
    pub fn set_netns(&mut self, index: u32, netns_fd: RawFd) -> Result<()> {
        self.set_link(&format!("move link {index} to netns"), index, |m| {
            m.attributes.push(LinkAttribute::NetNsFd(netns_fd))
        })
    }

    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(
            &format!("delete link {index}"),
            RouteNetlinkMessage::DelLink(msg),
            0,
        )
    }

    // ------------------------------------------------------------ addresses

    /// Adds an IPv4 address; with `peer` it is a point-to-point address (`local peer P/len`).
    pub fn add_address(&mut self, index: u32, addr: &Address) -> Result<()> {
        let msg = address_message(index, addr);
        self.request(
            &format!("add address {} to link {index}", addr),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn delete_address(&mut self, index: u32, addr: &Address) -> Result<()> {
        let msg = address_message(index, addr);
        self.request(
            &format!("delete address {} from link {index}", addr),
            RouteNetlinkMessage::DelAddress(msg),
            0,
        )
    }

    /// IPv4 addresses, of one link or of all.
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<(u32, Address)>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.dump("dump addresses", RouteNetlinkMessage::GetAddress(req))?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.family != AddressFamily::Inet || index.is_some_and(|i| i != a.header.index)
            {
                continue;
            }
            let mut local = None;
            let mut address = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
                    AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
                    _ => {}
                }
            }
            let Some(local) = local.or(address) else {
                continue;
            };
            let peer = address.filter(|p| *p != local);
            out.push((
                a.header.index,
                Address {
                    local,
                    prefix_len: a.header.prefix_len,
                    peer,
                    scope: Scope::from_address(a.header.scope),
                },
            ));
        }
        Ok(out)
    }

    // --------------------------------------------------------------- routes

    /// Adds or replaces an IPv4 route in the main table.
    pub fn route_replace(&mut self, route: &Route) -> Result<()> {
        self.request(
            &format!("replace route {route}"),
            RouteNetlinkMessage::NewRoute(route_message(route)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Adds an IPv4 route; EEXIST if present.
    pub fn route_add(&mut self, route: &Route) -> Result<()> {
        self.request(
            &format!("add route {route}"),
            RouteNetlinkMessage::NewRoute(route_message(route)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn route_delete(&mut self, route: &Route) -> Result<()> {
        let mut msg = route_message(route);
        msg.header.scope = RouteScope::NoWhere;
        self.request(
            &format!("delete route {route}"),
            RouteNetlinkMessage::DelRoute(msg),
            0,
        )
    }

    /// IPv4 unicast routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let msgs = self.dump("dump routes", RouteNetlinkMessage::GetRoute(req))?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.address_family != AddressFamily::Inet
                || r.header.table != RouteHeader::RT_TABLE_MAIN
                || r.header.kind != RouteType::Unicast
            {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut route = Route {
                dst: ipnet::Ipv4Net::default(),
                gateway: None,
                oif: None,
                src: None,
                scope: Scope::from_route(r.header.scope),
                onlink: r.header.flags.contains(RouteFlags::Onlink),
            };
            let mut table_ok = true;
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                    RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => route.src = Some(*ip),
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    RouteAttribute::Table(t) => table_ok = *t == RouteHeader::RT_TABLE_MAIN as u32,
                    _ => {}
                }
            }
            if !table_ok {
                continue;
            }
            route.dst = ipnet::Ipv4Net::new(dst, r.header.destination_prefix_length)
                .map_err(|e| Error::other("dump routes", e))?;
            out.push(route);
        }
        Ok(out)
    }

    // ----------------------------------------------------------- neighbours

    /// Sets a permanent IPv4 neighbour (ARP entry) on link `index`.
    pub fn neighbour_set(&mut self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            &format!(
                "set neighbour {ip} lladdr {} on link {index}",
                format_mac(&mac)
            ),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    pub fn neighbour_delete(&mut self, index: u32, ip: Ipv4Addr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        self.request(
            &format!("delete neighbour {ip} on link {index}"),
            RouteNetlinkMessage::DelNeighbour(msg),
            0,
        )
    }

    /// IPv4 neighbours of link `index` (every state).
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Inet;
        let msgs = self.dump("dump neighbours", RouteNetlinkMessage::GetNeighbour(req))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n)
                    if n.header.ifindex == index && n.header.family == AddressFamily::Inet =>
                {
                    let mut ip = None;
                    let mut mac = None;
                    for a in &n.attributes {
                        match a {
                            NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => {
                                ip = Some(*i)
                            }
                            NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                                mac = Some(<[u8; 6]>::try_from(m.as_slice()).unwrap())
                            }
                            _ => {}
                        }
                    }
                    Some(Neighbour {
                        ip: ip?,
                        mac,
                        permanent: n.header.state == NeighbourState::Permanent,
                    })
                }
                _ => None,
            })
            .collect())
    }

    // ------------------------------------------------------------------ FDB

    /// Sets a permanent FDB entry on a VXLAN device: `mac` is reached via the remote VTEP `dst`.
    pub fn fdb_set(&mut self, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        let msg = fdb_message(index, mac, Some(dst));
        self.request(
            &format!("set fdb {} dst {dst} on link {index}", format_mac(&mac)),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    pub fn fdb_delete(&mut self, index: u32, mac: [u8; 6], dst: Option<Ipv4Addr>) -> Result<()> {
        let msg = fdb_message(index, mac, dst);
        self.request(
            &format!("delete fdb {} on link {index}", format_mac(&mac)),
            RouteNetlinkMessage::DelNeighbour(msg),
            0,
        )
    }

    /// FDB entries (AF_BRIDGE) of link `index`.
    pub fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        let msgs = self.dump("dump fdb", RouteNetlinkMessage::GetNeighbour(req))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n)
                    if n.header.ifindex == index && n.header.family == AddressFamily::Bridge =>
                {
                    let mut dst = None;
                    let mut mac = None;
                    for a in &n.attributes {
                        match a {
                            NeighbourAttribute::Destination(a) => dst = neighbour_ipv4(a),
                            NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                                mac = Some(<[u8; 6]>::try_from(m.as_slice()).unwrap())
                            }
                            _ => {}
                        }
                    }
                    Some(FdbEntry {
                        mac: mac?,
                        dst,
                        permanent: n.header.state == NeighbourState::Permanent,
                    })
                }
                _ => None,
            })
            .collect())
    }
}

fn address_message(index: u32, addr: &Address) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = addr.prefix_len;
    msg.header.index = index;
    msg.header.scope = addr.scope.to_address();
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V4(addr.local)));
    msg.attributes.push(AddressAttribute::Address(IpAddr::V4(
        addr.peer.unwrap_or(addr.local),
    )));
    msg
}

fn route_message(route: &Route) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = route.dst.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = route.scope.to_route();
    msg.header.kind = RouteType::Unicast;
    if route.onlink {
        msg.header.flags = RouteFlags::Onlink;
    }
    if route.dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                route.dst.network(),
            )));
    }
    if let Some(gw) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    }
    if let Some(src) = route.src {
        msg.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    msg
}

fn neighbour_ipv4(a: &NeighbourAddress) -> Option<Ipv4Addr> {
    match a {
        NeighbourAddress::Inet(i) => Some(*i),
        NeighbourAddress::Other(b) if b.len() == 4 => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
        _ => None,
    }
}

fn fdb_message(index: u32, mac: [u8; 6], dst: Option<Ipv4Addr>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if let Some(dst) = dst {
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    }
    msg
}

/// Writes `/proc/sys/net/ipv6/conf/<link>/disable_ipv6` of the calling thread's namespace.
pub fn disable_ipv6(link: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        // No IPv6 in this kernel or namespace: nothing to disable.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&format!("writing {path}"), e)),
    }
}

/// Writes an IPv4 sysctl (`net.ipv4.…`) of the calling thread's namespace.
pub fn sysctl_set(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| Error::io(&format!("writing {path}"), e))
}
