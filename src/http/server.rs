//! The HTTP/1.1 server every netman listener is (external API, internal mutual-TLS API, overlay
//! lease API, debug and health ports). One poller thread per listener holds every open connection
//! — idle keep-alive ones, TLS handshakes and request heads in progress, parked watches — in epoll
//! (through `mio`), so an open connection costs no thread. A connection goes to one of a bounded
//! pool of blocking workers only with a complete request head; the worker reads the body, runs the
//! handler and hands the connection back.

use super::conn::{Conn, Transport};
use super::parse::Head;
use super::stats::{ListenerHealth, ServerMetrics};
use super::{Reply, Request, Response};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Anything that turns a request into a response. Closures work.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Response;

    /// What the server calls: an answer now, or a parked request (see [`Reply`]). By default the
    /// answer of [`Handler::handle`].
    fn reply(&self, req: &Request) -> Reply {
        Reply::Now(self.handle(req))
    }

    /// Adds to an answer the server gives on its own (a refusal such as 400, 408, 413, 431, 503,
    /// or the 500 of a caught panic) what this handler adds to its own answers (security headers,
    /// request id). `req` is the request as far as it was understood (an empty GET / when its
    /// head could not be parsed).
    fn decorate_refusal(&self, _req: &Request, _resp: &mut Response) {}
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
    /// Worker threads running handlers; an open connection holds none unless a request of it is
    /// being handled.
    pub workers: usize,
    /// Complete requests waiting for a worker; beyond this the server answers 503.
    pub backlog: usize,
    /// Open connections of this listener. At the limit the oldest connection that is not being
    /// served (idle, handshaking, sending a head) is closed for a new one; when every connection is
    /// busy the new one is refused.
    pub max_connections: usize,
    /// A request head (request line and header fields) larger than this is answered 431.
    pub max_header_bytes: usize,
    /// A request body larger than this is answered 413.
    pub max_body_bytes: usize,
    /// A whole TLS handshake must complete within this.
    pub handshake_timeout: Duration,
    /// A whole request head must arrive within this of its first byte (and the first request
    /// must begin within this of the connection's start); 408 otherwise.
    pub head_timeout: Duration,
    /// A whole request body must arrive within this once its head was read.
    pub body_timeout: Duration,
    /// The longest a response write may make no progress.
    pub io_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests before it is closed.
    pub idle_timeout: Duration,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: usize,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connection metrics; register them with [`ServerMetrics::register`] to export them.
    pub metrics: ServerMetrics,
    /// Kept current by the server; give a clone to whatever serves `/health`.
    pub health: ListenerHealth,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: 32,
            backlog: 1024,
            max_connections: 10_000,
            max_header_bytes: 1024 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_requests_per_connection: 100_000,
            tls: None,
            metrics: ServerMetrics::default(),
            health: ListenerHealth::default(),
        }
    }
}

/// A request whose head arrived, on its way to a worker.
pub(crate) struct Job {
    pub slot: usize,
    pub conn: Box<Conn>,
    pub head: Head,
}

/// A connection a worker hands back to the poller.
pub(crate) struct Returned {
    pub slot: usize,
    pub conn: Option<Box<Conn>>,
    pub next: Next,
}

pub(crate) enum Next {
    /// The answer is queued on the connection (maybe sent already); then keep it or close it.
    Answered { close: bool },
    /// Hold the request until its signal or time.
    Park {
        parked: super::Parked,
        close: bool,
        is_head: bool,
        request: Box<Request>,
    },
    /// The connection is gone.
    Closed,
}

/// What the poller and the workers of one listener share.
pub(crate) struct Shared {
    pub handler: Arc<dyn Handler>,
    pub options: ServerOptions,
    pub stopping: AtomicBool,
    /// Jobs sent to workers and not yet taken.
    pub queued: AtomicUsize,
    /// Open connections (kept by the poller).
    pub open: AtomicUsize,
    pub jobs: Mutex<Option<Sender<Job>>>,
    pub returns: Sender<Returned>,
    pub waker: Arc<mio::Waker>,
}

