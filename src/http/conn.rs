//! One client connection, always non-blocking: plain TCP or rustls over TCP, with the bytes read
//! but not yet used and the answer not yet written. The poller drives it on readiness events; a
//! worker that holds it waits on its socket with `poll(2)` and a deadline.

use rustls::pki_types::CertificateDer;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::time::Instant;

/// How much one read asks for.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) enum Transport {
    Plain(mio::net::TcpStream),
    Tls(Box<rustls::ServerConnection>, mio::net::TcpStream),
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Got {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing more now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
}

pub(crate) struct Conn {
    pub transport: Transport,
    pub peer: SocketAddr,
    /// Bytes received and not consumed yet (a partial head, a pipelined request).
    pub inbuf: Vec<u8>,
    /// How far `inbuf` was searched for the end of a head.
    pub scanned: usize,
    /// Plaintext queued for the peer and how much of it was handed to the socket (or to rustls).
    out: Vec<u8>,
    out_pos: usize,
    pub peer_certs: Option<Vec<CertificateDer<'static>>>,
    pub served: usize,
}

impl Conn {
    pub fn new(transport: Transport, peer: SocketAddr) -> Conn {
        Conn {
            transport,
            peer,
            inbuf: Vec::new(),
            scanned: 0,
            out: Vec::new(),
            out_pos: 0,
            peer_certs: None,
            served: 0,
        }
    }

    pub fn socket(&self) -> &mio::net::TcpStream {
        match &self.transport {
            Transport::Plain(s) | Transport::Tls(_, s) => s,
        }
    }

    pub fn socket_mut(&mut self) -> &mut mio::net::TcpStream {
        match &mut self.transport {
            Transport::Plain(s) | Transport::Tls(_, s) => s,
        }
    }

    pub fn is_handshaking(&self) -> bool {
        matches!(&self.transport, Transport::Tls(tls, _) if tls.is_handshaking())
    }

    /// Advances a TLS handshake as far as the socket allows. `Ok(true)` once it is complete and
    /// everything the handshake produced was sent (or queued for the next flush).
    pub fn handshake(&mut self) -> io::Result<bool> {
        let Transport::Tls(tls, sock) = &mut self.transport else {
            return Ok(true);
        };
        loop {
            while tls.wants_write() {
                match tls.write_tls(sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            if !tls.is_handshaking() {
                self.peer_certs = tls
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
                return Ok(true);
            }
            match tls.read_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                // Send the alert that explains the refusal, then give up.
                let _ = tls.write_tls(sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Reads what is available into `inbuf`, at most up to `limit` bytes held.
    pub fn read_some(&mut self, limit: usize) -> io::Result<Got> {
        if self.inbuf.len() >= limit {
            return Ok(Got::WouldBlock);
        }
        let want = READ_CHUNK.min(limit - self.inbuf.len());
        let start = self.inbuf.len();
        self.inbuf.resize(start + want, 0);
        let result = read_into(&mut self.transport, &mut self.inbuf[start..]);
        let n = match &result {
            Ok(Got::Data(n)) => *n,
            _ => 0,
        };
        self.inbuf.truncate(start + n);
        if self.inbuf.is_empty() {
            // An idle connection keeps no buffer.
            self.inbuf = Vec::new();
        }
        result
    }

    /// Nothing queued is left to send.
    pub fn all_sent(&self) -> bool {
        self.out_pos >= self.out.len()
            && !matches!(&self.transport, Transport::Tls(tls, _) if tls.wants_write())
    }

    /// Queues plaintext for the peer; [`Conn::flush`] sends it.
    pub fn queue(&mut self, bytes: &[u8]) {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Sends queued bytes as far as the socket takes them. `Ok(true)` when nothing is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        let done = match &mut self.transport {
            Transport::Plain(sock) => {
                while self.out_pos < self.out.len() {
                    match sock.write(&self.out[self.out_pos..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => self.out_pos += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                true
            }
            Transport::Tls(tls, sock) => loop {
                if self.out_pos < self.out.len() {
                    let n = tls.writer().write(&self.out[self.out_pos..])?;
                    self.out_pos += n;
                }
                if tls.wants_write() {
                    match tls.write_tls(sock) {
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                if self.out_pos >= self.out.len() {
                    break true;
                }
            },
        };
        if done {
            self.out = Vec::new();
            self.out_pos = 0;
        }
        Ok(done)
    }

    /// Ends our side: TLS close_notify (queued; flush sends it), then a TCP half-close.
    pub fn close_write(&mut self) {
        if let Transport::Tls(tls, _) = &mut self.transport {
            tls.send_close_notify();
            let _ = self.flush();
        }
        let _ = self.socket().shutdown(Shutdown::Write);
    }

    /// Blocks until the socket is readable (or writable) or `deadline` passes.
    pub fn wait(&self, writable: bool, deadline: Instant) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let flags = if writable {
            PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(self.socket().as_fd(), flags)];
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) => continue,
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    /// Reads at least one more byte into `inbuf`, waiting until `deadline`.
    pub fn read_blocking(&mut self, limit: usize, deadline: Instant) -> io::Result<usize> {
        loop {
            match self.read_some(limit)? {
                Got::Data(n) => return Ok(n),
                Got::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
                Got::WouldBlock => {
                    if self.inbuf.len() >= limit {
                        return Err(io::Error::other("read buffer full"));
                    }
                    self.wait(false, deadline)?
                }
            }
        }
    }

    /// Sends everything queued, waiting until `deadline`.
    pub fn flush_blocking(&mut self, deadline: Instant) -> io::Result<()> {
        while !self.flush()? {
            self.wait(true, deadline)?;
        }
        Ok(())
    }
}

fn read_into(transport: &mut Transport, buf: &mut [u8]) -> io::Result<Got> {
    match transport {
        Transport::Plain(sock) => loop {
            return match sock.read(buf) {
                Ok(0) => Ok(Got::Eof),
                Ok(n) => Ok(Got::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Got::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        },
        Transport::Tls(tls, sock) => loop {
            match tls.reader().read(buf) {
                Ok(0) => return Ok(Got::Eof),
                Ok(n) => return Ok(Got::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Got::Eof),
                Err(e) => return Err(e),
            }
            match tls.read_tls(sock) {
                Ok(0) => return Ok(Got::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Got::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                let _ = tls.write_tls(sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // A key update or similar may need an answer.
            while tls.wants_write() {
                match tls.write_tls(sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        },
    }
}
