//! DNS test helpers on hickory-proto: a tiny upstream resolver with names that behave in known
//! ways, and client queries over UDP and TCP. Use: `#[path = "common/dns.rs"] mod dns;`.
#![allow(dead_code)]

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How a test upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `www.example.test` A 192.0.2.1; `who.example.test` A <its own address>;
    /// `big.example.test` 100 A records (truncated over UDP without EDNS); other names NXDOMAIN.
    Normal,
    /// Receives and never answers.
    Silent,
    /// Answers every query SERVFAIL.
    ServFail,
}

pub const BIG_COUNT: u32 = 100;

/// A test upstream on UDP and TCP; queries it received are counted. Stops on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Upstream {
    /// Binds `addr` (in the calling thread's network namespace) and serves in threads.
    pub fn start(addr: SocketAddr, mode: Mode) -> Upstream {
        let udp = UdpSocket::bind(addr).expect("upstream udp bind");
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).expect("upstream tcp bind");
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let own = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let (s, count) = (Arc::clone(&stop), Arc::clone(&udp_queries));
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = answer(&buf[..n], mode, own, true) {
                    let _ = udp.send_to(&reply, peer);
                }
            }
        });
        let (s, count) = (Arc::clone(&stop), Arc::clone(&tcp_queries));
        let tcp_thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                while let Ok(query) = read_framed(&mut stream) {
                    count.fetch_add(1, Ordering::SeqCst);
                    match answer(&query, mode, own, false) {
                        Some(reply) => {
                            if write_framed(&mut stream, &reply).is_err() {
                                break;
                            }
                        }
                        None => std::thread::sleep(Duration::from_secs(2)),
                    }
                }
            }
        });
        Upstream {
            addr,
            udp_queries,
            tcp_queries,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    pub fn queries(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst) + self.tcp_queries.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn answer(query: &[u8], mode: Mode, own: Ipv4Addr, udp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(question.clone());
    if let Some(e) = &q.edns {
        let mut mine = Edns::new();
        mine.set_max_payload(e.max_payload());
        m.set_edns(mine);
    }
    let a = |ip: Ipv4Addr| Record::from_rdata(question.name().clone(), 300, RData::A(A(ip)));
    match mode {
        Mode::Silent => return None,
        Mode::ServFail => m.metadata.response_code = ResponseCode::ServFail,
        Mode::Normal => match question.name().to_ascii().to_lowercase().as_str() {
            "www.example.test." => {
                m.add_answer(a(Ipv4Addr::new(192, 0, 2, 1)));
            }
            "who.example.test." => {
                m.add_answer(a(own));
            }
            "big.example.test." => {
                if udp && q.edns.is_none() {
                    m.metadata.truncation = true;
                } else {
                    m.add_answers((0..BIG_COUNT).map(|i| a(Ipv4Addr::from(0xc633_6400 + i))));
                }
            }
            _ => m.metadata.response_code = ResponseCode::NXDomain,
        },
    }
    Some(m.to_vec().unwrap())
}

pub fn read_framed(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

pub fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    stream.write_all(&framed)
}

/// A query as a stub resolver sends it (random ID, RD set); `edns`: the UDP size announced.
pub fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Sends raw bytes over UDP and waits for one datagram (`Err` on timeout).
pub fn send_udp(server: SocketAddr, packet: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(server)?;
    s.set_read_timeout(Some(timeout))?;
    s.send(packet)?;
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Asks over UDP and checks that the answer carries the query's ID.
pub fn ask_udp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    ask_udp_edns(server, name, rtype, None)
}

pub fn ask_udp_edns(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    edns: Option<u16>,
) -> Message {
    let q = query(name, rtype, edns);
    let reply = send_udp(server, &q, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{name} {rtype} over udp to {server}: {e}"));
    let m = Message::from_vec(&reply).expect("answer parses");
    assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]), "answer ID");
    assert_eq!(m.metadata.message_type, MessageType::Response);
    m
}

/// Asks over a new TCP connection.
pub fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let q = query(name, rtype, None);
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write_framed(&mut s, &q).unwrap();
    let reply = read_framed(&mut s).unwrap_or_else(|e| panic!("{name} over tcp: {e}"));
    let m = Message::from_vec(&reply).expect("answer parses");
    assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]), "answer ID");
    m
}

pub fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}
