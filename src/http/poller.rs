//! The poller of one listener: accepts connections and keeps every one that no worker holds —
//! TLS handshakes and request heads in progress, idle keep-alive connections, parked requests,
//! answers still being sent — in epoll, each with its deadline. Only a connection with a complete
//! request head goes to a worker.

use super::conn::{Conn, Got};
use super::parse::{self, Rejection};
use super::server::{refusal, serialize, transport, Job, Next, Returned, Shared};
use super::worker::{panic_text, parked_failure};
use super::{Parked, Request, Response, Signal, Wake};
use mio::{Events, Interest, Token};
use std::collections::BTreeSet;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);
const FIRST_SLOT: usize = 2;

/// After answering and closing, unread request bytes are read and dropped for this long (so the
/// client reads the answer instead of a reset), at most [`DRAIN_BYTES`].
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
/// Retry of `accept` after it failed for lack of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

enum Phase {
    Handshake,
    /// Waiting for a request to begin; `first` for a new connection.
    Idle {
        first: bool,
    },
    /// Part of a request head arrived.
    Head,
    /// A worker holds the connection.
    Busy,
    Parked(Box<ParkedRequest>),
    /// An answer is being sent; then keep the connection or close it.
    Writing {
        close: bool,
    },
    /// Closed for writing; reading and dropping what the client still sends.
    Draining {
        dropped: usize,
    },
}

struct ParkedRequest {
    parked: Parked,
    close: bool,
    is_head: bool,
    request: Box<Request>,
    id: u64,
}

struct Slot {
    conn: Option<Box<Conn>>,
    phase: Phase,
    deadline: Option<Instant>,
    /// Key in the eviction order while the connection may be closed for a new one.
    evict_key: Option<u64>,
}

/// Requests parked on one signal.
struct Watched {
    signal: Signal,
    seen: u64,
    parked: Vec<(usize, u64)>,
}

pub(crate) struct Poller {
    poll: mio::Poll,
    listener: mio::net::TcpListener,
    shared: Arc<Shared>,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    returns: Receiver<Returned>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    open: usize,
    deadlines: BTreeSet<(Instant, usize)>,
    evictable: BTreeSet<(u64, usize)>,
    seq: u64,
    watched: Vec<Watched>,
    accept_retry: Option<Instant>,
}

