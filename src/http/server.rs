//! A small blocking HTTP/1.1 server: one accept thread, a bounded pool of worker threads, read and
//! idle timeouts, header and body size limits, optional TLS and mutual TLS. Every netman listener
//! (external API, internal mTLS API, debug and health ports) is one of these.

use super::{Request, Response};
use rustls::pki_types::CertificateDer;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How much of an oversized body is read and dropped after answering 413.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Anything that turns a request into a response. Closures work.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Response;
}

impl<F> Handler for F
where
    F: Fn(&Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, req: &Request) -> Response {
        self(req)
    }
}

#[derive(Clone)]
pub struct ServerOptions {
    /// Worker threads; each serves one connection at a time.
    pub workers: usize,
    /// Connections accepted but waiting for a worker; beyond this the server answers 503.
    pub backlog: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    /// Time allowed for one read or write while a request is in progress.
    pub io_timeout: Duration,
    /// How long a keep-alive connection may sit idle before it is closed.
    pub idle_timeout: Duration,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: usize,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: 32,
            backlog: 256,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            io_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_requests_per_connection: 10_000,
            tls: None,
        }
    }
}

pub struct Server {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and starts serving `handler` in background threads.
    pub fn start<H: Handler>(addr: &str, options: ServerOptions, handler: H) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
        Self::from_listener(listener, options, handler)
    }

    pub fn from_listener<H: Handler>(
        listener: TcpListener,
        options: ServerOptions,
        handler: H,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<TcpStream>(options.backlog.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let options = Arc::new(options);

        let mut workers = Vec::with_capacity(options.workers);
        for i in 0..options.workers.max(1) {
            let rx = Arc::clone(&rx);
            let handler = Arc::clone(&handler);
            let options = Arc::clone(&options);
            let stopping = Arc::clone(&stopping);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("http-{}-{i}", local_addr.port()))
                    .spawn(move || worker_loop(&rx, &*handler, &options, &stopping))?,
            );
        }

        let accept_stopping = Arc::clone(&stopping);
        let accept_thread = std::thread::Builder::new()
            .name(format!("http-accept-{}", local_addr.port()))
            .spawn(move || accept_loop(listener, tx, &accept_stopping))?;

        Ok(Server {
            local_addr,
            stopping,
            accept_thread: Some(accept_thread),
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets workers finish the request they are serving, and joins them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, tx: SyncSender<TcpStream>, stopping: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    // Poll with a timeout rather than block in accept(), so shutdown needs no wake-up connection
    // (which could not reach a listener inside another network namespace anyway).
    while !stopping.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("poll on listener failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                log::debug!("accept failed: {e}");
                continue;
            }
        };
        match tx.try_send(stream) {
            Ok(()) => {}
            Err(TrySendError::Full(mut stream)) => {
                let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
            Err(TrySendError::Disconnected(_)) => break,
        }
    }
    // Dropping tx makes idle workers see a closed channel and exit.
}

fn worker_loop(
    rx: &Mutex<Receiver<TcpStream>>,
    handler: &dyn Handler,
    options: &ServerOptions,
    stopping: &AtomicBool,
) {
    loop {
        let next = rx.lock().map(|r| r.recv());
        let stream = match next {
            Ok(Ok(s)) => s,
            _ => return,
        };
        if stopping.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = serve_connection(stream, handler, options, stopping) {
            log::debug!("connection ended: {e}");
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    handler: &dyn Handler,
    options: &ServerOptions,
    stopping: &AtomicBool,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(options.io_timeout))?;
    stream.set_write_timeout(Some(options.io_timeout))?;
    let peer_addr = stream.peer_addr()?;
    match &options.tls {
        None => {
            let read_half = stream.try_clone()?;
            let conn = Connection {
                reader: BufReader::new(Box::new(read_half)),
                writer: Box::new(stream.try_clone()?),
                tcp: stream,
            };
            conn.serve(handler, options, stopping, peer_addr, None)
        }
        Some(config) => {
            let tcp = stream.try_clone()?;
            let mut tls = rustls::StreamOwned::new(
                rustls::ServerConnection::new(Arc::clone(config))
                    .map_err(|e| io::Error::other(format!("tls: {e}")))?,
                stream,
            );
            // Complete the handshake now so a missing or untrusted client certificate is refused
            // before any request is read.
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock)?;
            }
            let peer_certs: Option<Vec<CertificateDer<'static>>> = tls
                .conn
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
            let shared = Arc::new(Mutex::new(tls));
            let conn = Connection {
                reader: BufReader::new(Box::new(SharedTls(Arc::clone(&shared)))),
                writer: Box::new(SharedTls(shared)),
                tcp,
            };
            conn.serve(handler, options, stopping, peer_addr, peer_certs)
        }
    }
}

