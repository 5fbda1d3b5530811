//! The policy server at fleet scale, as agents and attackers meet it: the version watch (answer at
//! once, on a change, at its time; across two servers on one database), large `id=` lists, refusals
//! that carry the same headers as answers, the internal API's client allow-list, and the agent's
//! client falling back to polling against a server without the watch.

mod support;
use support::{policy_server, wait_until};

use netman::agent::client::{PolicyClient, PolicySource, Watched};
use netman::api::policy::WATCH_HEADER;
use netman::http::client::{body_string, ClientTls};
use netman::http::{Request, Response, Server, ServerOptions};
use netman::pki::{Ca, Usage};
use policy_server::{v1_body, PolicyServer, ADMIN_TOKEN};
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const LAST_UPDATED: &str = "/networking/v1/internal/policies_last_updated";

fn version(s: &PolicyServer) -> i64 {
    s.internal_get(LAST_UPDATED).1.trim().parse().unwrap()
}

/// A watch in a thread: (status, has the watch header, body, how long it took).
fn watch(
    s: &PolicyServer,
    after: i64,
    wait: u64,
) -> std::thread::JoinHandle<(u16, bool, String, Duration)> {
    let w = watch_ids(s, after, wait, "");
    std::thread::spawn(move || {
        let (status, mark, body, took) = w.join().unwrap();
        (status, mark.is_some(), body, took)
    })
}

type WatchAnswer = (u16, Option<String>, String, Duration);

/// A watch naming ids (`""`: none) in a thread: (status, watch header, body, how long it took).
fn watch_ids(
    s: &PolicyServer,
    after: i64,
    wait: u64,
    ids: &str,
) -> std::thread::JoinHandle<WatchAnswer> {
    let client = s.internal_client();
    let mut url = format!("{}{LAST_UPDATED}?wait={wait}&after={after}", s.internal);
    if !ids.is_empty() {
        url.push_str(&format!("&id={ids}"));
    }
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut resp = client.get(&url).call().unwrap();
        let status = resp.status().as_u16();
        let mark = resp
            .headers()
            .get(WATCH_HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = body_string(&mut resp, 4096).unwrap();
        (status, mark, body, started.elapsed())
    })
}

fn agent_tls(s: &PolicyServer) -> ClientTls {
    ClientTls {
        ca_cert_file: Some(s.certs.ca.to_string_lossy().into()),
        client_cert_file: Some(s.certs.client.0.to_string_lossy().into()),
        client_key_file: Some(s.certs.client.1.to_string_lossy().into()),
        skip_verification: false,
    }
}

fn parked(s: &PolicyServer) -> u64 {
    s.parked_watches()
}

fn wait_parked(s: &PolicyServer, n: u64) {
    let what = format!("{n} watches to park");
    wait_until(&what, Duration::from_secs(10), || parked(s) >= n);
}

#[test]
fn the_watch_answers_at_once_when_behind_and_else_on_a_change_or_at_its_time() {
    let s = PolicyServer::start();
    let v0 = version(&s);
    // The plain endpoint is the original's: the version, no watch header.
    let mut resp = s
        .internal_client()
        .get(format!("{}{LAST_UPDATED}", s.internal))
        .call()
        .unwrap();
    assert!(!resp.headers().contains_key(WATCH_HEADER));
    assert_eq!(body_string(&mut resp, 100).unwrap().trim(), v0.to_string());

    // Behind: at once.
    let (status, marked, body, _) = watch(&s, v0 - 1, 30).join().unwrap();
    assert_eq!(
        (status, marked, body.trim()),
        (200, true, v0.to_string().as_str())
    );

    // Current: parked until a change made through the external API.
    let waiting = watch(&s, v0, 30);
    wait_parked(&s, 1);
    let (status, _) = s.post(
        "/networking/v1/external/policies",
        Some(ADMIN_TOKEN),
        &v1_body(&[("a", "b", "tcp", 80, 80)]),
    );
    assert_eq!(status, 200);
    let (status, marked, body, took) = waiting.join().unwrap();
    let v1: i64 = body.trim().parse().unwrap();
    assert_eq!((status, marked), (200, true));
    assert!(v1 > v0 && v1 == version(&s), "{v1} after {v0}");
    assert!(took < Duration::from_secs(30));

    // No change: answered at its time with the same version.
    let (status, marked, body, took) = watch(&s, v1, 1).join().unwrap();
    assert_eq!(
        (status, marked, body.trim()),
        (200, true, v1.to_string().as_str())
    );
    assert!(took >= Duration::from_millis(900), "{took:?}");

    // Bad parameters are refused, marked as the watch's.
    let mut resp = s
        .internal_client()
        .get(format!("{}{LAST_UPDATED}?wait=soon&after=1", s.internal))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.headers().contains_key(WATCH_HEADER));
    assert!(body_string(&mut resp, 1000).unwrap().contains("wait"));
    assert_eq!(parked(&s), 0);
}

