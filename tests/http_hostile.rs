//! The HTTP layer against hostile and unusual clients, over real sockets: request smuggling
//! shapes, panics, idle and slow connections, stalled TLS handshakes, the connection limit, size
//! limits, parked requests. Behaviour only: no timing is asserted beyond "answered at all".

use netman::http::{
    Handler, Parked, Reply, Request, Response, Server, ServerOptions, Signal, Wake,
};
use netman::pki::{Ca, Usage};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers `/boom` with a panic, `/slow` after 700 ms, `/watch?after=N` parked until the shared
/// version differs from N (or 300 ms pass), everything else 200 with the path; decorates its own
/// answers and the server's refusals alike.
#[derive(Clone)]
struct Test {
    version: Arc<AtomicI64>,
    signal: Signal,
}

impl Test {
    fn new() -> Test {
        Test {
            version: Arc::new(AtomicI64::new(1)),
            signal: Signal::new(),
        }
    }
}

impl Handler for Test {
    fn handle(&self, req: &Request) -> Response {
        if req.path == "/boom" {
            panic!("boom");
        }
        if req.path == "/slow" {
            std::thread::sleep(Duration::from_millis(700));
        }
        let mut resp = Response::text(200, format!("path={} len={}", req.path, req.body.len()));
        self.decorate_refusal(req, &mut resp);
        resp
    }

    fn reply(&self, req: &Request) -> Reply {
        if req.path != "/watch" {
            return Reply::Now(self.handle(req));
        }
        let after: i64 = req.query_param("after").unwrap().parse().unwrap();
        let version = Arc::clone(&self.version);
        Reply::Park(Parked {
            until: Instant::now() + Duration::from_millis(300),
            signal: self.signal.clone(),
            respond: Box::new(move |wake| {
                let v = version.load(Ordering::SeqCst);
                (v != after || wake == Wake::Expired)
                    .then(|| Response::text(200, format!("version={v}")))
            }),
        })
    }

    fn decorate_refusal(&self, _req: &Request, resp: &mut Response) {
        resp.set_header("x-content-type-options", "nosniff");
        resp.set_header("x-vcap-request-id", "rid-1");
    }
}

fn with_workers(workers: usize) -> Server {
    let options = ServerOptions {
        workers,
        ..ServerOptions::default()
    };
    Server::start("127.0.0.1:0", options, Test::new()).unwrap()
}

fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn ok(addr: SocketAddr) -> String {
    raw(
        addr,
        b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
}

/// The server closed `s` (read end of stream or a reset) within 5 s; a time-out is not a close.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn decorated(answer: &str) -> bool {
    answer.contains("x-content-type-options: nosniff")
        && answer.contains("x-vcap-request-id: rid-1")
}