/// A TLS stream used for reading and writing by one thread, one after the other.
struct SharedTls(Arc<Mutex<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>>);

impl Read for SharedTls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .read(buf)
    }
}

impl Write for SharedTls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .flush()
    }
}

struct Connection {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    tcp: TcpStream,
}

enum HeadError {
    Closed,
    TooLarge,
    Malformed(String),
    Io(io::Error),
}

impl Connection {
    fn serve(
        mut self,
        handler: &dyn Handler,
        options: &ServerOptions,
        stopping: &AtomicBool,
        peer_addr: SocketAddr,
        peer_certs: Option<Vec<CertificateDer<'static>>>,
    ) -> io::Result<()> {
        for served in 0..options.max_requests_per_connection {
            // Between requests, wait at most the idle timeout for the next one to begin.
            let wait = if served == 0 {
                options.io_timeout
            } else {
                options.idle_timeout
            };
            if self.reader.buffer().is_empty() && !self.wait_for_request(wait, stopping)? {
                return Ok(());
            }
            self.tcp.set_read_timeout(Some(options.io_timeout))?;
            let head = match read_head(&mut self.reader, options.max_header_bytes) {
                Ok(h) => h,
                Err(HeadError::Closed) => return Ok(()),
                Err(HeadError::TooLarge) => {
                    return self.reply_and_close(Response::error(431, "request header too large"))
                }
                Err(HeadError::Malformed(m)) => {
                    return self
                        .reply_and_close(Response::error(400, &format!("malformed request: {m}")))
                }
                Err(HeadError::Io(e)) => return Err(e),
            };
            let mut req = match parse_head(&head) {
                Ok(r) => r,
                Err(m) => {
                    return self
                        .reply_and_close(Response::error(400, &format!("malformed request: {m}")))
                }
            };
            req.peer_addr = Some(peer_addr);
            req.peer_certificates = peer_certs.clone();

            if req
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            {
                let declared = req
                    .header("content-length")
                    .and_then(|v| v.parse::<usize>().ok());
                if declared.is_some_and(|n| n > options.max_body_bytes) {
                    return self.reply_and_close(Response::error(413, "request body too large"));
                }
                self.writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                self.writer.flush()?;
            }
            match read_body(&mut self.reader, &req, options.max_body_bytes) {
                Ok(body) => req.body = body,
                Err(BodyError::TooLarge) => {
                    write_response(
                        &mut self.writer,
                        &Response::error(413, "request body too large"),
                        true,
                        false,
                    )?;
                    // Read (and drop) a bounded rest of the body so a client still sending it
                    // gets to read the answer instead of a reset connection.
                    let _ = io::copy(&mut self.reader.by_ref().take(DRAIN_LIMIT), &mut io::sink());
                    let _ = self.tcp.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Err(BodyError::Malformed(m)) => {
                    return self
                        .reply_and_close(Response::error(400, &format!("malformed request: {m}")))
                }
                Err(BodyError::Io(e)) => return Err(e),
            }

            let wants_close = req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                || req.http10;
            let is_head = req.method == "HEAD";
            let started = Instant::now();
            let resp = handler.handle(&req);
            log::trace!(
                "{} {} -> {} in {:?}",
                req.method,
                req.path,
                resp.status,
                started.elapsed()
            );
            let close = wants_close
                || stopping.load(Ordering::SeqCst)
                || served + 1 == options.max_requests_per_connection;
            write_response(&mut self.writer, &resp, close, is_head)?;
            if close {
                let _ = self.tcp.shutdown(Shutdown::Write);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Waits up to `wait` for the next request to begin, in short slices so that a shutdown
    /// does not wait for idle keep-alive clients. `false` when the connection should end.
    fn wait_for_request(&mut self, wait: Duration, stopping: &AtomicBool) -> io::Result<bool> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stopping.load(Ordering::SeqCst) {
                return Ok(false);
            }
            self.tcp
                .set_read_timeout(Some(left.min(Duration::from_millis(250))))?;
            match self.reader.fill_buf() {
                Ok([]) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn reply_and_close(mut self, resp: Response) -> io::Result<()> {
        write_response(&mut self.writer, &resp, true, false)?;
        let _ = self.tcp.shutdown(Shutdown::Both);
        Ok(())
    }
}

fn read_head(reader: &mut impl BufRead, max: usize) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take((max + 1 - head.len().min(max)) as u64)
            .read_until(b'\n', &mut line)
            .map_err(HeadError::Io)?;
        if n == 0 {
            return if head.is_empty() {
                Err(HeadError::Closed)
            } else {
                Err(HeadError::Malformed(
                    "connection closed inside the header".into(),
                ))
            };
        }
        head.extend_from_slice(&line);
        if head.len() > max {
            return Err(HeadError::TooLarge);
        }
        // Tolerate blank lines before the request line (RFC 9112 §2.2).
        if (line == b"\r\n" || line == b"\n") && head.len() == line.len() {
            head.clear();
            continue;
        }
        if line == b"\r\n" || line == b"\n" {
            return Ok(head);
        }
        if !line.ends_with(b"\n") {
            return Err(HeadError::TooLarge);
        }
    }
}

fn parse_head(head: &[u8]) -> Result<Request, String> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete header".into()),
        Err(e) => return Err(e.to_string()),
    }
    let method = parsed.method.ok_or("missing method")?.to_string();
    let target = parsed.path.ok_or("missing path")?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let headers = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    Ok(Request {
        method,
        path: percent_decode(path),
        query: super::parse_query(query),
        raw_query: query.to_string(),
        headers,
        body: Vec::new(),
        peer_addr: None,
        peer_certificates: None,
        http10: parsed.version == Some(0),
    })
}

enum BodyError {
    TooLarge,
    Malformed(String),
    Io(io::Error),
}

fn read_body(reader: &mut impl BufRead, req: &Request, max: usize) -> Result<Vec<u8>, BodyError> {
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader, max);
    }
    let len = match req.header("content-length") {
        None => return Ok(Vec::new()),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| BodyError::Malformed(format!("bad content-length {v:?}")))?,
    };
    if len > max {
        return Err(BodyError::TooLarge);
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).map_err(BodyError::Io)?;
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader
            .by_ref()
            .take(1024)
            .read_line(&mut line)
            .map_err(BodyError::Io)?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| BodyError::Malformed(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut trailer = String::new();
                let n = reader
                    .by_ref()
                    .take(8192)
                    .read_line(&mut trailer)
                    .map_err(BodyError::Io)?;
                if n == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > max {
            return Err(BodyError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(BodyError::Io)?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).map_err(BodyError::Io)?;
        if &crlf != b"\r\n" {
            return Err(BodyError::Malformed("chunk not followed by CRLF".into()));
        }
    }
}

fn write_response(
    w: &mut dyn Write,
    resp: &Response,
    close: bool,
    is_head: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + resp.body.len());
    write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        resp.status,
        super::reason(resp.status)
    )?;
    for (k, v) in &resp.headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(out, "content-length: {}\r\n", resp.body.len())?;
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !is_head {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