impl Poller {
    pub fn new(
        poll: mio::Poll,
        mut listener: mio::net::TcpListener,
        shared: Arc<Shared>,
        returns: Receiver<Returned>,
    ) -> io::Result<Poller> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let jobs = shared.jobs.lock().ok().and_then(|j| j.clone());
        Ok(Poller {
            poll,
            listener,
            jobs,
            shared,
            returns,
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            deadlines: BTreeSet::new(),
            evictable: BTreeSet::new(),
            seq: 0,
            watched: Vec::new(),
            accept_retry: None,
        })
    }

    pub fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.shared.stopping.load(Ordering::SeqCst) {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("epoll failed: {e}");
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => self.guarded(t - FIRST_SLOT, |p, i| p.progress(i)),
                }
            }
            // The waker fires for returned connections and for signals; both are cheap to check.
            while let Ok(returned) = self.returns.try_recv() {
                let slot = returned.slot;
                self.guarded(slot, move |p, i| p.returned(i, returned));
            }
            self.check_signals();
            self.expire();
            if self.accept_retry.is_some_and(|t| t <= Instant::now()) {
                self.accept_retry = None;
                self.accept();
            }
        }
        // Dropping the poller closes every connection it holds.
    }

    /// Runs `f` on a slot; a panic closes that connection only and is counted.
    fn guarded(&mut self, i: usize, f: impl FnOnce(&mut Poller, usize)) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(self, i))) {
            self.shared.options.metrics.panics.inc();
            log::error!("panic in the HTTP poller: {}", panic_text(&panic));
            if self.slots.get(i).is_some_and(|s| s.is_some()) {
                self.close(i, "panic");
            }
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let next = self
            .deadlines
            .first()
            .map(|(t, _)| *t)
            .into_iter()
            .chain(self.accept_retry)
            .min()?;
        // Rounded up, so a deadline is not polled for again a moment before it passes.
        Some(next.saturating_duration_since(now) + Duration::from_millis(1))
    }

    // ---- slots ---------------------------------------------------------------------------

    fn slot(&mut self, i: usize) -> &mut Slot {
        self.slots[i].as_mut().expect("live slot")
    }

    fn set_deadline(&mut self, i: usize, deadline: Option<Instant>) {
        let slot = self.slots[i].as_mut().expect("live slot");
        if let Some(old) = slot.deadline.take() {
            self.deadlines.remove(&(old, i));
        }
        slot.deadline = deadline;
        if let Some(d) = deadline {
            self.deadlines.insert((d, i));
        }
    }

    fn set_evictable(&mut self, i: usize, evictable: bool) {
        let slot = self.slots[i].as_mut().expect("live slot");
        if let Some(key) = slot.evict_key.take() {
            self.evictable.remove(&(key, i));
        }
        if evictable {
            self.seq += 1;
            slot.evict_key = Some(self.seq);
            self.evictable.insert((self.seq, i));
        }
    }

    fn set_phase(&mut self, i: usize, phase: Phase, deadline: Option<Instant>) {
        let evictable = matches!(phase, Phase::Handshake | Phase::Idle { .. } | Phase::Head);
        let old = std::mem::replace(&mut self.slot(i).phase, phase);
        let metrics = &self.shared.options.metrics;
        if matches!(old, Phase::Parked(_)) {
            metrics.parked_requests.dec();
        }
        if matches!(old, Phase::Busy) {
            metrics.busy_connections.dec();
        }
        match self.slot(i).phase {
            Phase::Parked(_) => {
                self.shared.options.metrics.parked_requests.inc();
            }
            Phase::Busy => {
                self.shared.options.metrics.busy_connections.inc();
            }
            _ => {}
        }
        self.set_deadline(i, deadline);
        self.set_evictable(i, evictable);
    }

    fn close(&mut self, i: usize, reason: &str) {
        self.set_phase(i, Phase::Draining { dropped: 0 }, None);
        self.set_evictable(i, false);
        if let Some(mut slot) = self.slots[i].take() {
            if let Some(mut conn) = slot.conn.take() {
                let _ = self.poll.registry().deregister(conn.socket_mut());
            }
            self.free.push(i);
            self.open -= 1;
            self.shared.open.store(self.open, Ordering::Relaxed);
            self.shared.options.metrics.open_connections.dec();
            if !reason.is_empty() {
                self.shared.options.metrics.closed(reason);
            }
        }
    }

    // ---- accepting -------------------------------------------------------------------------

    fn accept(&mut self) {
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EMFILE, ENFILE
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                    // Out of descriptors: make room by closing the oldest idle connection and
                    // try again shortly (the listener's edge will not fire again by itself).
                    self.shared.options.health.accept_failed(e.to_string());
                    if !self.evict_oldest() {
                        log::warn!("accept: {e}; every open connection is busy");
                    }
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
                Err(e) => {
                    log::debug!("accept failed: {e}");
                    continue;
                }
            };
            if self.open >= self.shared.options.max_connections && !self.evict_oldest() {
                self.refuse_at_accept(&mut stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let transport = match transport(stream, &self.shared.options.tls) {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("new connection: {e}");
                    continue;
                }
            };
            let mut conn = Box::new(Conn::new(transport, peer));
            let i = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.slots.push(None);
                    self.slots.len() - 1
                }
            };
            if let Err(e) = self.poll.registry().register(
                conn.socket_mut(),
                Token(i + FIRST_SLOT),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("registering a connection: {e}");
                self.free.push(i);
                continue;
            }
            let handshaking = conn.is_handshaking();
            self.slots[i] = Some(Slot {
                conn: Some(conn),
                phase: Phase::Idle { first: true },
                deadline: None,
                evict_key: None,
            });
            self.open += 1;
            self.shared.open.store(self.open, Ordering::Relaxed);
            self.shared.options.metrics.open_connections.inc();
            let now = Instant::now();
            if handshaking {
                let d = now + self.shared.options.handshake_timeout;
                self.set_phase(i, Phase::Handshake, Some(d));
            } else {
                let d = now + self.shared.options.head_timeout;
                self.set_phase(i, Phase::Idle { first: true }, Some(d));
            }
        }
    }

    /// Every connection is busy: a plain listener says 503, a TLS one can only close.
    fn refuse_at_accept(&mut self, stream: &mut mio::net::TcpStream) {
        use std::io::Write;
        self.shared.options.metrics.closed("limit");
        if self.shared.options.tls.is_none() {
            let resp = refusal(&self.shared, None, 503, "too many open connections");
            let _ = stream.write(&serialize(&resp, true, false));
        }
    }

    /// Closes the connection that has waited longest without being served. `false` if none.
    fn evict_oldest(&mut self) -> bool {
        match self.evictable.first().copied() {
            Some((_, i)) => {
                self.close(i, "evicted");
                true
            }
            None => false,
        }
    }

    // ---- progress ----------------------------------------------------------------------------

    /// Does whatever a readiness event (or a connection coming back) allows.
    fn progress(&mut self, i: usize) {
        let Some(slot) = self.slots.get(i).and_then(|s| s.as_ref()) else {
            return;
        };
        match slot.phase {
            Phase::Busy => {}
            Phase::Handshake => self.handshake(i),
            Phase::Idle { .. } | Phase::Head => self.read_head(i),
            Phase::Parked(_) => self.watch_parked(i),
            Phase::Writing { close } => self.write(i, close),
            Phase::Draining { .. } => self.drain(i),
        }
    }

    fn handshake(&mut self, i: usize) {
        let conn = self.slot(i).conn.as_mut().expect("conn");
        match conn.handshake() {
            Ok(false) => {}
            Ok(true) => {
                let d = Instant::now() + self.shared.options.head_timeout;
                self.set_phase(i, Phase::Idle { first: true }, Some(d));
                self.read_head(i);
            }
            Err(e) => {
                log::debug!("TLS handshake with {} failed: {e}", conn.peer);
                self.close(i, "handshake_failed");
            }
        }
    }

    fn read_head(&mut self, i: usize) {
        let limit = self.shared.options.max_header_bytes + 1;
        loop {
            let conn = self.slot(i).conn.as_mut().expect("conn");
            // A pipelined request may already be complete.
            let skip = parse::leading_empty_lines(&conn.inbuf);
            if skip > 0 {
                conn.inbuf.drain(..skip);
                conn.scanned = 0;
            }
            if !conn.inbuf.is_empty() {
                if let Some(end) = parse::head_end(&conn.inbuf, conn.scanned) {
                    return self.dispatch(i, end);
                }
                conn.scanned = conn.inbuf.len();
                if conn.inbuf.len() >= limit {
                    return self.refuse(i, None, Rejection::new(431, "request head too large"));
                }
                if matches!(self.slot(i).phase, Phase::Idle { .. }) {
                    let d = Instant::now() + self.shared.options.head_timeout;
                    self.set_phase(i, Phase::Head, Some(d));
                }
            }
            let conn = self.slot(i).conn.as_mut().expect("conn");
            match conn.read_some(limit) {
                Ok(Got::Data(_)) => continue,
                Ok(Got::WouldBlock) => return,
                Ok(Got::Eof) => return self.close(i, ""),
                Err(e) => {
                    log::debug!("reading from {}: {e}", conn.peer);
                    return self.close(i, "");
                }
            }
        }
    }

    /// A complete head is in the buffer: parse it, then give it to a worker or refuse it.
    fn dispatch(&mut self, i: usize, end: usize) {
        let max_body = self.shared.options.max_body_bytes as u64;
        let conn = self.slot(i).conn.as_mut().expect("conn");
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            parse::parse_head(&conn.inbuf[..end], max_body)
        }));
        conn.inbuf.drain(..end);
        conn.scanned = 0;
        let head = match parsed {
            Ok(Ok(head)) => head,
            Ok(Err(rejection)) => return self.refuse(i, None, rejection),
            Err(panic) => {
                self.shared.options.metrics.panics.inc();
                log::error!("panic in the request parser: {}", panic_text(&panic));
                return self.refuse(i, None, Rejection::new(500, "internal server error"));
            }
        };
        if self.shared.queued.load(Ordering::SeqCst) >= self.shared.options.backlog {
            let req = head.request;
            return self.refuse(i, Some(&req), Rejection::new(503, "server busy"));
        }
        let conn = self.slot(i).conn.take().expect("conn");
        self.set_phase(i, Phase::Busy, None);
        let Some(jobs) = &self.jobs else {
            return self.close(i, "");
        };
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if jobs
            .send(Job {
                slot: i,
                conn,
                head,
            })
            .is_err()
        {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            self.close(i, "");
        }
    }

    /// Answers on the server's own behalf and closes the connection after the answer.
    fn refuse(&mut self, i: usize, req: Option<&Request>, rejection: Rejection) {
        let shell;
        let req = match req {
            None if !rejection.headers.is_empty() => {
                let mut r = Request::new("GET", "/");
                r.headers = rejection.headers.clone();
                shell = r;
                Some(&shell)
            }
            other => other,
        };
        let resp = refusal(&self.shared, req, rejection.status, &rejection.message);
        self.send(i, &resp, true, false);
    }

    /// Queues an answer and starts sending it.
    fn send(&mut self, i: usize, resp: &Response, close: bool, is_head: bool) {
        let bytes = serialize(resp, close, is_head);
        self.slot(i).conn.as_mut().expect("conn").queue(&bytes);
        let d = Instant::now() + self.shared.options.io_timeout;
        self.set_phase(i, Phase::Writing { close }, Some(d));
        self.write(i, close);
    }

    fn write(&mut self, i: usize, close: bool) {
        let conn = self.slot(i).conn.as_mut().expect("conn");
        match conn.flush() {
            Ok(false) => {
                // Progress pushes the deadline: it bounds a stall, not a large answer.
                let d = Instant::now() + self.shared.options.io_timeout;
                self.set_deadline(i, Some(d));
            }
            Ok(true) if close => {
                conn.close_write();
                let d = Instant::now() + DRAIN_TIME;
                self.set_phase(i, Phase::Draining { dropped: 0 }, Some(d));
                self.drain(i);
            }
            Ok(true) => {
                let d = Instant::now() + self.shared.options.idle_timeout;
                self.set_phase(i, Phase::Idle { first: false }, Some(d));
                self.read_head(i);
            }
            Err(_) => self.close(i, ""),
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            let slot = self.slot(i);
            let Phase::Draining { dropped } = &mut slot.phase else {
                return;
            };
            let conn = slot.conn.as_mut().expect("conn");
            conn.inbuf.clear();
            match conn.read_some(64 * 1024) {
                Ok(Got::Data(n)) => {
                    *dropped += n;
                    if *dropped > DRAIN_BYTES {
                        return self.close(i, "");
                    }
                }
                Ok(Got::WouldBlock) => {
                    conn.inbuf = Vec::new();
                    return;
                }
                Ok(Got::Eof) | Err(_) => return self.close(i, ""),
            }
        }
    }

    /// A parked connection became readable: notice a client that left, keep pipelined bytes.
    fn watch_parked(&mut self, i: usize) {
        let limit = self.shared.options.max_header_bytes + 1;
        let conn = self.slot(i).conn.as_mut().expect("conn");
        loop {
            match conn.read_some(limit) {
                Ok(Got::Data(_)) => continue,
                Ok(Got::WouldBlock) => return,
                Ok(Got::Eof) | Err(_) => return self.close(i, ""),
            }
        }
    }

    // ---- connections coming back from workers ---------------------------------------------------

    fn returned(&mut self, i: usize, returned: Returned) {
        if !matches!(
            self.slots.get(i),
            Some(Some(Slot {
                phase: Phase::Busy,
                ..
            }))
        ) {
            return;
        }
        match (returned.conn, returned.next) {
            (Some(conn), Next::Answered { close }) => {
                self.slot(i).conn = Some(conn);
                let d = Instant::now() + self.shared.options.io_timeout;
                self.set_phase(i, Phase::Writing { close }, Some(d));
                self.write(i, close);
            }
            (
                Some(conn),
                Next::Park {
                    parked,
                    close,
                    is_head,
                    request,
                },
            ) => {
                self.slot(i).conn = Some(conn);
                self.park(i, parked, close, is_head, request);
            }
            _ => self.close(i, ""),
        }
    }

    fn park(
        &mut self,
        i: usize,
        parked: Parked,
        close: bool,
        is_head: bool,
        request: Box<Request>,
    ) {
        self.seq += 1;
        let id = self.seq;
        let signal = parked.signal.clone();
        let until = parked.until;
        let w = match self.watched.iter().position(|w| w.signal.same(&signal)) {
            Some(w) => w,
            None => {
                signal.subscribe(&self.shared.waker);
                self.watched.push(Watched {
                    seen: signal.generation(),
                    signal,
                    parked: Vec::new(),
                });
                self.watched.len() - 1
            }
        };
        self.watched[w].parked.push((i, id));
        let list_len = self.watched[w].parked.len();
        if list_len > 64
            && list_len > 2 * self.shared.options.metrics.parked_requests.get() as usize
        {
            // Requests that ended by their deadline or their client leave stale entries.
            let slots = &self.slots;
            self.watched[w]
                .parked
                .retain(|&(i, id)| is_parked(slots, i, id));
        }
        let request = ParkedRequest {
            parked,
            close,
            is_head,
            request,
            id,
        };
        self.set_phase(i, Phase::Parked(Box::new(request)), Some(until));
        // A change may have come between the handler's look and now.
        self.wake_parked(i, id, Wake::Signalled);
        // Bytes that arrived while a worker held the connection are read now (edge-triggered).
        if matches!(self.slot(i).phase, Phase::Parked(_)) {
            self.watch_parked(i);
        }
    }

    fn check_signals(&mut self) {
        for w in 0..self.watched.len() {
            let generation = self.watched[w].signal.generation();
            if generation == self.watched[w].seen {
                continue;
            }
            self.watched[w].seen = generation;
            let parked = std::mem::take(&mut self.watched[w].parked);
            for (i, id) in parked {
                self.guarded(i, |p, i| p.wake_parked(i, id, Wake::Signalled));
                if is_parked(&self.slots, i, id) {
                    self.watched[w].parked.push((i, id));
                }
            }
        }
    }

    /// Asks a parked request whether it can be answered now, and answers it if so.
    fn wake_parked(&mut self, i: usize, id: u64, wake: Wake) {
        let Some(Some(Slot {
            phase: Phase::Parked(request),
            ..
        })) = self.slots.get_mut(i)
        else {
            return;
        };
        if request.id != id {
            return;
        }
        let answer = match catch_unwind(AssertUnwindSafe(|| (request.parked.respond)(wake))) {
            Ok(answer) => answer,
            Err(panic) => {
                self.shared.options.metrics.panics.inc();
                log::error!("panic in a parked request: {}", panic_text(&panic));
                Some(parked_failure(&self.shared, &request.request))
            }
        };
        let answer = match (answer, wake) {
            (Some(a), _) => a,
            (None, Wake::Signalled) => return,
            (None, Wake::Expired) => parked_failure(&self.shared, &request.request),
        };
        let (close, is_head) = (request.close, request.is_head);
        self.send(i, &answer, close, is_head);
    }

    // ---- deadlines -------------------------------------------------------------------------------

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(when, i)) = self.deadlines.first() {
            if when > now {
                return;
            }
            self.deadlines.remove(&(when, i));
            if let Some(slot) = self.slots[i].as_mut() {
                slot.deadline = None;
            }
            self.guarded(i, |p, i| p.expired(i));
        }
    }

    fn expired(&mut self, i: usize) {
        let Some(slot) = self.slots[i].as_ref() else {
            return;
        };
        match &slot.phase {
            Phase::Handshake => self.close(i, "handshake_timeout"),
            Phase::Idle { first: false } => self.close(i, "idle"),
            Phase::Idle { first: true } => self.close(i, "head_timeout"),
            Phase::Head => {
                self.shared.options.metrics.closed("head_timeout");
                self.refuse(
                    i,
                    None,
                    Rejection::new(408, "request head not received in time"),
                );
            }
            Phase::Parked(request) => {
                let id = request.id;
                self.wake_parked(i, id, Wake::Expired);
            }
            Phase::Writing { .. } => self.close(i, "write_timeout"),
            Phase::Draining { .. } => self.close(i, ""),
            Phase::Busy => {}
        }
    }
}

fn is_parked(slots: &[Option<Slot>], i: usize, id: u64) -> bool {
    matches!(
        slots.get(i),
        Some(Some(Slot { phase: Phase::Parked(r), .. })) if r.id == id
    )
}
