//! Several real policy-server processes on one real PostgreSQL or MariaDB database (issue 3):
//! concurrent clients split between two servers leave one consistent store with unique tags, and a
//! database stopped during load and started again loses no acknowledged change while the servers
//! report it on `/health`, keep answering `/`, and recover by themselves.
//!
//! The database servers are shared by every test of this binary, and the outage tests stop them:
//! every test here holds [`SERIAL`] for its whole run. (Cargo runs test binaries one at a time.)

mod support;
use support::{db, policy_server, wait_until};

use db::{Outage, TestDb};
use netman::http::client::body_string;
use policy_server::*;
use serde_json::json;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const V1: &str = "/networking/v1/external/policies";
const TAGS: &str = "/networking/v1/external/tags";
const CLIENTS: usize = 50;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn policies_of(body: &str) -> BTreeSet<Row> {
    let rows = policy_rows(body);
    let set: BTreeSet<Row> = rows.iter().cloned().collect();
    assert_eq!(set.len(), rows.len(), "a policy listed twice: {body}");
    set
}

/// Two servers on the same database.
fn two_servers(db: &TestDb) -> [Arc<PolicyServer>; 2] {
    let start = || {
        Arc::new(PolicyServer::start_with(|c, _| {
            c["database"] = db.config_json();
        }))
    };
    [start(), start()]
}

