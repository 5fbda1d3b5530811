//! The flow log's syslog output (`flow_log_syslog`): every line written to the file is also sent
//! as one syslog message, the JSON line its text.
//!
//! - To a unix datagram socket (`/dev/log`): the format glibc's `syslog(3)` sends there,
//!   `<PRI>Mmm dd hh:mm:ss netman-flow[PID]: MSG` (RFC 3164's, without the host, time in UTC),
//!   which rsyslog, syslog-ng and journald all read.
//! - To `udp://IP:PORT`: RFC 5424 over UDP (RFC 5426), one message a datagram,
//!   `<PRI>1 TIME HOST netman-flow PID flow - MSG`, the host being the cell's name.
//!
//! Severity: `info` for an allowed connection, `notice` for a denied or audit one. Sending never
//! blocks the reader (non-blocking sockets, unconnected, so a restarted syslog daemon is found
//! again at the next message); a message that cannot be sent is the caller's to count.

use crate::flowlog::event::Verdict;
use crate::os_error::OsError;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::SystemTime;

/// The APP-NAME (RFC 5424) or TAG (RFC 3164) of every message.
pub const APP_NAME: &str = "netman-flow";
/// The RFC 5424 MSGID.
const MSG_ID: &str = "flow";
/// A unix socket path longer than this does not fit `sockaddr_un`.
const MAX_UNIX_PATH: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A unix datagram socket, e.g. `/dev/log`.
    Unix(PathBuf),
    Udp(SocketAddr),
}

impl Target {
    /// An absolute path (a unix datagram socket) or `udp://IP:PORT` (`udp://[IPv6]:PORT`).
    pub fn parse(s: &str) -> Result<Target, String> {
        let expected =
            "an absolute path of a unix datagram socket (e.g. /dev/log) or udp://IP:PORT";
        if s.starts_with('/') {
            if s.len() > MAX_UNIX_PATH || s.contains('\0') {
                return Err(format!(
                    "{s:?} is not a unix socket path (at most {MAX_UNIX_PATH} bytes, no NUL)"
                ));
            }
            return Ok(Target::Unix(PathBuf::from(s)));
        }
        let Some(addr) = s.strip_prefix("udp://") else {
            return Err(format!("{s:?}: expected {expected}"));
        };
        match addr.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => Ok(Target::Udp(a)),
            Ok(_) => Err(format!("{s:?}: the address and port must not be 0")),
            Err(_) => Err(format!("{s:?}: expected {expected}")),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Udp(a) => write!(f, "udp://{a}"),
        }
    }
}

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp",
    // 13-15 have no common name (Linux's syslog.conf reads `security` as `auth`): not offered.
    "", "", "", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// A facility by its name (`user`, `daemon`, `auth`, `local0` ... `local7`, ... as Linux's
/// syslog.conf names them): its code.
pub fn parse_facility(name: &str) -> Result<u8, String> {
    FACILITIES
        .iter()
        .position(|f| !f.is_empty() && *f == name)
        .map(|i| i as u8)
        .ok_or_else(|| {
            format!("{name:?} is not a syslog facility (user, daemon, local0 ... local7, ...)")
        })
}

const INFO: u8 = 6;
const NOTICE: u8 = 5;

fn severity(v: Verdict) -> u8 {
    match v {
        Verdict::Allowed => INFO,
        Verdict::Denied | Verdict::Audit => NOTICE,
    }
}