impl Shared {
    /// Hands a connection back to the poller.
    pub fn give_back(&self, returned: Returned) {
        if self.returns.send(returned).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    poller: Option<JoinHandle<()>>,
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
        listener.set_nonblocking(true)?;
        super::limits::reserve_connections(options.max_connections + options.workers);
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), super::poller::WAKER)?);
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (returns_tx, returns_rx) = channel::<Returned>();
        let health = options.health.clone();
        let shared = Arc::new(Shared {
            handler: Arc::new(handler),
            options,
            stopping: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            jobs: Mutex::new(Some(jobs_tx)),
            returns: returns_tx,
            waker,
        });
        let port = local_addr.port();
        health.started(local_addr.to_string());

        let jobs_rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(jobs_rx));
        let mut workers = Vec::new();
        for i in 0..shared.options.workers.max(1) {
            let shared = Arc::clone(&shared);
            let jobs = Arc::clone(&jobs_rx);
            let alive = health.worker_started();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("http-{port}-{i}"))
                    .spawn(move || {
                        let _alive = alive;
                        super::worker::run(&shared, &jobs)
                    })?,
            );
        }

        let listener = mio::net::TcpListener::from_std(listener);
        let poller_shared = Arc::clone(&shared);
        let poller = std::thread::Builder::new()
            .name(format!("http-poll-{port}"))
            .spawn(move || {
                let health = poller_shared.options.health.clone();
                match super::poller::Poller::new(poll, listener, poller_shared, returns_rx) {
                    Ok(mut p) => p.run(),
                    Err(e) => log::error!("listener {port}: poller could not start: {e}"),
                }
                health.poller_stopped();
            })?;

        Ok(Server {
            local_addr,
            shared,
            poller: Some(poller),
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether this listener can serve (the same value as `ServerOptions::health`).
    pub fn health(&self) -> ListenerHealth {
        self.shared.options.health.clone()
    }

    pub fn metrics(&self) -> &ServerMetrics {
        &self.shared.options.metrics
    }

    /// Stops accepting, lets workers finish the request they are serving, and joins them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.shared.waker.wake();
        if let Some(t) = self.poller.take() {
            let _ = t.join();
        }
        // Closing the job channel ends the workers once they finish what they hold.
        if let Ok(mut jobs) = self.shared.jobs.lock() {
            jobs.take();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let options = &self.shared.options;
        super::limits::release_connections(options.max_connections + options.workers);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new connection's transport: TLS when the listener has a configuration.
pub(crate) fn transport(
    stream: mio::net::TcpStream,
    tls: &Option<Arc<rustls::ServerConfig>>,
) -> io::Result<Transport> {
    Ok(match tls {
        None => Transport::Plain(stream),
        Some(config) => Transport::Tls(
            Box::new(
                rustls::ServerConnection::new(Arc::clone(config))
                    .map_err(|e| io::Error::other(format!("tls: {e}")))?,
            ),
            stream,
        ),
    })
}

/// An answer as bytes on the wire.
pub(crate) fn serialize(resp: &Response, close: bool, is_head: bool) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(256 + resp.body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        resp.status,
        super::reason(resp.status)
    );
    for (k, v) in &resp.headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("connection") {
            continue;
        }
        let _ = write!(out, "{k}: {v}\r\n");
    }
    let _ = write!(out, "content-length: {}\r\n", resp.body.len());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !is_head {
        out.extend_from_slice(&resp.body);
    }
    out
}

/// A refusal the server gives on its own, decorated by the handler like its own answers.
pub(crate) fn refusal(
    shared: &Shared,
    req: Option<&Request>,
    status: u16,
    message: &str,
) -> Response {
    shared.options.metrics.refused(status);
    let mut resp = Response::error(status, message);
    let fallback;
    let req = match req {
        Some(r) => r,
        None => {
            fallback = Request::new("GET", "/");
            &fallback
        }
    };
    let handler = &shared.handler;
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.decorate_refusal(req, &mut resp)
    }))
    .is_err()
    {
        shared.options.metrics.panics.inc();
        log::error!("panic while decorating a {status} answer");
    }
    resp
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