/// The policy list of every server (asserted equal) and the tags (asserted equal, unique, and
/// each id once).
fn agreed_state(servers: &[Arc<PolicyServer>]) -> (BTreeSet<Row>, Vec<(String, String)>) {
    let mut lists = Vec::new();
    let mut tag_lists = Vec::new();
    for s in servers {
        let (status, body) = s.get(V1, Some(ADMIN_TOKEN));
        assert_eq!(status, 200, "{body}");
        lists.push(policies_of(&body));
        let (status, body) = s.get(TAGS, Some(ADMIN_TOKEN));
        assert_eq!(status, 200, "{body}");
        let mut tags: Vec<(String, String)> = parse(&body)["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_string(),
                    t["tag"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        tags.sort();
        tag_lists.push(tags);
    }
    assert!(
        lists.windows(2).all(|w| w[0] == w[1]),
        "servers list different policies"
    );
    assert!(
        tag_lists.windows(2).all(|w| w[0] == w[1]),
        "servers list different tags: {tag_lists:?}"
    );
    let tags = tag_lists.pop().unwrap();
    let ids: HashSet<&str> = tags.iter().map(|t| t.0.as_str()).collect();
    let values: HashSet<&str> = tags.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(ids.len(), tags.len(), "an id holds two tags: {tags:?}");
    assert_eq!(values.len(), tags.len(), "a tag given to two ids: {tags:?}");
    // Every id of a policy holds a tag (the internal API's tags come from the same rows).
    let listed = lists.pop().unwrap();
    for (src, dst, ..) in &listed {
        assert!(ids.contains(src.as_str()) && ids.contains(dst.as_str()));
    }
    (listed, tags)
}

/// The internal (agents') list of every server, asserted equal: same policies, same tags.
fn assert_internal_lists_agree(servers: &[Arc<PolicyServer>]) {
    let lists: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let (status, body) = s.internal_get("/networking/v1/internal/policies");
            assert_eq!(status, 200, "{body}");
            let mut l: Vec<String> = parse(&body)["policies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.to_string())
                .collect();
            l.sort();
            l
        })
        .collect();
    assert!(!lists[0].is_empty());
    assert_eq!(lists[0], lists[1], "internal lists differ between servers");
}

/// 50 clients, each bound to one of the two servers, creating a policy it keeps and, three times,
/// creating a temporary policy through its server and deleting it through the other one.
fn concurrent_clients_on_two_servers(db: TestDb) {
    let servers = two_servers(&db);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mine = Arc::clone(&servers[i % 2]);
            let other = Arc::clone(&servers[(i + 1) % 2]);
            std::thread::spawn(move || {
                let keep = format!("app-{i}");
                let dest = format!("app-{}", (i + 1) % CLIENTS);
                let temp = format!("tmp-{i}");
                let body = v1_body(&[(&keep, &dest, "tcp", 8080, 8080)]);
                let temp_body =
                    v1_body(&[(&keep, &temp, "udp", 1, 2), (&temp, &keep, "tcp", 3, 3)]);
                for _ in 0..3 {
                    for (s, path, b) in [
                        (&mine, V1.to_string(), &body),
                        (&mine, V1.to_string(), &temp_body),
                        (&other, format!("{V1}/delete"), &temp_body),
                    ] {
                        let (status, resp) = s.post(&path, Some(ADMIN_TOKEN), b);
                        assert_eq!(status, 200, "POST {path}: {resp}\n{}", s.log());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }

    let (listed, tags) = agreed_state(&servers);
    let expected: BTreeSet<Row> = (0..CLIENTS)
        .map(|i| {
            (
                format!("app-{i}"),
                format!("app-{}", (i + 1) % CLIENTS),
                "tcp".to_string(),
                8080,
                8080,
            )
        })
        .collect();
    assert_eq!(listed, expected);
    let tagged: BTreeSet<&str> = tags.iter().map(|t| t.0.as_str()).collect();
    let apps: Vec<String> = (0..CLIENTS).map(|i| format!("app-{i}")).collect();
    assert_eq!(
        tagged,
        apps.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "exactly the kept apps hold tags (the temporary ones were released)"
    );
    assert_internal_lists_agree(&servers);
    // The rows themselves: one policy per kept app, one tag per kept app.
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM policies"),
        CLIENTS as i64
    );
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM \"groups\" WHERE guid IS NOT NULL"),
        CLIENTS as i64
    );
}

#[test]
fn two_servers_on_postgres_take_concurrent_clients_consistently() {
    let _serial = serial();
    concurrent_clients_on_two_servers(db::postgres());
}

#[test]
fn two_servers_on_mariadb_take_concurrent_clients_consistently() {
    let _serial = serial();
    concurrent_clients_on_two_servers(db::mariadb());
}

// ------------------------------------------------------------------------------ outage

const BEFORE: u8 = 0;
const DOWN: u8 = 1;
const AFTER: u8 = 2;

#[derive(Default)]
struct Ledger {
    /// Creates answered 200.
    created: Vec<String>,
    /// Deletes answered 200.
    deleted: Vec<String>,
    /// Deletes answered otherwise (the policy may or may not be there).
    delete_unknown: Vec<String>,
    /// Every source ever sent in a create.
    attempted: Vec<String>,
    /// 200s per server after the database came back.
    acked_after: [usize; 2],
    /// Non-200 answers (or transport errors) per phase.
    failed: [usize; 3],
    /// The first few failures per phase: (what, answer).
    samples: [Vec<String>; 3],
}

/// The phase a request belongs to: the one it started and ended in, or DOWN when the phase
/// changed meanwhile (a request started just before the stop may fail).
fn during(started: u8, phase: &AtomicU8) -> u8 {
    if phase.load(Ordering::SeqCst) == started {
        started
    } else {
        DOWN
    }
}

impl Ledger {
    fn fail(&mut self, phase: u8, what: &str) {
        self.failed[phase as usize] += 1;
        let samples = &mut self.samples[phase as usize];
        if samples.len() < 5 {
            samples.push(what.to_string());
        }
    }
}

/// POST with the thread's agent; `None` on a transport error.
fn post(agent: &ureq::Agent, s: &PolicyServer, path: &str, body: &str) -> Option<(u16, String)> {
    let mut resp = agent
        .post(format!("{}{path}", s.external))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, body_string(&mut resp, 1 << 20).unwrap_or_default()))
}

fn get_status(s: &PolicyServer, path: &str) -> (u16, String) {
    let mut resp = s
        .client()
        .get(format!("{}{path}", s.external))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, body_string(&mut resp, 1 << 20).unwrap())
}