#[test]
fn smuggling_shapes_and_bad_framing_are_refused_and_the_server_keeps_serving() {
    let server = with_workers(2);
    let addr = server.local_addr();
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(String, u16)> = vec![
        (format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"), 501),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +15\r\n\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 5\r\n\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 184467440737095516160\r\n\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+f\r\n0123456789abcde\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{smuggled}"), 501),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n{smuggled}"), 501),
        (format!("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400),
        (format!("GET / HTTP/1.1\r\n\r\n{smuggled}"), 400),
        (format!("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{smuggled}"), 400),
        (format!("GET / HTTP/1.1\r\nHost: a\r\n obs-fold\r\n\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n{smuggled}"), 413),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n10000000000000000\r\n{smuggled}"), 400),
        (format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n{smuggled}"), 400),
    ];
    for (request, status) in &cases {
        let answer = raw(addr, request.as_bytes());
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?} -> {answer}"
        );
        assert_eq!(
            answer
                .lines()
                .filter(|l| l.starts_with("HTTP/1.1 "))
                .count(),
            1,
            "smuggled request answered: {answer}"
        );
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(decorated(&answer), "{answer}");
    }
    // The overflowing chunk size that used to kill a worker, more times than there are workers.
    for _ in 0..10 {
        let answer = raw(
            addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    assert!(ok(addr).starts_with("HTTP/1.1 200"));
    server.health().check().unwrap();
}

#[test]
fn a_panic_is_answered_500_counted_and_takes_no_worker_away() {
    let server = with_workers(1);
    for _ in 0..5 {
        let answer = raw(
            server.local_addr(),
            b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(decorated(&answer), "{answer}");
    }
    assert!(ok(server.local_addr()).starts_with("HTTP/1.1 200"));
    assert_eq!(server.metrics().panics.get(), 5);
    server.health().check().unwrap();
}

#[test]
fn three_hundred_idle_and_half_sent_connections_do_not_stop_a_request() {
    let server = with_workers(2);
    let addr = server.local_addr();
    let mut held = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(addr).unwrap();
        match i % 3 {
            0 => {}
            1 => s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(),
            _ => {
                // A kept-alive connection that was served once and now idles.
                s.write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).unwrap();
            }
        }
        held.push(s);
    }
    let answer = ok(addr);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(server.metrics().open_connections.get() >= 300);
}

#[test]
fn a_slow_request_head_gets_408_at_its_deadline() {
    let server = Server::start(
        "127.0.0.1:0",
        ServerOptions {
            head_timeout: Duration::from_millis(600),
            ..ServerOptions::default()
        },
        Test::new(),
    )
    .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // One header line every 150 ms: every read makes progress, the whole head never arrives.
    let mut answer = String::new();
    for i in 0..40 {
        std::thread::sleep(Duration::from_millis(150));
        if s.write_all(format!("x-{i}: y\r\n").as_bytes()).is_err() {
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(decorated(&answer), "{answer}");
}

#[test]
fn a_500_kb_head_is_served_and_a_2_mb_head_gets_431_with_the_handlers_headers() {
    let server = Server::start("127.0.0.1:0", ServerOptions::default(), Test::new()).unwrap();
    let ids = "a".repeat(500 * 1024);
    let answer = raw(
        server.local_addr(),
        format!("GET /p?id={ids} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let ids = "a".repeat(2 * 1024 * 1024);
    let answer = raw(
        server.local_addr(),
        format!("GET /p?id={ids} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(decorated(&answer), "{answer}");
}

#[test]
fn at_the_connection_limit_the_oldest_idle_connection_goes_never_a_busy_one() {
    let server = Server::start(
        "127.0.0.1:0",
        ServerOptions {
            max_connections: 3,
            ..ServerOptions::default()
        },
        Test::new(),
    )
    .unwrap();
    let addr = server.local_addr();
    let served_then_idle = || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        assert!(s.read(&mut buf).unwrap() > 0);
        s
    };
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut oldest_idle = served_then_idle();
    // Idle for longer than the newer one (a worker may keep a connection it just answered for a
    // moment, waiting for the next request, before it counts as idle).
    std::thread::sleep(Duration::from_millis(100));
    let _newer_idle = served_then_idle();
    // A fourth connection: the oldest idle one makes room.
    let answer = ok(addr);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed_by_server(&mut oldest_idle), "oldest idle closed");
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let _ = busy.read_to_string(&mut out);
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "the busy connection was served: {out}"
    );
}

#[test]
fn parked_requests_hold_no_worker_and_answer_on_a_change_or_at_their_time() {
    let handler = Test::new();
    let server = Server::start(
        "127.0.0.1:0",
        ServerOptions {
            workers: 1,
            ..ServerOptions::default()
        },
        handler.clone(),
    )
    .unwrap();
    let addr = server.local_addr();
    // Twenty watchers on version 1 and one that is already behind.
    let mut watchers: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /watch?after=1 HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let behind = raw(
        addr,
        b"GET /watch?after=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(behind.contains("version=1"), "{behind}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metrics().parked_requests.get() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.metrics().parked_requests.get(), 20);
    // The single worker is free for everyone else.
    assert!(ok(addr).starts_with("HTTP/1.1 200"));
    handler.version.store(2, Ordering::SeqCst);
    handler.signal.notify();
    for w in &mut watchers {
        w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1024];
        let n = w.read(&mut buf).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.contains("version=2"), "{answer}");
    }
    // Without a change the watch answers at its time, with the unchanged version.
    let timed_out = raw(
        addr,
        b"GET /watch?after=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(timed_out.contains("version=2"), "{timed_out}");
    // A watcher that goes away is forgotten.
    let mut gone = TcpStream::connect(addr).unwrap();
    gone.write_all(b"GET /watch?after=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    drop(gone);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.metrics().parked_requests.get(), 0);
}

#[test]
fn a_stalled_tls_handshake_is_closed_at_its_deadline_and_holds_no_one_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA").unwrap();
    let s = ca
        .write_issued(
            dir.path(),
            "server",
            "localhost",
            &["localhost"],
            Usage::Server,
        )
        .unwrap();
    let config = netman::tls::server_config(&s.cert, &s.key, None).unwrap();
    let server = Server::start(
        "127.0.0.1:0",
        ServerOptions {
            workers: 1,
            handshake_timeout: Duration::from_millis(500),
            tls: Some(config),
            ..ServerOptions::default()
        },
        Test::new(),
    )
    .unwrap();
    // Fifty clients that send the first byte of a ClientHello and stall.
    let mut stalled: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(server.local_addr()).unwrap();
            c.write_all(&[0x16]).unwrap();
            c
        })
        .collect();
    let ca_file = ca.write_ca(dir.path()).unwrap();
    let client = netman::http::client::agent(
        &netman::http::client::ClientTls {
            ca_cert_file: Some(ca_file.to_string_lossy().into_owned()),
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .unwrap();
    let url = format!("https://localhost:{}/tls", server.local_addr().port());
    let resp = client.get(&url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    for c in &mut stalled {
        assert!(closed_by_server(c), "closed at the deadline");
    }
}

#[test]
fn health_reports_a_listener_that_stopped() {
    let server = Server::start("127.0.0.1:0", ServerOptions::default(), Test::new()).unwrap();
    let health = server.health();
    health.check().unwrap();
    server.shutdown();
    assert!(health.check().is_err());
}
