//! The synchronous DNS server: UDP workers sharing one socket, a pool of forwarding workers fed
//! through a bounded queue (so slow upstreams never delay internal answers), and TCP with one
//! thread per connection up to a limit, each read under a deadline. A panic while handling a
//! query is caught and counted; the worker goes on.

use super::metrics::{DnsMetrics, Failure, Kind, Transport};
use super::query::{Decision, Forward, Reply, MAX_QUERY_LEN};
use hickory_proto::op::ResponseCode;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// What the server asks of the resolver behind it.
pub trait Handler: Send + Sync + 'static {
    /// Decides about one packet; never blocks.
    fn decide(&self, packet: &[u8], transport: Transport) -> Decision;
    /// Asks the upstreams; may block for their timeouts. Always gives an answer (SERVFAIL when
    /// no upstream answered).
    fn forward(&self, query: &Forward, transport: Transport) -> Reply;
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Threads receiving on the UDP socket.
    pub udp_workers: usize,
    /// Threads forwarding UDP queries to upstreams (each waits on one upstream at a time).
    pub forward_workers: usize,
    /// UDP queries waiting for a forwarding worker; beyond it they are answered SERVFAIL.
    pub forward_queue: usize,
    /// TCP connections served at once; more are closed at once.
    pub tcp_connections: usize,
    /// How long a TCP client may take to send a whole query, from its connection or its previous
    /// answer. Connections idle (or slow) beyond it are closed.
    pub tcp_query_timeout: Duration,
    /// Queries answered on one TCP connection before it is closed.
    pub tcp_queries_per_connection: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            udp_workers: 2,
            forward_workers: 16,
            forward_queue: 512,
            tcp_connections: 64,
            tcp_query_timeout: Duration::from_secs(5),
            tcp_queries_per_connection: 1000,
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("udp_workers", self.udp_workers),
            ("forward_workers", self.forward_workers),
            ("forward_queue", self.forward_queue),
            ("tcp_connections", self.tcp_connections),
            (
                "tcp_queries_per_connection",
                self.tcp_queries_per_connection,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if self.tcp_query_timeout.is_zero() {
            return Err("tcp_query_timeout must be above zero".into());
        }
        Ok(())
    }
}

/// Binds UDP and TCP on `addr`; with port 0, both on the same free port.
pub fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("listen on {addr}: {e}"));
    if addr.port() != 0 {
        return Ok((
            UdpSocket::bind(addr).map_err(context)?,
            TcpListener::bind(addr).map_err(context)?,
        ));
    }
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).map_err(context)?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(context(last.expect("tried")))
}

/// A server running in background threads; stopped (and its threads joined) on `stop` or drop.
pub struct Running {
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Connection threads notice within one poll interval.
        let deadline = Instant::now() + POLL * 10;
        while self.connections.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(POLL / 10);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Serves `handler` on the given sockets. Threads (and so the sockets they open to upstreams)
/// live in the network namespace of the calling thread.
pub fn start<H: Handler>(
    udp: UdpSocket,
    tcp: TcpListener,
    handler: Arc<H>,
    config: &ServerConfig,
    metrics: DnsMetrics,
) -> io::Result<Running> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let udp_addr = udp.local_addr()?;
    let tcp_addr = tcp.local_addr()?;
    udp.set_read_timeout(Some(POLL))?;
    let udp = Arc::new(udp);
    let stopping = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    let mut spawn = |name: String, f: Box<dyn FnOnce() + Send>| -> io::Result<()> {
        threads.push(std::thread::Builder::new().name(name).spawn(f)?);
        Ok(())
    };

    let (queue, jobs) = sync_channel::<(Forward, SocketAddr)>(config.forward_queue);
    let jobs = Arc::new(Mutex::new(jobs));
    for i in 0..config.forward_workers {
        let w = Worker::new(&handler, &metrics, &stopping);
        let (udp, jobs) = (Arc::clone(&udp), Arc::clone(&jobs));
        spawn(
            format!("dns-fwd-{i}"),
            Box::new(move || w.forward_loop(&udp, &jobs)),
        )?;
    }
    for i in 0..config.udp_workers {
        let w = Worker::new(&handler, &metrics, &stopping);
        let (udp, queue) = (Arc::clone(&udp), queue.clone());
        spawn(
            format!("dns-udp-{i}"),
            Box::new(move || w.udp_loop(&udp, &queue)),
        )?;
    }
    drop(queue);
    let w = Worker::new(&handler, &metrics, &stopping);
    let (config, counter) = (config.clone(), Arc::clone(&connections));
    spawn(
        "dns-tcp-accept".into(),
        Box::new(move || w.accept_loop(tcp, &config, &counter)),
    )?;

    Ok(Running {
        udp_addr,
        tcp_addr,
        stopping,
        connections,
        threads,
    })
}

/// What every server thread holds.
struct Worker<H> {
    handler: Arc<H>,
    metrics: DnsMetrics,
    stopping: Arc<AtomicBool>,
}

impl<H> Clone for Worker<H> {
    fn clone(&self) -> Self {
        Worker {
            handler: Arc::clone(&self.handler),
            metrics: self.metrics.clone(),
            stopping: Arc::clone(&self.stopping),
        }
    }
}

