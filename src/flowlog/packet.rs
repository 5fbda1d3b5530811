//! NFLOG messages (nfnetlink_log) as the kernel sends them, read into [`Logged`] values: the
//! group, the rule's prefix, the packet mark and the first bytes of the IPv4 packet (addresses,
//! protocol, ports). Everything here is hostile input: a malformed message is skipped, never a
//! panic (property test below).

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};
use std::net::Ipv4Addr;

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The NFLOG group the rule logged to.
    pub group: u16,
    /// The rule's prefix (`OK_C2C `, `DENY_<handle>`, ...), without the trailing NUL.
    pub prefix: String,
    /// The packet mark (0 when the kernel sent none).
    pub mark: u32,
    /// The packet, when it is IPv4 and long enough to read.
    pub ip: Option<Ipv4Packet>,
}

/// The fields of an IPv4 packet the flow log reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// TCP/UDP/SCTP ports; `None` for other protocols or a truncated header.
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code; `None` for other protocols or a truncated header.
    pub icmp: Option<(u8, u8)>,
    /// The packet's total length (IPv4 header field).
    pub len: u16,
}

/// Reads an IPv4 header and, for TCP, UDP and SCTP, the ports after it (for ICMP, the type and
/// code).
pub fn ipv4(payload: &[u8]) -> Option<Ipv4Packet> {
    let first = *payload.first()?;
    if first >> 4 != 4 || payload.len() < 20 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let protocol = payload[9];
    let len = u16::from_be_bytes([payload[2], payload[3]]);
    let addr = |at: usize| {
        Ipv4Addr::new(
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        )
    };
    let fragment_offset = u16::from_be_bytes([payload[6], payload[7]]) & 0x1fff;
    let ports = match protocol {
        6 | 17 | 132 if fragment_offset == 0 => payload.get(ihl..ihl + 4).map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        }),
        _ => None,
    };
    let icmp = match protocol {
        1 if fragment_offset == 0 => payload.get(ihl..ihl + 2).map(|t| (t[0], t[1])),
        _ => None,
    };
    Some(Ipv4Packet {
        protocol,
        src: addr(12),
        dst: addr(16),
        ports,
        icmp,
        len,
    })
}

/// Every logged packet in one datagram read from the socket (the kernel batches several
/// netlink messages in one). Messages that do not parse, and other message types, are skipped;
/// the count of skipped messages comes back too.
pub fn parse_datagram(mut buf: &[u8]) -> (Vec<Logged>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            skipped += 1;
            break;
        }
        match parse_message(&buf[..len]) {
            Some(Some(l)) => out.push(l),
            Some(None) => {}
            None => skipped += 1,
        }
        // Netlink messages are 4-byte aligned.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    (out, skipped)
}

/// `None`: malformed; `Some(None)`: a well-formed message that is not a logged packet.
fn parse_message(bytes: &[u8]) -> Option<Option<Logged>> {
    let msg = NetlinkMessage::<NetfilterMessage>::deserialize(bytes).ok()?;
    let NetlinkPayload::InnerMessage(NetfilterMessage { header, inner, .. }) = msg.payload else {
        return Some(None);
    };
    let NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)) = inner else {
        return Some(None);
    };
    let mut logged = Logged {
        group: header.res_id,
        prefix: String::new(),
        mark: 0,
        ip: None,
    };
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => logged.prefix = String::from_utf8_lossy(p.as_bytes()).into(),
            PacketNla::Mark(m) => logged.mark = m,
            PacketNla::Payload(p) => logged.ip = ipv4(&p),
            _ => {}
        }
    }
    Some(Some(logged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};
    use proptest::prelude::*;
    use std::ffi::CString;

    fn tcp_packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    fn message(group: u16, nlas: Vec<PacketNla>) -> Vec<u8> {
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, group),
                ULogMessage::Packet(nlas),
            )),
        );
        msg.finalize();
        let mut buf = vec![0; msg.header.length as usize];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn reads_group_prefix_mark_and_packet_of_each_message_in_a_datagram() {
        let mut buf = message(
            2,
            vec![
                PacketNla::Prefix(CString::new("OK_C2C ").unwrap()),
                PacketNla::Mark(0x0100_0007),
                PacketNla::Payload(tcp_packet([10, 255, 1, 2], [10, 255, 2, 3], 40000, 8080)),
            ],
        );
        buf.extend(message(
            1,
            vec![PacketNla::Prefix(CString::new("DENY_h1").unwrap())],
        ));
        let (got, skipped) = parse_datagram(&buf);
        assert_eq!(skipped, 0);
        assert_eq!(
            got,
            vec![
                Logged {
                    group: 2,
                    prefix: "OK_C2C ".into(),
                    mark: 0x0100_0007,
                    ip: Some(Ipv4Packet {
                        protocol: 6,
                        src: "10.255.1.2".parse().unwrap(),
                        dst: "10.255.2.3".parse().unwrap(),
                        ports: Some((40000, 8080)),
                        icmp: None,
                        len: 40,
                    }),
                },
                Logged {
                    group: 1,
                    prefix: "DENY_h1".into(),
                    mark: 0,
                    ip: None,
                },
            ]
        );
    }

    #[test]
    fn short_or_foreign_packets_have_no_ports_or_no_header() {
        assert_eq!(ipv4(&[0x45; 10]), None);
        assert_eq!(ipv4(&[0x60; 40]), None, "IPv6");
        let mut frag = tcp_packet([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        frag[7] = 1; // a later fragment: no L4 header
        assert_eq!(ipv4(&frag).unwrap().ports, None);
        assert_eq!(ipv4(&frag[..22]).unwrap().ports, None);
        // An echo request: type 8, code 0; cut before the code, none.
        let mut ping = tcp_packet([1, 1, 1, 1], [2, 2, 2, 2], 0x0800, 0);
        ping[9] = 1;
        let read = ipv4(&ping).unwrap();
        assert_eq!((read.icmp, read.ports), (Some((8, 0)), None));
        assert_eq!(ipv4(&ping[..21]).unwrap().icmp, None);
    }

    #[test]
    fn a_truncated_message_is_skipped() {
        let buf = message(2, vec![PacketNla::Prefix(CString::new("OK_C2C ").unwrap())]);
        let (got, skipped) = parse_datagram(&buf[..buf.len() - 3]);
        assert!(got.is_empty());
        assert_eq!(skipped, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn hostile_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_datagram(&bytes);
        }

        #[test]
        fn damaged_real_messages_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut buf = message(
                2,
                vec![
                    PacketNla::Prefix(CString::new("DENY_C2C ").unwrap()),
                    PacketNla::Mark(7),
                    PacketNla::Payload(tcp_packet([10, 0, 0, 1], [10, 0, 0, 2], 1, 2)),
                ],
            );
            for (at, byte) in flips {
                let i = at % buf.len();
                buf[i] = byte;
            }
            let cut = cut % (buf.len() + 1);
            let _ = parse_datagram(&buf[..cut]);
        }
    }
}
