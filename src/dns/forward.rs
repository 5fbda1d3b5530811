//! Sends names outside the internal domains to the cell's upstream resolvers: over UDP for UDP
//! clients (a truncated answer is passed on, so the client asks again over TCP) and over TCP for
//! TCP clients. Each attempt has a timeout, a fresh random ID and source port; a timeout, an
//! error, a mismatched answer or SERVFAIL/REFUSED/NOTIMP moves on to the next upstream. The
//! upstream that answered last is tried first next time, so a dead first upstream costs one
//! timeout, not one per query.

use super::metrics::{DnsMetrics, ForwardOutcome, Transport};
use super::query::Forward;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    preferred: AtomicUsize,
    metrics: DnsMetrics,
}

impl Forwarder {
    /// `timeout` is per attempt at one upstream.
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        metrics: DnsMetrics,
    ) -> Result<Forwarder, String> {
        if upstreams.is_empty() {
            return Err("no upstream resolvers".into());
        }
        if timeout.is_zero() {
            return Err("upstream timeout must be above zero".into());
        }
        Ok(Forwarder {
            upstreams,
            timeout,
            preferred: AtomicUsize::new(0),
            metrics,
        })
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The answer of the first upstream that gives one, with a fresh ID (the caller restores the
    /// client's); `None` when none answered. If all refused, the last refusal is returned.
    pub fn forward(&self, query: &Forward, transport: Transport) -> Option<Vec<u8>> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut rejected = None;
        for n in 0..self.upstreams.len() {
            let i = (first + n) % self.upstreams.len();
            let upstream = self.upstreams[i];
            let id: u16 = rand::random();
            let mut bytes = query.bytes.clone();
            bytes[..2].copy_from_slice(&id.to_be_bytes());
            let sent = match transport {
                Transport::Udp => ask_udp(upstream, &bytes, self.timeout),
                Transport::Tcp => ask_tcp(upstream, &bytes, self.timeout),
            };
            let outcome = match sent {
                Ok(answer) => match check(&answer, id, query) {
                    Ok(ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp) => {
                        rejected = Some(answer);
                        ForwardOutcome::Rejected
                    }
                    Ok(_) => {
                        self.metrics.forward(transport, ForwardOutcome::Answered);
                        self.preferred.store(i, Ordering::Relaxed);
                        return Some(answer);
                    }
                    Err(e) => {
                        log::debug!("upstream {upstream}: {e}");
                        ForwardOutcome::BadReply
                    }
                },
                Err(e) if is_timeout(&e) => ForwardOutcome::Timeout,
                Err(e) => {
                    log::debug!("upstream {upstream}: {e}");
                    ForwardOutcome::Error
                }
            };
            self.metrics.forward(transport, outcome);
        }
        rejected
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// The answer's response code if it answers this question under this ID.
fn check(answer: &[u8], id: u16, query: &Forward) -> Result<ResponseCode, String> {
    let msg = Message::from_vec(answer).map_err(|e| format!("answer does not parse: {e}"))?;
    if msg.metadata.message_type != MessageType::Response || msg.metadata.id != id {
        return Err("not an answer to this query".into());
    }
    // A truncated answer may come without its question; otherwise it must be ours.
    if !(msg.queries.is_empty() && msg.metadata.truncation)
        && msg.queries != [query.question.clone()]
    {
        return Err("answer to another question".into());
    }
    Ok(msg.metadata.response_code)
}

fn ask_udp(upstream: SocketAddr, query: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream.ip() {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    // Connected: only the upstream's datagrams are received, and ICMP errors are reported.
    socket.connect(upstream)?;
    socket.send(query)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        let n = socket.recv(&mut buf)?;
        // A late answer to an earlier attempt cannot arrive here (fresh socket), but stray or
        // forged datagrams can: wait on for the one with our ID.
        if n >= 12 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

fn ask_tcp(upstream: SocketAddr, query: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&upstream, timeout)?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    stream.set_write_timeout(Some(left(deadline)?))?;
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    read_until(&mut stream, &mut len, deadline)?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    read_until(&mut stream, &mut answer, deadline)?;
    if answer.len() < 12 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer shorter than a header",
        ));
    }
    Ok(answer)
}

fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

fn read_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        stream.set_read_timeout(Some(left(deadline)?))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The nameservers of a resolv.conf-format file, on port 53. Lines that are not `nameserver
/// <address>` are ignored, as the C library does; an address with a zone (`fe80::1%eth0`) is
/// skipped with a warning.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        match addr.parse::<IpAddr>() {
            Ok(ip) => out.push(SocketAddr::new(ip, 53)),
            Err(_) => log::warn!("resolv.conf: nameserver {addr:?} skipped (not an address)"),
        }
    }
    out
}

/// Reads upstreams from a resolv.conf-format file; `own` are this resolver's addresses, which
/// are left out (a resolver forwarding to itself would loop).
pub fn read_resolv_conf(path: &Path, own: &[IpAddr]) -> Result<Vec<SocketAddr>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let upstreams: Vec<SocketAddr> = parse_resolv_conf(&text)
        .into_iter()
        .filter(|a| !own.contains(&a.ip()))
        .collect();
    if upstreams.is_empty() {
        return Err(format!(
            "{} names no nameserver other than this resolver",
            path.display()
        ));
    }
    Ok(upstreams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver  ::1 \n\
                    nameserver fe80::1%eth0\nnameserver\noptions ndots:2\n;nameserver 1.1.1.1\n\
                    nameserver 169.254.0.2\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap(),
                "169.254.0.2:53".parse().unwrap(),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, text).unwrap();
        let own: Vec<IpAddr> = vec!["169.254.0.2".parse().unwrap()];
        assert_eq!(read_resolv_conf(&path, &own).unwrap().len(), 2);
        std::fs::write(&path, "nameserver 169.254.0.2\n").unwrap();
        assert!(read_resolv_conf(&path, &own)
            .unwrap_err()
            .contains("no nameserver"));
    }

    #[test]
    fn refused_configurations() {
        let m = DnsMetrics::default();
        assert!(Forwarder::new(vec![], DEFAULT_TIMEOUT, m.clone()).is_err());
        let up = vec!["127.0.0.1:53".parse().unwrap()];
        assert!(Forwarder::new(up, Duration::ZERO, m).is_err());
    }
}
