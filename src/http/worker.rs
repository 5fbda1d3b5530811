//! A worker: takes a connection whose request head arrived, reads the body (blocking, with a
//! deadline), runs the handler with panics caught, queues the answer, and hands the connection
//! back to the poller, which sends what the socket did not take at once.

use super::conn::{Conn, Got};
use super::parse::{self, ChunkedDecoder, Framing, Head, Rejection};
use super::server::{refusal, serialize, Job, Next, Returned, Shared};
use super::{Reply, Request, Response};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much body is read ahead per read while decoding chunks.
const CHUNK_READ: usize = 64 * 1024;
/// How long a worker waits for the next request on a connection it just answered.
const LINGER: Duration = Duration::from_millis(2);

pub(crate) fn run(shared: &Shared, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        let slot = job.slot;
        let returned = match catch_unwind(AssertUnwindSafe(|| serve(shared, job))) {
            Ok(r) => r,
            Err(panic) => {
                shared.options.metrics.panics.inc();
                log::error!("panic in an HTTP worker: {}", panic_text(&panic));
                Returned {
                    slot,
                    conn: None,
                    next: Next::Closed,
                }
            }
        };
        shared.give_back(returned);
    }
}

pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn serve(shared: &Shared, job: Job) -> Returned {
    let Job {
        slot,
        mut conn,
        mut head,
    } = job;
    loop {
        let (returned, answered) = serve_one(shared, slot, conn, head);
        // A client in a request loop sends its next request right after reading an answer:
        // taking it here saves it the trip through the poller.
        let Some(next) = answered
            .then_some(())
            .and_then(|_| linger(shared, &returned))
        else {
            return returned;
        };
        let mut returned = returned;
        conn = returned.conn.take().expect("answered with a connection");
        match next(&mut conn, shared) {
            Ok(h) => head = h,
            Err(Some(resp)) => return answer(slot, conn, &resp, true, false),
            Err(None) => {
                return Returned {
                    slot,
                    conn: Some(conn),
                    next: Next::Answered { close: false },
                }
            }
        }
    }
}

type NextHead = fn(&mut Conn, &Shared) -> Result<Head, Option<Response>>;

/// Whether to wait in the worker for the connection's next request: not near the connection
/// limit, where the connection must be free to be closed for a new one.
fn linger(shared: &Shared, returned: &Returned) -> Option<NextHead> {
    let kept = matches!(returned.next, Next::Answered { close: false });
    let sent = returned.conn.as_ref().is_some_and(|c| c.all_sent());
    let roomy = shared.open.load(Ordering::Relaxed) * 10 < shared.options.max_connections * 9;
    (kept && sent && roomy && !shared.stopping.load(Ordering::SeqCst))
        .then_some(next_head as NextHead)
}

/// Waits up to [`LINGER`] for a complete request head. `Err(None)`: none came (the poller waits
/// on); `Err(Some(answer))`: a refusal, after which the connection closes.
fn next_head(conn: &mut Conn, shared: &Shared) -> Result<Head, Option<Response>> {
    let until = Instant::now() + LINGER;
    let limit = shared.options.max_header_bytes + 1;
    loop {
        let skip = parse::leading_empty_lines(&conn.inbuf);
        conn.inbuf.drain(..skip);
        if let Some(end) = parse::head_end(&conn.inbuf, 0) {
            let max_body = shared.options.max_body_bytes as u64;
            let parsed = catch_unwind(AssertUnwindSafe(|| {
                parse::parse_head(&conn.inbuf[..end], max_body)
            }));
            conn.inbuf.drain(..end);
            conn.scanned = 0;
            return match parsed {
                Ok(Ok(head)) => Ok(head),
                Ok(Err(r)) => {
                    let mut shell = Request::new("GET", "/");
                    shell.headers = r.headers;
                    Err(Some(refusal(shared, Some(&shell), r.status, &r.message)))
                }
                Err(panic) => {
                    shared.options.metrics.panics.inc();
                    log::error!("panic in the request parser: {}", panic_text(&panic));
                    Err(Some(refusal(shared, None, 500, "internal server error")))
                }
            };
        }
        if conn.inbuf.len() >= limit {
            // The poller answers 431.
            return Err(None);
        }
        match conn.read_some(limit) {
            Ok(Got::Data(_)) => continue,
            Ok(Got::WouldBlock) => {
                if conn.wait(false, until).is_err() {
                    return Err(None);
                }
            }
            Ok(Got::Eof) | Err(_) => return Err(None),
        }
    }
}