#[test]
fn a_watch_naming_ids_wakes_only_for_changes_that_touch_them() {
    let s = PolicyServer::start();
    let v0 = version(&s);
    let mine = watch_ids(&s, v0, 3, "app-a,app-b");
    let theirs = watch_ids(&s, v0, 30, "app-x");
    wait_parked(&s, 2);
    let (status, _) = s.post(
        "/networking/v1/external/policies",
        Some(ADMIN_TOKEN),
        &v1_body(&[("app-x", "app-y", "tcp", 80, 80)]),
    );
    assert_eq!(status, 200);
    let v1 = version(&s);
    let (status, mark, body, _) = theirs.join().unwrap();
    assert_eq!(
        (status, mark.as_deref(), body.trim()),
        (200, Some("1"), v1.to_string().as_str())
    );
    assert!(!mine.is_finished(), "a change of other apps woke the watch");
    // At its time it learns the version moved without touching its apps.
    let (status, mark, body, _) = mine.join().unwrap();
    assert_eq!(
        (status, mark.as_deref(), body.trim()),
        (200, Some("unaffected"), v1.to_string().as_str())
    );
    // Behind, but only by changes of other apps: parked, not answered at once.
    let behind = watch_ids(&s, v0, 30, "app-a");
    wait_parked(&s, 1);
    // A change that touches it answers it.
    let (status, _) = s.post(
        "/networking/v1/external/policies",
        Some(ADMIN_TOKEN),
        &v1_body(&[("app-z", "app-a", "tcp", 81, 81)]),
    );
    assert_eq!(status, 200);
    let v2 = version(&s);
    let (status, mark, body, _) = behind.join().unwrap();
    assert_eq!(
        (status, mark.as_deref(), body.trim()),
        (200, Some("1"), v2.to_string().as_str())
    );
    // Behind by a change that touched it: at once.
    let (_, mark, body, _) = watch_ids(&s, v1, 30, "app-a").join().unwrap();
    assert_eq!(
        (mark.as_deref(), body.trim()),
        (Some("1"), v2.to_string().as_str())
    );
}

#[test]
fn two_servers_on_one_database_wake_each_others_watchers() {
    let a = PolicyServer::start();
    let db = a.config["database"].clone();
    let b = PolicyServer::start_with(|c, _| c["database"] = db);
    let v0 = version(&b);
    assert_eq!(v0, version(&a));
    let waiting: Vec<_> = (0..5).map(|_| watch(&b, v0, 30)).collect();
    wait_parked(&b, 5);
    let (status, _) = a.post(
        "/networking/v1/external/policies",
        Some(ADMIN_TOKEN),
        &v1_body(&[("x", "y", "udp", 53, 53)]),
    );
    assert_eq!(status, 200);
    let v1 = version(&a);
    for w in waiting {
        let (status, _, body, took) = w.join().unwrap();
        assert_eq!((status, body.trim()), (200, v1.to_string().as_str()));
        assert!(took < Duration::from_secs(30));
    }
}

