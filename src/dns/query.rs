//! One query in, one decision out: an answer from the table, an error, a name to forward, or
//! nothing (for packets that must not be answered). No I/O here, so every kind of input can be
//! tried on it directly.

use super::metrics::{Kind, Transport};
use super::table::{Lookup, Table};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use rand::seq::SliceRandom;

/// Longest query accepted (over UDP or TCP); longer ones get FORMERR. Real queries are under
/// 300 bytes; EDNS options (cookies, padding) add a few hundred at most.
pub const MAX_QUERY_LEN: usize = 4096;
/// Largest UDP answer this resolver builds (the DNS flag day 2020 default; avoids IP fragments).
pub const MAX_UDP_ANSWER: u16 = 1232;
/// UDP answer size for clients without EDNS (RFC 1035).
pub const MIN_UDP_ANSWER: usize = 512;

const HEADER_LEN: usize = 12;
/// An A record whose owner is a compression pointer to the question: 2 + 10 + 4 bytes.
const A_RECORD_LEN: usize = 16;
/// An OPT record with no options.
const OPT_RECORD_LEN: usize = 11;

/// An answer ready to send, and how to count it.
#[derive(Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub kind: Kind,
    pub rcode: ResponseCode,
}

#[derive(Debug)]
pub enum Decision {
    Reply(Reply),
    Forward(Forward),
    /// Not answered: too short to carry an ID, or a response (answering those could loop).
    Drop,
}

/// A query for a name outside the internal domains, as the client sent it.
#[derive(Debug, Clone)]
pub struct Forward {
    pub bytes: Vec<u8>,
    pub id: u16,
    pub question: Query,
    pub recursion_desired: bool,
    pub edns: bool,
    /// The largest UDP answer the client takes (512 without EDNS, else what it announced).
    pub client_udp_limit: usize,
}

impl Forward {
    /// The answer when no upstream gave one (SERVFAIL) or the queue to them was full.
    pub fn error(&self, rcode: ResponseCode) -> Reply {
        let head = Head {
            id: self.id,
            op_code: OpCode::Query,
            recursion_desired: self.recursion_desired,
        };
        let bytes = encode(
            &head,
            Some(&self.question),
            rcode,
            false,
            vec![],
            self.edns,
            usize::MAX,
        );
        Reply {
            bytes,
            kind: Kind::Forwarded,
            rcode,
        }
    }

    /// An upstream's answer as the client gets it: its own ID back, and over UDP no bigger than
    /// the client takes (else a truncated answer, so that the client asks again over TCP).
    pub fn relay(&self, mut answer: Vec<u8>, transport: Transport) -> Reply {
        answer[..2].copy_from_slice(&self.id.to_be_bytes());
        let rcode = ResponseCode::from_low(answer[3] & 0x0f);
        if transport == Transport::Udp && answer.len() > self.client_udp_limit {
            let head = Head {
                id: self.id,
                op_code: OpCode::Query,
                recursion_desired: self.recursion_desired,
            };
            let mut msg = response(&head, Some(&self.question), rcode, false);
            msg.metadata.truncation = true;
            if self.edns {
                msg.set_edns(our_edns());
            }
            answer = msg.to_vec().expect("a header and one question encode");
        }
        Reply {
            bytes: answer,
            kind: Kind::Forwarded,
            rcode,
        }
    }
}

/// Header fields of a query that its answer repeats.
struct Head {
    id: u16,
    op_code: OpCode,
    recursion_desired: bool,
}