/// Serves one request; the bool is true when an answer was queued on a connection kept open.
fn serve_one(shared: &Shared, slot: usize, mut conn: Box<Conn>, head: Head) -> (Returned, bool) {
    let options = &shared.options;
    let mut req = head.request;
    req.peer_addr = Some(conn.peer);
    req.peer_certificates = conn.peer_certs.clone();

    if head.expect_continue && head.framing != Framing::None {
        conn.queue(b"HTTP/1.1 100 Continue\r\n\r\n");
        if conn
            .flush_blocking(Instant::now() + options.io_timeout)
            .is_err()
        {
            return (closed(slot), false);
        }
    }
    let deadline = Instant::now() + options.body_timeout;
    match read_body(
        &mut conn,
        head.framing,
        options.max_body_bytes as u64,
        deadline,
    ) {
        Ok(body) => req.body = body,
        Err(BodyError::Rejected(r)) => {
            let resp = refusal(shared, Some(&req), r.status, &r.message);
            return (answer(slot, conn, &resp, true, false), false);
        }
        Err(BodyError::TimedOut) => {
            shared.options.metrics.closed("body_timeout");
            let resp = refusal(shared, Some(&req), 408, "request body not received in time");
            return (answer(slot, conn, &resp, true, false), false);
        }
        Err(BodyError::Gone) => return (closed(slot), false),
    }

    conn.served += 1;
    let close = head.close
        || shared.stopping.load(Ordering::SeqCst)
        || conn.served >= options.max_requests_per_connection;
    let is_head = req.method == "HEAD";
    let handler = &shared.handler;
    let reply = match catch_unwind(AssertUnwindSafe(|| handler.reply(&req))) {
        Ok(reply) => reply,
        Err(panic) => {
            shared.options.metrics.panics.inc();
            log::error!(
                "panic while handling {} {}: {}",
                req.method,
                req.path,
                panic_text(&panic)
            );
            Reply::Now(refusal(shared, Some(&req), 500, "internal server error"))
        }
    };
    match reply {
        Reply::Now(resp) => (answer(slot, conn, &resp, close, is_head), !close),
        Reply::Park(parked) => (
            Returned {
                slot,
                conn: Some(conn),
                next: Next::Park {
                    parked,
                    close,
                    is_head,
                    request: Box::new(req),
                },
            },
            false,
        ),
    }
}

/// Queues the answer and sends what the socket takes now; the poller sends the rest.
fn answer(
    slot: usize,
    mut conn: Box<Conn>,
    resp: &Response,
    close: bool,
    is_head: bool,
) -> Returned {
    conn.queue(&serialize(resp, close, is_head));
    match conn.flush() {
        Ok(_) => Returned {
            slot,
            conn: Some(conn),
            next: Next::Answered { close },
        },
        Err(_) => closed(slot),
    }
}

fn closed(slot: usize) -> Returned {
    Returned {
        slot,
        conn: None,
        next: Next::Closed,
    }
}

enum BodyError {
    Rejected(Rejection),
    TimedOut,
    Gone,
}

fn read_body(
    conn: &mut Conn,
    framing: Framing,
    max: u64,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let more = |conn: &mut Conn, limit: usize| -> Result<(), BodyError> {
        conn.read_blocking(limit, deadline)
            .map(|_| ())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => BodyError::TimedOut,
                _ => BodyError::Gone,
            })
    };
    match framing {
        Framing::None => Ok(Vec::new()),
        Framing::Length(n) => {
            let n = n.min(max) as usize;
            while conn.inbuf.len() < n {
                more(conn, n)?;
            }
            let rest = conn.inbuf.split_off(n);
            Ok(std::mem::replace(&mut conn.inbuf, rest))
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new(max);
            let mut body = Vec::new();
            loop {
                let used = decoder
                    .feed(&conn.inbuf, &mut body)
                    .map_err(BodyError::Rejected)?;
                conn.inbuf.drain(..used);
                if decoder.done() {
                    return Ok(body);
                }
                more(conn, CHUNK_READ)?;
            }
        }
    }
}

/// The 500 a parked request gets when its `respond` gives nothing at its deadline or panics.
pub(crate) fn parked_failure(shared: &Shared, req: &Request) -> Response {
    refusal(shared, Some(req), 500, "internal server error")
}