#[test]
fn the_second_server_wakes_only_the_watches_a_change_touches_and_all_when_its_log_is_missing() {
    let a = PolicyServer::start();
    let db = a.config["database"].clone();
    let file = db["connection_string"].as_str().unwrap().to_string();
    let b = PolicyServer::start_with(|c, _| c["database"] = db);
    let v0 = version(&b);
    let mine = watch_ids(&b, v0, 5, "app-a");
    let theirs = watch_ids(&b, v0, 30, "app-x");
    wait_parked(&b, 2);
    let (status, _) = a.post(
        "/networking/v1/external/policies",
        Some(ADMIN_TOKEN),
        &v1_body(&[("app-x", "app-y", "tcp", 80, 80)]),
    );
    assert_eq!(status, 200);
    let v1 = version(&a);
    let (status, mark, body, _) = theirs.join().unwrap();
    assert_eq!(
        (status, mark.as_deref(), body.trim()),
        (200, Some("1"), v1.to_string().as_str())
    );
    assert!(
        !mine.is_finished(),
        "a change of other apps made through the other server woke the watch"
    );
    let (status, mark, body, _) = mine.join().unwrap();
    assert_eq!(
        (status, mark.as_deref(), body.trim()),
        (200, Some("unaffected"), v1.to_string().as_str())
    );

    // A move of the version the change log does not explain (a writer without it, e.g. the
    // original's policy server on the same database): every watch wakes.
    let watches: Vec<_> = ["app-a", "app-q"]
        .iter()
        .map(|id| watch_ids(&b, v1, 30, id))
        .collect();
    wait_parked(&b, 2);
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "UPDATE policies_info SET last_updated = last_updated + 1000 WHERE id = 1",
        [],
    )
    .unwrap();
    let v2 = v1 + 1000;
    for w in watches {
        let (status, mark, body, _) = w.join().unwrap();
        assert_eq!(
            (status, mark.as_deref(), body.trim()),
            (200, Some("1"), v2.to_string().as_str())
        );
    }
    // And after it, the log links again: only the touched watch wakes.
    let mine = watch_ids(&b, v2, 5, "app-a");
    let theirs = watch_ids(&b, v2, 30, "app-y");
    wait_parked(&b, 2);
    let (status, _) = a.post(
        "/networking/v1/external/policies",
        Some(ADMIN_TOKEN),
        &v1_body(&[("app-x", "app-y", "udp", 53, 53)]),
    );
    assert_eq!(status, 200);
    assert_eq!(theirs.join().unwrap().1.as_deref(), Some("1"));
    assert!(!mine.is_finished(), "an untouched watch woke");
    assert_eq!(mine.join().unwrap().1.as_deref(), Some("unaffected"));
}

