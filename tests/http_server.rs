//! The shared HTTP layer over real sockets: keep-alive, limits, timeouts, TLS and mutual TLS with
//! real certificates.

use netman::http::client::{agent, ClientTls};
use netman::http::{Request, Response, Server, ServerOptions};
use netman::pki::{Ca, Usage};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

fn echo(req: &Request) -> Response {
    let cn = req
        .peer_certificates
        .as_ref()
        .and_then(|c| c.first())
        .and_then(netman::tls::common_name)
        .unwrap_or_default();
    Response::json(
        200,
        &serde_json::json!({
            "method": req.method, "path": req.path, "len": req.body.len(),
            "q": req.query_param("q"), "cn": cn,
        }),
    )
}

fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn plain_keep_alive_and_pipelined_requests() {
    let server = Server::start("127.0.0.1:0", ServerOptions::default(), echo).unwrap();
    let out = raw(
        server.local_addr(),
        b"GET /a?q=1 HTTP/1.1\r\nhost: x\r\n\r\nPOST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
    );
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(
        out.contains(r#""path":"/a""#) && out.contains(r#""q":"1""#),
        "{out}"
    );
    assert!(out.contains(r#""len":3"#), "{out}");
}

#[test]
fn chunked_bodies_and_expect_continue() {
    let server = Server::start("127.0.0.1:0", ServerOptions::default(), echo).unwrap();
    let out = raw(
        server.local_addr(),
        b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert!(out.contains(r#""len":5"#), "{out}");
    let out = raw(
        server.local_addr(),
        b"POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\nconnection: close\r\n\r\nxy",
    );
    assert!(
        out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
        "{out}"
    );
}

#[test]
fn limits_are_enforced() {
    let options = ServerOptions {
        max_body_bytes: 10,
        max_header_bytes: 256,
        ..ServerOptions::default()
    };
    let server = Server::start("127.0.0.1:0", options, echo).unwrap();
    let out = raw(
        server.local_addr(),
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n01234567890",
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let out = raw(
        server.local_addr(),
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n0\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx: {}\r\n\r\n",
        "a".repeat(400)
    );
    assert!(raw(server.local_addr(), big.as_bytes()).starts_with("HTTP/1.1 431"));
    assert!(raw(server.local_addr(), b"NOT HTTP\r\n\r\n").starts_with("HTTP/1.1 400"));
}

#[test]
fn idle_connections_are_closed_and_do_not_hold_workers() {
    let options = ServerOptions {
        workers: 1,
        head_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = Server::start("127.0.0.1:0", options, echo).unwrap();
    let mut idle = TcpStream::connect(server.local_addr()).unwrap();
    let out = raw(
        server.local_addr(),
        b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // The silent connection is closed at its deadline.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(idle.read(&mut buf), Ok(0)),
        "closed at the deadline"
    );
}

#[test]
fn full_backlog_answers_503() {
    let options = ServerOptions {
        workers: 1,
        backlog: 1,
        ..ServerOptions::default()
    };
    let server = Server::start("127.0.0.1:0", options, |_: &Request| {
        std::thread::sleep(Duration::from_millis(300));
        Response::new(200)
    })
    .unwrap();
    let addr = server.local_addr();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                raw(
                    addr,
                    b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                )
            })
        })
        .collect();
    let answers: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(
        answers.iter().any(|a| a.starts_with("HTTP/1.1 200")),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(|a| a.starts_with("HTTP/1.1 503")),
        "{answers:?}"
    );
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: String,
    server: (String, String),
    client: (String, String),
    other_client: (String, String),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("test CA").unwrap();
    let other = Ca::new("other CA").unwrap();
    let s = ca
        .write_issued(
            d,
            "server",
            "localhost",
            &["localhost", "127.0.0.1"],
            Usage::Server,
        )
        .unwrap();
    let c = ca
        .write_issued(d, "client", "agent-1", &[], Usage::Client)
        .unwrap();
    let o = other
        .write_issued(d, "other", "intruder", &[], Usage::Client)
        .unwrap();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    Pki {
        ca: path(&ca.write_ca(d).unwrap()),
        server: (path(&s.cert), path(&s.key)),
        client: (path(&c.cert), path(&c.key)),
        other_client: (path(&o.cert), path(&o.key)),
        _dir: dir,
    }
}

fn get(tls: ClientTls, url: &str) -> Result<String, String> {
    let agent = agent(&tls, Duration::from_secs(5))?;
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    netman::http::client::body_string(&mut resp, 1 << 20)
}

#[test]
fn mutual_tls_requires_a_certificate_from_the_configured_ca() {
    let p = pki();
    let config = netman::tls::server_config(
        Path::new(&p.server.0),
        Path::new(&p.server.1),
        Some(Path::new(&p.ca)),
    )
    .unwrap();
    let server = Server::start(
        "127.0.0.1:0",
        ServerOptions {
            tls: Some(config),
            ..ServerOptions::default()
        },
        echo,
    )
    .unwrap();
    let url = format!("https://localhost:{}/x", server.local_addr().port());
    let with_cert = |cert: &(String, String)| ClientTls {
        ca_cert_file: Some(p.ca.clone()),
        client_cert_file: Some(cert.0.clone()),
        client_key_file: Some(cert.1.clone()),
        skip_verification: false,
    };
    let body = get(with_cert(&p.client), &url).unwrap();
    assert!(body.contains(r#""cn":"agent-1""#), "{body}");

    let no_cert = ClientTls {
        ca_cert_file: Some(p.ca.clone()),
        ..ClientTls::default()
    };
    assert!(get(no_cert, &url).is_err());
    assert!(get(with_cert(&p.other_client), &url).is_err());
}

#[test]
fn plain_tls_without_client_auth() {
    let p = pki();
    let config =
        netman::tls::server_config(Path::new(&p.server.0), Path::new(&p.server.1), None).unwrap();
    let server = Server::start(
        "127.0.0.1:0",
        ServerOptions {
            tls: Some(config),
            ..ServerOptions::default()
        },
        echo,
    )
    .unwrap();
    let url = format!("https://localhost:{}/tls", server.local_addr().port());
    let trusted = ClientTls {
        ca_cert_file: Some(p.ca.clone()),
        ..ClientTls::default()
    };
    assert!(get(trusted, &url).unwrap().contains("/tls"));
    // Without the CA the server's certificate is not trusted.
    assert!(get(ClientTls::default(), &url).is_err());
}
