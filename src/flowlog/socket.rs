//! The nfnetlink_log socket: bound to the cell's NFLOG groups in the calling thread's network
//! namespace, read with a receive timeout so the reader thread can stop.

use crate::os_error::OsError;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, ConfigNla, Timeout};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};
use std::time::Duration;

/// Enough of a packet for the IPv4 header (at most 60 bytes) and the ports after it.
const COPY_RANGE: u32 = 64;
/// The kernel flushes its batch of logged packets after this long (or when it is full).
const FLUSH: Duration = Duration::from_millis(10);
const QUEUE_THRESHOLD: u32 = 32;
const RECEIVE_BUFFER: usize = 4 << 20;

pub struct NflogSocket {
    socket: Socket,
    buf: Vec<u8>,
}

/// What one read gave.
pub enum Read<'a> {
    Data(&'a [u8]),
    /// Nothing within the timeout.
    Idle,
    /// The socket's buffer overflowed: the kernel dropped logged packets.
    Overrun,
}

impl NflogSocket {
    /// Binds `groups` (each may have one listener per namespace: `EBUSY` means another
    /// process reads it).
    pub fn bind(groups: &[u16], read_timeout: Duration) -> Result<NflogSocket, OsError> {
        let io = |what: &str, e: std::io::Error| OsError::io(what.to_string(), &e);
        let mut socket =
            Socket::new(NETLINK_NETFILTER).map_err(|e| io("opening an nfnetlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| io("binding the nfnetlink socket", e))?;
        let _ = socket.set_rx_buf_sz(RECEIVE_BUFFER);
        let timeout = nix::sys::time::TimeVal::new(
            read_timeout.as_secs() as i64,
            read_timeout.subsec_micros() as i64,
        );
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| OsError::errno("setting the nfnetlink read timeout", e))?;
        let mut s = NflogSocket {
            socket,
            buf: vec![0; 1 << 16],
        };
        for &group in groups {
            s.configure(
                group,
                vec![
                    ConfigCmd::Bind.into(),
                    ConfigMode::new_packet(COPY_RANGE).into(),
                    Timeout::from(FLUSH).into(),
                    ConfigNla::QThresh(QUEUE_THRESHOLD),
                ],
            )
            .map_err(|mut e| {
                e.context = format!("binding NFLOG group {group}: {}", e.context);
                e
            })?;
        }
        Ok(s)
    }

    fn configure(&mut self, group: u16, nlas: Vec<ConfigNla>) -> Result<(), OsError> {
        let req = config_request(NetfilterProtoFamily::IPv4, group, nlas);
        let mut out = vec![0; req.header.length as usize];
        req.serialize(&mut out);
        self.socket
            .send(&out, 0)
            .map_err(|e| OsError::io("sending an NFLOG config request", &e))?;
        let n = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(|e| OsError::io("reading the NFLOG config answer", &e))?;
        let answer =
            NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..n]).map_err(|e| {
                OsError {
                    context: "reading the NFLOG config answer".into(),
                    errno: None,
                    message: e.to_string(),
                }
            })?;
        match answer.payload {
            NetlinkPayload::Error(e) => match e.code {
                None => Ok(()),
                Some(code) => Err(OsError::errno(
                    "NFLOG config",
                    nix::errno::Errno::from_raw(-code.get()),
                )),
            },
            _ => Ok(()),
        }
    }

    /// One datagram (several messages), or why there is none.
    pub fn read(&mut self) -> Result<Read<'_>, OsError> {
        match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => Ok(Read::Data(&self.buf[..n])),
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Read::Idle),
                Some(libc::ENOBUFS) => Ok(Read::Overrun),
                _ => Err(OsError::io("reading NFLOG messages", &e)),
            },
        }
    }
}