fn plain_raw(addr: &str, bytes: &[u8]) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Raw bytes to the internal API over mutual TLS with the agents' certificate.
fn internal_raw(s: &PolicyServer, bytes: &[u8]) -> String {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    netman::tls::install_crypto_provider();
    let roots = netman::tls::root_store(&s.certs.ca).unwrap();
    let certs: Vec<CertificateDer<'static>> = netman::tls::load_certs(&s.certs.client.0).unwrap();
    let key: PrivateKeyDer<'static> = netman::tls::load_key(&s.certs.client.1).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let tcp = std::net::TcpStream::connect(s.internal.trim_start_matches("https://")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn large_id_lists_are_served_and_refusals_carry_the_answers_headers() {
    let s = PolicyServer::start();
    // 5,000 GUIDs (185 KB of request head) on both APIs.
    let ids: Vec<String> = (0..5000)
        .map(|i| format!("{i:08x}-0000-4000-8000-000000000000"))
        .collect();
    let answer = internal_raw(
        &s,
        format!(
            "GET /networking/v1/internal/policies?id={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ids.join(",")
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let addr = s.external.trim_start_matches("http://").to_string();
    let answer = plain_raw(
        &addr,
        format!(
            "GET /networking/v1/external/policies?id={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n",
            ids.join(",")
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // 2 MB: 431, with the security headers and a request id, and the server still serves.
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "GET /networking/v1/external/policies?id={} HTTP/1.1\r\nHost: x\r\nX-Vcap-Request-Id: abc\r\n\r\n",
        "a".repeat(2 << 20)
    );
    let _ = conn.write_all(head.as_bytes());
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 431"), "{answer}");
    for header in [
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "x-xss-protection: 1; mode=block",
        "content-security-policy: frame-ancestors 'none'",
        "x-vcap-request-id: ",
    ] {
        assert!(answer.contains(header), "{header} missing: {answer}");
    }
    // A smuggling shape on the external API: refused the same way.
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(
        b"POST /networking/v1/external/policies HTTP/1.1\r\nHost: x\r\nX-Vcap-Request-Id: abc\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("x-vcap-request-id: abc::"), "{answer}");
    assert_eq!(s.get("/", None).0, 200);
}

#[test]
fn the_internal_allow_list_admits_named_agents_with_client_auth_only() {
    // A CA of the test's own, so it can issue more certificates than the rig's.
    let ca = Ca::new("allow-list CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let issue = |name: &str, cn: &str, sans: &[&str], usage| {
        let f = ca.write_issued(d, name, cn, sans, usage).unwrap();
        (f.cert, f.key)
    };
    let server = issue("server", "policy-server", &["127.0.0.1"], Usage::Server);
    let agent = issue("agent", "vxlan-policy-agent", &[], Usage::Client);
    // A certificate of the same CA with another name (an overlay daemon's): refused.
    let overlay = issue("overlay", "silk-daemon", &[], Usage::Client);
    // The allowed name as a SAN: admitted.
    let by_san = issue(
        "by-san",
        "cell-7",
        &["cell-7.agents.internal"],
        Usage::Client,
    );
    // The allowed name without the clientAuth usage: refused (by the CA check when another
    // usage is listed, by the allow-list when no usage is listed at all).
    let server_only = issue("server-only", "vxlan-policy-agent", &[], Usage::Server);
    let any_usage = issue("any-usage", "vxlan-policy-agent", &[], Usage::Unrestricted);
    let ca_file = ca.write_ca(d).unwrap();
    let s = PolicyServer::start_with(|c, _| {
        c["allowed_internal_clients"] = json!(["vxlan-policy-agent", "cell-7.agents.internal"]);
        c["ca_cert_file"] = json!(ca_file);
        c["server_cert_file"] = json!(server.0);
        c["server_key_file"] = json!(server.1);
    });
    let url = format!("{}{LAST_UPDATED}", s.internal);
    let call = |cert: &(std::path::PathBuf, std::path::PathBuf)| {
        netman::http::client::agent(
            &ClientTls {
                ca_cert_file: Some(ca_file.to_string_lossy().into()),
                client_cert_file: Some(cert.0.to_string_lossy().into()),
                client_key_file: Some(cert.1.to_string_lossy().into()),
                skip_verification: false,
            },
            Duration::from_secs(5),
        )
        .unwrap()
        .get(&url)
        .call()
        .map(|r| r.status().as_u16())
    };
    assert_eq!(call(&agent).unwrap(), 200);
    assert_eq!(call(&by_san).unwrap(), 200);
    assert!(call(&overlay).is_err());
    assert!(call(&server_only).is_err());
    assert!(call(&any_usage).is_err());
    assert!(s.log().contains("not in the allow-list"), "{}", s.log());
    assert!(s.log().contains("lacks the clientAuth"), "{}", s.log());
}

#[test]
fn the_agent_client_watches_and_falls_back_to_polling_against_a_server_without_the_watch() {
    let s = PolicyServer::start();
    let client = PolicyClient::new(&s.internal, &agent_tls(&s), Duration::from_secs(5)).unwrap();
    let v0 = client.last_updated().unwrap();
    assert_eq!(
        client.watch(v0 - 1, Duration::from_secs(5), &[]).unwrap(),
        Watched::Version(v0)
    );
    assert_eq!(
        client.watch(v0, Duration::from_secs(1), &[]).unwrap(),
        Watched::Version(v0)
    );

    // An original policy server: the same endpoint, the parameters ignored (no header), and a
    // server that does not know the path at all.
    let config = netman::tls::server_config(
        &s.certs.server.0,
        &s.certs.server.1,
        Some(Path::new(&s.certs.ca)),
    )
    .unwrap();
    let original = Server::start(
        "127.0.0.1:0",
        ServerOptions {
            tls: Some(config.clone()),
            ..ServerOptions::default()
        },
        |req: &Request| match req.path.as_str() {
            LAST_UPDATED => Response::text(200, "42"),
            _ => Response::error(404, "not found"),
        },
    )
    .unwrap();
    let base = format!("https://127.0.0.1:{}", original.local_addr().port());
    let old = PolicyClient::new(&base, &agent_tls(&s), Duration::from_secs(5)).unwrap();
    assert_eq!(old.last_updated().unwrap(), 42);
    let started = Instant::now();
    assert_eq!(
        old.watch(42, Duration::from_secs(20), &[]).unwrap(),
        Watched::Unsupported
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let none = Server::start(
        "127.0.0.1:0",
        ServerOptions {
            tls: Some(config),
            ..ServerOptions::default()
        },
        |_: &Request| Response::error(404, "not found"),
    )
    .unwrap();
    let base = format!("https://127.0.0.1:{}", none.local_addr().port());
    let missing = PolicyClient::new(&base, &agent_tls(&s), Duration::from_secs(5)).unwrap();
    assert_eq!(
        missing.watch(1, Duration::from_secs(20), &[]).unwrap(),
        Watched::Unsupported
    );
}