pub fn decide(table: &Table, packet: &[u8], transport: Transport) -> Decision {
    if packet.len() < HEADER_LEN {
        return Decision::Drop;
    }
    if packet[2] & 0x80 != 0 {
        return Decision::Drop;
    }
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    let head = Head {
        id: u16::from_be_bytes([packet[0], packet[1]]),
        op_code,
        recursion_desired: packet[2] & 0x01 != 0,
    };
    let invalid = |rcode| {
        Decision::Reply(Reply {
            bytes: encode(&head, None, rcode, false, vec![], false, usize::MAX),
            kind: Kind::Invalid,
            rcode,
        })
    };
    if op_code != OpCode::Query {
        return invalid(ResponseCode::NotImp);
    }
    if packet.len() > MAX_QUERY_LEN {
        return invalid(ResponseCode::FormErr);
    }
    let Ok(msg) = Message::from_vec(packet) else {
        return invalid(ResponseCode::FormErr);
    };
    let [question] = &msg.queries[..] else {
        return invalid(ResponseCode::FormErr);
    };
    let edns = msg.edns.is_some();
    let limit = match (transport, &msg.edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => MIN_UDP_ANSWER,
        (Transport::Udp, Some(e)) => {
            (e.max_payload().min(MAX_UDP_ANSWER) as usize).max(MIN_UDP_ANSWER)
        }
    };
    let answer = |kind, rcode, authoritative, records| {
        Decision::Reply(Reply {
            bytes: encode(
                &head,
                Some(question),
                rcode,
                authoritative,
                records,
                edns,
                limit,
            ),
            kind,
            rcode,
        })
    };
    if msg.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return answer(Kind::Invalid, ResponseCode::BADVERS, false, vec![]);
    }
    match question.query_type() {
        RecordType::OPT => return answer(Kind::Invalid, ResponseCode::FormErr, false, vec![]),
        RecordType::AXFR | RecordType::IXFR => {
            return answer(Kind::Invalid, ResponseCode::Refused, false, vec![])
        }
        _ => {}
    }

    let name = lookup_key(question);
    match table.lookup(&name) {
        Lookup::External => Decision::Forward(Forward {
            bytes: packet.to_vec(),
            id: head.id,
            question: question.clone(),
            recursion_desired: head.recursion_desired,
            edns,
            client_udp_limit: match (&msg.edns, transport) {
                (_, Transport::Tcp) => u16::MAX as usize,
                (None, _) => MIN_UDP_ANSWER,
                (Some(e), _) => (e.max_payload() as usize).max(MIN_UDP_ANSWER),
            },
        }),
        _ if !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY) => {
            answer(Kind::Internal, ResponseCode::Refused, false, vec![])
        }
        Lookup::NoSuchName => answer(Kind::Internal, ResponseCode::NXDomain, true, vec![]),
        Lookup::NotReady => answer(Kind::Internal, ResponseCode::ServFail, false, vec![]),
        Lookup::Found(entries) => {
            let records = match question.query_type() {
                RecordType::A | RecordType::ANY => {
                    let mut records: Vec<Record> = entries
                        .iter()
                        .map(|e| Record::from_rdata(question.name().clone(), 0, RData::A(A(e.ip))))
                        .collect();
                    records.shuffle(&mut rand::thread_rng());
                    records
                }
                // The name exists but has only A records: NOERROR with no answer (NODATA).
                _ => vec![],
            };
            answer(Kind::Internal, ResponseCode::NoError, true, records)
        }
    }
}

/// The question's name as the table keys it: lowercase, no trailing dot. A byte that cannot
/// appear in a table name (a dot or space inside a label, non-ASCII) becomes `?`, so such a
/// name keeps its labels (and so its domain) but matches no route.
fn lookup_key(question: &Query) -> String {
    let mut key = String::with_capacity(question.name().len());
    for (i, label) in question.name().iter().enumerate() {
        if i > 0 {
            key.push('.');
        }
        for &b in label {
            key.push(if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                b.to_ascii_lowercase() as char
            } else {
                '?'
            });
        }
    }
    key
}

fn our_edns() -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP_ANSWER);
    e
}

fn response(head: &Head, question: Option<&Query>, rcode: ResponseCode, aa: bool) -> Message {
    let mut msg = Message::new(head.id, MessageType::Response, head.op_code);
    msg.metadata.response_code = rcode;
    msg.metadata.authoritative = aa;
    msg.metadata.recursion_desired = head.recursion_desired;
    msg.metadata.recursion_available = true;
    if let Some(q) = question {
        msg.add_query(q.clone());
    }
    msg
}