/// RFC 5424's HOSTNAME: printable US-ASCII without spaces, at most 255 characters, else `-`.
fn host_field(host: &str) -> &str {
    let ok = !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| (33..=126).contains(&b));
    if ok {
        host
    } else {
        "-"
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// One message as it goes on the wire.
pub fn format(
    target: &Target,
    facility: u8,
    verdict: Verdict,
    at: SystemTime,
    host: &str,
    pid: u32,
    msg: &str,
) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity(verdict));
    match target {
        Target::Unix(_) => {
            let t = time::OffsetDateTime::from(at);
            format!(
                "<{pri}>{} {:>2} {:02}:{:02}:{:02} {APP_NAME}[{pid}]: {msg}",
                MONTHS[usize::from(u8::from(t.month())) - 1],
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Target::Udp(_) => format!(
            "<{pri}>1 {} {} {APP_NAME} {pid} {MSG_ID} - {msg}",
            crate::logging::timestamp(at),
            host_field(host)
        ),
    }
}

enum Socket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

pub struct SyslogSink {
    target: Target,
    facility: u8,
    host: String,
    pid: u32,
    socket: Socket,
    /// Whether the last message failed (a failure is logged once, when it starts).
    failing: bool,
}

impl SyslogSink {
    /// Opens the sending socket; the target need not exist yet (a syslog daemon started later is
    /// found at the next message).
    pub fn open(target: Target, facility: u8, host: &str) -> Result<SyslogSink, OsError> {
        let socket = match &target {
            Target::Unix(_) => {
                let s = UnixDatagram::unbound()
                    .map_err(|e| OsError::io("opening a unix datagram socket for syslog", &e))?;
                s.set_nonblocking(true)
                    .map_err(|e| OsError::io("setting the syslog socket non-blocking", &e))?;
                Socket::Unix(s)
            }
            Target::Udp(addr) => {
                let any: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("an address")
                } else {
                    "[::]:0".parse().expect("an address")
                };
                let s = UdpSocket::bind(any)
                    .map_err(|e| OsError::io("opening a udp socket for syslog", &e))?;
                s.set_nonblocking(true)
                    .map_err(|e| OsError::io("setting the syslog socket non-blocking", &e))?;
                Socket::Udp(s)
            }
        };
        Ok(SyslogSink {
            target,
            facility,
            host: host.to_string(),
            pid: std::process::id(),
            socket,
            failing: false,
        })
    }

    /// Sends one line; an error (no listener, a full buffer, a message too long) costs this
    /// message only.
    pub fn send(&mut self, verdict: Verdict, line: &str) -> Result<(), OsError> {
        let msg = format(
            &self.target,
            self.facility,
            verdict,
            SystemTime::now(),
            &self.host,
            self.pid,
            line,
        );
        let sent = match (&self.socket, &self.target) {
            (Socket::Unix(s), Target::Unix(path)) => s.send_to(msg.as_bytes(), path),
            (Socket::Udp(s), Target::Udp(addr)) => s.send_to(msg.as_bytes(), addr),
            _ => unreachable!("the socket is made for its target"),
        };
        match sent {
            Ok(_) => {
                if self.failing {
                    log::info!("flow log: syslog {} reachable again", self.target);
                }
                self.failing = false;
                Ok(())
            }
            Err(e) => {
                let err = OsError::io(
                    format!("sending a flow log line to syslog {}", self.target),
                    &e,
                );
                if !self.failing {
                    log::warn!("{err} (counted in vpa_flow_errors_total{{kind=\"syslog\"}} until it works again)");
                }
                self.failing = true;
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    // 2026-12-06T09:05:03.538Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_547_903_538)
    }

    #[test]
    fn targets_and_facilities_parse_and_anything_else_is_a_clear_error() {
        assert_eq!(
            Target::parse("/dev/log").unwrap(),
            Target::Unix("/dev/log".into())
        );
        assert_eq!(
            Target::parse("udp://127.0.0.1:514").unwrap(),
            Target::Udp("127.0.0.1:514".parse().unwrap())
        );
        assert_eq!(
            Target::parse("udp://[::1]:5514").unwrap(),
            Target::Udp("[::1]:5514".parse().unwrap())
        );
        for bad in [
            "",
            "dev/log",
            "127.0.0.1:514",
            "udp://127.0.0.1",
            "udp://127.0.0.1:0",
            "udp://0.0.0.0:514",
            "udp://syslog.example:514",
            "tcp://127.0.0.1:514",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(Target::parse(&format!("/{}", "a".repeat(200))).is_err());
        assert_eq!(parse_facility("user").unwrap(), 1);
        assert_eq!(parse_facility("local0").unwrap(), 16);
        assert_eq!(parse_facility("local7").unwrap(), 23);
        assert!(parse_facility("LOCAL0").unwrap_err().contains("\"LOCAL0\""));
    }

    #[test]
    fn messages_have_the_format_of_their_transport() {
        let unix = Target::Unix("/dev/log".into());
        let udp = Target::Udp("127.0.0.1:514".parse().unwrap());
        assert_eq!(
            format(&unix, 16, Verdict::Allowed, at(), "cell-1", 42, "{\"a\":1}"),
            "<134>Dec  6 09:05:03 netman-flow[42]: {\"a\":1}"
        );
        assert_eq!(
            format(&udp, 1, Verdict::Denied, at(), "cell-1", 42, "{\"a\":1}"),
            "<13>1 2026-12-06T09:05:03.538Z cell-1 netman-flow 42 flow - {\"a\":1}"
        );
        assert_eq!(
            format(&udp, 1, Verdict::Audit, at(), "a cell", 42, "x"),
            "<13>1 2026-12-06T09:05:03.538Z - netman-flow 42 flow - x"
        );
    }

    fn receive_unix(r: &UnixDatagram) -> String {
        let mut buf = vec![0; 65536];
        let n = r.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_unix_datagram_listener_receives_each_line_and_one_started_later_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let target = Target::Unix(path.clone());
        let mut sink = SyslogSink::open(target, 1, "cell-1").unwrap();
        // No listener yet: an error for this message, nothing blocks.
        assert!(sink.send(Verdict::Allowed, "{\"n\":0}").is_err());
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sink.send(Verdict::Allowed, "{\"n\":1}").unwrap();
        sink.send(Verdict::Denied, "{\"n\":2}").unwrap();
        let pid = std::process::id();
        for (pri, n) in [(14, 1), (13, 2)] {
            let got = receive_unix(&listener);
            let (head, msg) = got.split_at(got.find(" netman-flow[").unwrap());
            assert_eq!(msg, format!(" netman-flow[{pid}]: {{\"n\":{n}}}"));
            let stamp = head.strip_prefix(&format!("<{pri}>")).unwrap();
            assert_eq!(stamp.len(), "Dec  6 09:05:03".len(), "{got}");
            assert!(MONTHS.contains(&&stamp[..3]), "{got}");
        }
        // A restarted daemon binds a new socket at the same path: found at the next message.
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        assert!(sink.send(Verdict::Allowed, "{\"n\":3}").is_err());
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sink.send(Verdict::Allowed, "{\"n\":4}").unwrap();
        assert!(receive_unix(&listener).ends_with(": {\"n\":4}"));
    }

    #[test]
    fn a_full_unix_listener_costs_messages_never_a_blocked_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let _listener = UnixDatagram::bind(&path).unwrap();
        let mut sink = SyslogSink::open(Target::Unix(path), 1, "cell-1").unwrap();
        // Nobody reads: the listener's queue fills and sends fail (EAGAIN) instead of blocking.
        let line = "x".repeat(1000);
        let failed = (0..100_000)
            .map(|_| sink.send(Verdict::Denied, &line))
            .find_map(Result::err)
            .expect("a send fails once the queue is full");
        assert!(failed.is(nix::errno::Errno::EAGAIN), "{failed}");
    }

    #[test]
    fn a_udp_listener_receives_rfc5424_messages() {
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let target = Target::Udp(listener.local_addr().unwrap());
        let mut sink = SyslogSink::open(target, 16, "cell-1").unwrap();
        sink.send(Verdict::Denied, "{\"verdict\":\"denied\"}")
            .unwrap();
        let mut buf = vec![0; 65536];
        let (n, from) = listener.recv_from(&mut buf).unwrap();
        assert!(from.ip().is_loopback());
        let got = String::from_utf8(buf[..n].to_vec()).unwrap();
        let fields: Vec<&str> = got.splitn(8, ' ').collect();
        assert_eq!(fields[0], "<133>1");
        assert!(
            fields[1].len() == "2026-12-06T09:05:03.538Z".len() && fields[1].ends_with('Z'),
            "{got}"
        );
        let pid = std::process::id().to_string();
        assert_eq!(
            fields[2..],
            [
                "cell-1",
                "netman-flow",
                pid.as_str(),
                "flow",
                "-",
                "{\"verdict\":\"denied\"}"
            ]
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panic(s in "\\PC{0,40}", raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Target::parse(&s);
            let _ = parse_facility(&s);
            let _ = Target::parse(&String::from_utf8_lossy(&raw));
        }

        #[test]
        fn udp_addresses_and_paths_round_trip(ip in any::<std::net::IpAddr>(), port in 1u16.., path in "(/[a-z0-9._-]{1,20}){1,4}") {
            let addr = SocketAddr::new(ip, port);
            let parsed = Target::parse(&format!("udp://{addr}"));
            if ip.is_unspecified() {
                prop_assert!(parsed.is_err());
            } else {
                let t = parsed.unwrap();
                prop_assert_eq!(&t, &Target::Udp(addr));
                prop_assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
            }
            let t = Target::parse(&path).unwrap();
            prop_assert_eq!(&t, &Target::Unix(PathBuf::from(&path)));
            prop_assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn facility_names_round_trip(i in 0usize..24) {
            match FACILITIES[i] {
                "" => prop_assert!(parse_facility("").is_err()),
                name => prop_assert_eq!(parse_facility(name).unwrap(), i as u8),
            }
        }
    }
}