/// Writers on both servers; the database is stopped under them and started again.
fn outage_during_load(db: TestDb) {
    let kind = db.kind();
    let servers = two_servers(&db);
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let sent = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (mine, other) = (w % 2, (w + 1) % 2);
            let servers = servers.clone();
            let (phase, stop, ledger, sent) =
                (phase.clone(), stop.clone(), ledger.clone(), sent.clone());
            std::thread::spawn(move || {
                let agent = servers[mine].client();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let src = format!("w{w}-{i}");
                    let body = v1_body(&[(&src, "dest", "tcp", 80, 80)]);
                    ledger.lock().unwrap().attempted.push(src.clone());
                    let at = phase.load(Ordering::SeqCst);
                    let created = post(&agent, &servers[mine], V1, &body);
                    sent.fetch_add(1, Ordering::SeqCst);
                    let at = during(at, &phase);
                    let ok = matches!(created, Some((200, _)));
                    {
                        let mut l = ledger.lock().unwrap();
                        if ok {
                            l.created.push(src.clone());
                            if at == AFTER {
                                l.acked_after[mine] += 1;
                            }
                        } else {
                            l.fail(at, &format!("create {src} on {mine}: {created:?}"));
                        }
                    }
                    // Every third acknowledged policy is deleted again, through the other server.
                    if ok && i.is_multiple_of(3) {
                        let at = phase.load(Ordering::SeqCst);
                        let deleted = post(&agent, &servers[other], &format!("{V1}/delete"), &body);
                        let at = during(at, &phase);
                        let mut l = ledger.lock().unwrap();
                        match deleted {
                            Some((200, _)) => {
                                l.deleted.push(src);
                                if at == AFTER {
                                    l.acked_after[other] += 1;
                                }
                            }
                            _ => {
                                l.fail(at, &format!("delete {src} on {other}: {deleted:?}"));
                                l.delete_unknown.push(src);
                            }
                        }
                    }
                    i += 1;
                    if phase.load(Ordering::SeqCst) == DOWN {
                        // Failing requests are fast; do not spin.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    let writers = WriterGuard {
        stop: stop.clone(),
        threads: writers,
    };

    std::thread::sleep(Duration::from_millis(1500));
    let before = ledger.lock().unwrap().created.len();
    assert!(before > 10, "load too light before the outage: {before}");

    // From here until /health answers again, failures are expected.
    phase.store(DOWN, Ordering::SeqCst);
    let mut outage = Outage::begin(kind);
    for s in &servers {
        wait_until(
            "/health reports the database down",
            Duration::from_secs(30),
            || get_status(s, "/health").0 == 500,
        );
        let (status, body) = get_status(s, "/health");
        assert_eq!(status, 500);
        assert_eq!(parse(&body), json!({"error": "check database failed"}));
        let (status, body) = get_status(s, "/");
        assert_eq!(status, 200, "uptime while the database is down: {body}");
        assert!(body.starts_with("Network policy server, up for "), "{body}");
        let (status, body) = s.post(
            V1,
            Some(ADMIN_TOKEN),
            &v1_body(&[("while-down", "dest", "tcp", 1, 1)]),
        );
        assert_eq!(
            (status, parse(&body)),
            (500, json!({"error": "database create failed"}))
        );
        let (status, body) = s.get(V1, Some(ADMIN_TOKEN));
        assert_eq!(
            (status, parse(&body)),
            (500, json!({"error": "database read failed"}))
        );
    }
    std::thread::sleep(Duration::from_millis(1000));
    let sent_down = sent.load(Ordering::SeqCst);
    outage.end();

    for s in &servers {
        wait_until(
            "/health recovers without a restart",
            Duration::from_secs(60),
            || get_status(s, "/health").0 == 200,
        );
    }
    phase.store(AFTER, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    drop(writers);

    let l = ledger.lock().unwrap();
    assert_eq!(
        l.failed[BEFORE as usize],
        0,
        "requests failed under load before the outage: {:?}\n{}\n{}",
        l.samples[BEFORE as usize],
        servers[0].log(),
        servers[1].log()
    );
    assert_eq!(
        l.failed[AFTER as usize],
        0,
        "requests failed after /health answered again: {:?}\n{}\n{}",
        l.samples[AFTER as usize],
        servers[0].log(),
        servers[1].log()
    );
    assert!(
        l.failed[DOWN as usize] > 0,
        "no request failed while the database was down (sent {sent_down})"
    );
    for (i, n) in l.acked_after.iter().enumerate() {
        assert!(
            *n > 0,
            "server {i} acknowledged nothing after the database came back:\n{}",
            servers[i].log()
        );
    }
    let (listed, _tags) = agreed_state(&servers);
    let stored: HashSet<&str> = listed.iter().map(|p| p.0.as_str()).collect();
    let deleted: HashSet<&str> = l.deleted.iter().map(String::as_str).collect();
    let unknown: HashSet<&str> = l.delete_unknown.iter().map(String::as_str).collect();
    let attempted: HashSet<&str> = l.attempted.iter().map(String::as_str).collect();
    let mut checked = 0;
    for src in &l.created {
        if deleted.contains(src.as_str()) {
            assert!(
                !stored.contains(src.as_str()),
                "acknowledged delete of {src} lost"
            );
        } else if !unknown.contains(src.as_str()) {
            assert!(
                stored.contains(src.as_str()),
                "acknowledged create of {src} lost"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 10,
        "too few acknowledged creates to check: {checked}"
    );
    for src in &stored {
        assert!(attempted.contains(src), "{src} stored but never sent");
    }
    assert!(!stored.contains("while-down"));
    assert_internal_lists_agree(&servers);
    eprintln!(
        "{kind:?} outage: {} creates and {} deletes acknowledged, {:?} failures (before, down, \
         after), {:?} acknowledged after recovery",
        l.created.len(),
        l.deleted.len(),
        l.failed,
        l.acked_after
    );
}

/// Stops and joins the writers, also when an assertion fails first.
struct WriterGuard {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn postgres_outage_during_load_loses_no_acknowledged_change_and_servers_recover() {
    let _serial = serial();
    outage_during_load(db::postgres());
}

#[test]
fn mariadb_outage_during_load_loses_no_acknowledged_change_and_servers_recover() {
    let _serial = serial();
    outage_during_load(db::mariadb());
}

// ------------------------------------------------------------------------------ string bounds

/// Issue 18, item 5: ids are bounded by the schema's `VARCHAR(255)` on every backend: 256
/// characters (or a NUL, which PostgreSQL cannot store) is a 400 that changes nothing, and 255
/// characters, also multi-byte ones, are stored and listed intact.
fn ids_are_bounded_by_the_schema(db: TestDb) {
    let s = PolicyServer::start_with(|c, _| c["database"] = db.config_json());
    let body = |src: &str, dst: &str| {
        json!({"policies": [{"source": {"id": src},
            "destination": {"id": dst, "protocol": "tcp", "ports": {"start": 80, "end": 80}}}]})
        .to_string()
    };
    for (src, dst, field) in [
        ("a".repeat(256), "b".to_string(), "source id"),
        ("a".to_string(), "é".repeat(256), "destination id"),
        ("a".to_string(), "x".repeat(100_000), "destination id"),
        ("a\0b".to_string(), "b".to_string(), "source id"),
    ] {
        for path in [V1.to_string(), format!("{V1}/delete")] {
            let (status, answer) = s.post(&path, Some(ADMIN_TOKEN), &body(&src, &dst));
            assert_eq!(status, 400, "{field} {}: {answer}", dst.len());
            assert!(
                answer.contains(&format!("invalid {field}")),
                "{field}: {answer}"
            );
        }
    }
    let (status, listed) = s.get(V1, Some(ADMIN_TOKEN));
    assert_eq!((status, policy_rows(&listed).len()), (200, 0), "{listed}");
    let (src, dst) = ("é".repeat(255), "😀".repeat(255));
    let (status, answer) = s.post(V1, Some(ADMIN_TOKEN), &body(&src, &dst));
    assert_eq!(status, 200, "{answer}");
    let (_, listed) = s.get(V1, Some(ADMIN_TOKEN));
    assert_eq!(
        policy_rows(&listed),
        vec![(src.clone(), dst.clone(), "tcp".to_string(), 80, 80)]
    );
    let (_, tags) = s.get(TAGS, Some(ADMIN_TOKEN));
    let tags = parse(&tags);
    let ids: HashSet<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, HashSet::from([src.as_str(), dst.as_str()]));
}

#[test]
fn ids_are_bounded_by_the_schema_on_sqlite() {
    let _serial = serial();
    ids_are_bounded_by_the_schema(db::sqlite());
}

#[test]
fn ids_are_bounded_by_the_schema_on_postgres() {
    let _serial = serial();
    ids_are_bounded_by_the_schema(db::postgres());
}

#[test]
fn ids_are_bounded_by_the_schema_on_mariadb() {
    let _serial = serial();
    ids_are_bounded_by_the_schema(db::mariadb());
}