/// Encodes an answer of at most `limit` bytes: records that do not fit are left out and the
/// answer is marked truncated (the client then asks over TCP).
fn encode(
    head: &Head,
    question: Option<&Query>,
    rcode: ResponseCode,
    authoritative: bool,
    mut records: Vec<Record>,
    edns: bool,
    limit: usize,
) -> Vec<u8> {
    let mut msg = response(head, question, rcode, authoritative);
    let fixed = HEADER_LEN
        + question.map_or(0, |q| {
            q.name().iter().map(|l| l.len() + 1).sum::<usize>() + 1 + 4
        })
        + if edns { OPT_RECORD_LEN } else { 0 };
    let fit = limit.saturating_sub(fixed) / A_RECORD_LEN;
    if records.len() > fit {
        records.truncate(fit);
        msg.metadata.truncation = true;
    }
    msg.answers = records;
    if edns || rcode.high() > 0 {
        msg.set_edns(our_edns());
    }
    match msg.to_vec() {
        Ok(bytes) => bytes,
        // Not reachable with names that were just decoded; a bare SERVFAIL rather than a panic.
        Err(e) => {
            log::warn!("encoding an answer failed: {e}");
            let mut msg = response(head, None, ResponseCode::ServFail, false);
            msg.answers.clear();
            msg.to_vec().expect("a bare header encodes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::table::{Instance, InternalRoute, InternalRoutes};
    use hickory_proto::rr::Name;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    fn table(instances: u32) -> Table {
        Table::new(&InternalRoutes {
            domains: vec!["apps.internal".into()],
            routes: vec![InternalRoute {
                name: "backend.apps.internal".into(),
                instances: (0..instances)
                    .map(|i| Instance {
                        app_guid: "app".into(),
                        index: i,
                        ip: Ipv4Addr::from(0x0aff_0000 + i),
                    })
                    .collect(),
            }],
        })
        .unwrap()
    }

    fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn reply(d: Decision) -> Message {
        match d {
            Decision::Reply(r) => Message::from_vec(&r.bytes).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .map(|r| match r.data {
                RData::A(a) => a.0,
                ref other => panic!("not an A record: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn internal_names_answer_a_records_with_ttl_zero_and_the_question_as_asked() {
        let t = table(3);
        let m = reply(decide(
            &t,
            &query("BackEnd.apps.internal.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "BackEnd.apps.internal.");
        assert_eq!(a_records(&m).len(), 3);
        assert!(m.answers.iter().all(|r| r.ttl == 0));

        let m = reply(decide(
            &t,
            &query("2.backend.apps.internal.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(a_records(&m), [Ipv4Addr::new(10, 255, 0, 2)]);
    }

    #[test]
    fn unknown_names_are_nxdomain_and_other_types_are_empty() {
        let t = table(2);
        for name in [
            "nope.apps.internal.",
            "3.backend.apps.internal.",
            "a.b.backend.apps.internal.",
        ] {
            let m = reply(decide(
                &t,
                &query(name, RecordType::A, None),
                Transport::Udp,
            ));
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
        for rtype in [
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::TXT,
            RecordType::MX,
        ] {
            let m = reply(decide(
                &t,
                &query("backend.apps.internal.", rtype, None),
                Transport::Udp,
            ));
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.answers.is_empty());
        }
    }

    #[test]
    fn internal_names_before_the_first_table_are_servfail() {
        let t = Table::not_ready(&["apps.internal".into()]).unwrap();
        let q = query("backend.apps.internal.", RecordType::A, None);
        let m = reply(decide(&t, &q, Transport::Udp));
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        let q = query("example.com.", RecordType::A, None);
        assert!(matches!(
            decide(&t, &q, Transport::Udp),
            Decision::Forward(_)
        ));
    }

    #[test]
    fn other_names_are_forwarded() {
        match decide(
            &table(1),
            &query("example.com.", RecordType::A, Some(4096)),
            Transport::Udp,
        ) {
            Decision::Forward(f) => {
                assert_eq!(f.id, 0x1234);
                assert_eq!(f.client_udp_limit, 4096);
                assert!(f.edns);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shuffled_per_query() {
        let t = table(8);
        let orders: HashSet<Vec<Ipv4Addr>> = (0..50)
            .map(|_| {
                a_records(&reply(decide(
                    &t,
                    &query("backend.apps.internal.", RecordType::A, None),
                    Transport::Udp,
                )))
            })
            .collect();
        assert!(
            orders.len() > 10,
            "only {} orders in 50 answers",
            orders.len()
        );
    }

    #[test]
    fn large_answers_are_truncated_to_fit_udp_and_whole_over_tcp() {
        let t = table(200);
        for (edns, limit) in [
            (None, 512),
            (Some(1232), 1232),
            (Some(65000), 1232),
            (Some(100), 512),
        ] {
            let d = decide(
                &t,
                &query("backend.apps.internal.", RecordType::A, edns),
                Transport::Udp,
            );
            let Decision::Reply(r) = d else { panic!() };
            assert!(r.bytes.len() <= limit, "{} > {limit}", r.bytes.len());
            assert!(r.bytes.len() > limit - A_RECORD_LEN, "wasted space");
            let m = Message::from_vec(&r.bytes).unwrap();
            assert!(m.metadata.truncation);
            assert_eq!(m.edns.is_some(), edns.is_some());
        }
        let m = reply(decide(
            &t,
            &query("backend.apps.internal.", RecordType::A, None),
            Transport::Tcp,
        ));
        assert!(!m.metadata.truncation);
        assert_eq!(a_records(&m).len(), 200);
    }

    #[test]
    fn bad_packets_get_errors_or_nothing() {
        let t = table(1);
        let good = query("backend.apps.internal.", RecordType::A, None);
        let rcode = |p: &[u8]| match decide(&t, p, Transport::Udp) {
            Decision::Reply(r) => Some(r.rcode),
            Decision::Drop => None,
            Decision::Forward(_) => panic!("forwarded"),
        };
        assert_eq!(rcode(&good[..11]), None);
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(rcode(&response), None);
        for op in [1u8, 2, 4, 5, 15] {
            let mut p = good.clone();
            p[2] = (p[2] & 0x87) | (op << 3);
            assert_eq!(rcode(&p), Some(ResponseCode::NotImp), "opcode {op}");
        }
        assert_eq!(rcode(&good[..good.len() - 2]), Some(ResponseCode::FormErr));
        for qdcount in [0u8, 2] {
            let mut p = good.clone();
            p[5] = qdcount;
            assert_eq!(rcode(&p), Some(ResponseCode::FormErr), "qdcount {qdcount}");
        }
        // A name that is a compression pointer to itself.
        let mut looped = good[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert_eq!(rcode(&looped), Some(ResponseCode::FormErr));
        let mut big = good.clone();
        big.resize(MAX_QUERY_LEN + 1, 0);
        assert_eq!(rcode(&big), Some(ResponseCode::FormErr));
        assert_eq!(
            rcode(&query("apps.internal.", RecordType::AXFR, None)),
            Some(ResponseCode::Refused)
        );
        let mut m = Message::from_vec(&good).unwrap();
        let mut e = Edns::new();
        e.set_version(1);
        m.set_edns(e);
        assert_eq!(rcode(&m.to_vec().unwrap()), Some(ResponseCode::BADVERS));
    }
}