impl<H: Handler> Worker<H> {
    fn new(handler: &Arc<H>, metrics: &DnsMetrics, stopping: &Arc<AtomicBool>) -> Self {
        Worker {
            handler: Arc::clone(handler),
            metrics: metrics.clone(),
            stopping: Arc::clone(stopping),
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Runs `f`, counting a panic instead of letting it end the thread.
    fn guarded<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(_) => {
                self.metrics.failure(Failure::Panic);
                None
            }
        }
    }

    fn count(&self, transport: Transport, reply: &Reply) {
        self.metrics.query(transport, reply.kind, Some(reply.rcode));
    }

    fn udp_loop(&self, udp: &UdpSocket, queue: &SyncSender<(Forward, SocketAddr)>) {
        // One byte over the limit, so that a longer datagram is seen as too long.
        let mut buf = vec![0u8; MAX_QUERY_LEN + 1];
        while !self.stopping() {
            let (n, peer) = match udp.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    log::debug!("dns udp receive: {e}");
                    self.metrics.failure(Failure::Receive);
                    continue;
                }
            };
            let decision = self.guarded(|| self.handler.decide(&buf[..n], Transport::Udp));
            let reply = match decision {
                None => continue,
                Some(Decision::Drop) => {
                    self.metrics.query(Transport::Udp, Kind::Invalid, None);
                    continue;
                }
                Some(Decision::Reply(r)) => r,
                Some(Decision::Forward(f)) => match queue.try_send((f, peer)) {
                    Ok(()) => continue,
                    Err(TrySendError::Full((f, _)) | TrySendError::Disconnected((f, _))) => {
                        self.metrics.failure(Failure::ForwardQueueFull);
                        f.error(ResponseCode::ServFail)
                    }
                },
            };
            self.send_udp(udp, &reply, peer);
        }
    }

    /// Counts before sending, so that a client holding its answer sees it counted.
    fn send_udp(&self, udp: &UdpSocket, reply: &Reply, peer: SocketAddr) {
        self.count(Transport::Udp, reply);
        if let Err(e) = udp.send_to(&reply.bytes, peer) {
            log::debug!("dns udp send to {peer}: {e}");
            self.metrics.failure(Failure::Send);
        }
    }

    fn forward_loop(&self, udp: &UdpSocket, jobs: &Mutex<Receiver<(Forward, SocketAddr)>>) {
        while !self.stopping() {
            let next = match jobs.lock() {
                Ok(rx) => rx.recv_timeout(POLL),
                Err(_) => return,
            };
            let (job, peer) = match next {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if let Some(reply) = self.guarded(|| self.handler.forward(&job, Transport::Udp)) {
                self.send_udp(udp, &reply, peer);
            }
        }
    }

    fn accept_loop(&self, listener: TcpListener, config: &ServerConfig, open: &Arc<AtomicUsize>) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        while !self.stopping() {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(POLL.as_millis() as u16)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    log::error!("dns tcp poll: {e}");
                    std::thread::sleep(POLL);
                    continue;
                }
            }
            let Ok((stream, _)) = listener.accept() else {
                continue;
            };
            if open.fetch_add(1, Ordering::SeqCst) >= config.tcp_connections {
                open.fetch_sub(1, Ordering::SeqCst);
                self.metrics.failure(Failure::TcpConnectionLimit);
                continue;
            }
            let w = self.clone();
            let (config, open2) = (config.clone(), Arc::clone(open));
            let spawned = std::thread::Builder::new()
                .name("dns-tcp".into())
                .spawn(move || {
                    w.serve_connection(stream, &config);
                    open2.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                log::warn!("dns tcp: no thread for a connection: {e}");
                open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn serve_connection(&self, mut stream: TcpStream, config: &ServerConfig) {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(config.tcp_query_timeout));
        for _ in 0..config.tcp_queries_per_connection {
            let deadline = Instant::now() + config.tcp_query_timeout;
            let packet = match self.read_message(&mut stream, deadline) {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    if e.kind() == io::ErrorKind::TimedOut {
                        self.metrics.failure(Failure::TcpDeadline);
                    }
                    return;
                }
            };
            let reply = self.guarded(|| match self.handler.decide(&packet, Transport::Tcp) {
                Decision::Reply(r) => Some(r),
                Decision::Forward(f) => Some(self.handler.forward(&f, Transport::Tcp)),
                Decision::Drop => None,
            });
            let reply = match reply {
                None => return,
                Some(None) => {
                    self.metrics.query(Transport::Tcp, Kind::Invalid, None);
                    return;
                }
                Some(Some(r)) => r,
            };
            let mut framed = Vec::with_capacity(reply.bytes.len() + 2);
            framed.extend_from_slice(&(reply.bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&reply.bytes);
            self.count(Transport::Tcp, &reply);
            if stream.write_all(&framed).is_err() {
                self.metrics.failure(Failure::Send);
                return;
            }
        }
    }

    /// One length-prefixed message; `None` when the client closed the connection between
    /// messages.
    fn read_message(
        &self,
        stream: &mut TcpStream,
        deadline: Instant,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 2];
        if !self.read_full(stream, &mut len, deadline, true)? {
            return Ok(None);
        }
        let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
        self.read_full(stream, &mut packet, deadline, false)?;
        Ok(Some(packet))
    }

    /// Fills `buf` before `deadline`. `Ok(false)`: closed before the first byte, where allowed.
    fn read_full(
        &self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        deadline: Instant,
        eof_ok: bool,
    ) -> io::Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.stopping() {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            stream.set_read_timeout(Some(left.min(POLL)))?;
            match stream.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 && eof_ok => return Ok(false),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}
