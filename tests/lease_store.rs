//! The overlay controller's lease store on the project's SQL store, one suite run unchanged against
//! SQLite, PostgreSQL and MariaDB (real servers, each test its own database): constraints, renew,
//! expiry and reclaim, migrations, concurrent reclaims from two controllers, and two real
//! `overlay-controller` processes on one database taking concurrent acquisitions.

mod support;
use support::db;
use support::ports::free_port;

use netman::db::DatabaseConfig;
use netman::http::client::{agent, body_string, ClientTls};
use netman::overlay::controller::Controller;
use netman::overlay::store::{LeaseStore, SqlLeaseStore, StoreError};
use netman::overlay::Lease;
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::overlay::{certs, controller_config, wait_until, Proc, CONTROLLER, OVERLAY};

fn open(config: &DatabaseConfig) -> Arc<dyn LeaseStore> {
    netman::overlay::store::open(config).unwrap_or_else(|e| panic!("opening {config}: {e}"))
}

fn lease(ip: &str, subnet: &str) -> Lease {
    Lease::new(ip.parse().unwrap(), subnet.parse().unwrap())
}

/// A controller on its own store (its own connections, as another process would have) with a
/// shared test clock.
fn controller(config: &DatabaseConfig, network: &str, clock: &Arc<AtomicI64>) -> Controller {
    let c = clock.clone();
    Controller::new(open(config), network.parse().unwrap(), 24, 100, 10)
        .with_clock(move || c.load(Ordering::SeqCst))
}

pub fn constraints_renew_reclaim(db: &db::TestDb) {
    let s = open(&db.config);
    s.ping().unwrap();
    let a = lease("10.0.0.1", "10.255.1.0/24");
    s.insert(&a, 100).unwrap();
    // Each unique column refuses a second holder; nothing is inserted.
    let same_subnet = lease("10.0.0.2", "10.255.1.0/24");
    let same_ip = lease("10.0.0.1", "10.255.2.0/24");
    let mut same_mac = lease("10.0.0.3", "10.255.3.0/24");
    same_mac.overlay_hardware_addr = a.overlay_hardware_addr.clone();
    for l in [&same_subnet, &same_ip, &same_mac] {
        assert!(
            matches!(s.insert(l, 100), Err(StoreError::Conflict(_))),
            "{l:?}"
        );
    }
    assert_eq!(s.leases().unwrap().len(), 1);
    assert!(s.renew("10.0.0.1", 200).unwrap());
    assert!(
        s.renew("10.0.0.1", 200).unwrap(),
        "a renew within the same second finds the lease"
    );
    assert!(!s.renew("10.0.0.9", 200).unwrap());
    let stored = s.lease_for_underlay("10.0.0.1").unwrap().unwrap();
    assert_eq!(
        (stored.lease.clone(), stored.last_renewed_at),
        (a.clone(), 200)
    );
    assert!(s.lease_for_underlay("10.0.0.9").unwrap().is_none());
    // Not expired at cutoff 150: nothing changes.
    let b = lease("10.0.0.2", "10.255.1.0/24");
    assert!(!s.reclaim("10.0.0.1", 150, &b, 300).unwrap());
    // A reclaim whose new lease clashes with a third row changes nothing.
    let c = lease("10.0.0.3", "10.255.3.0/24");
    s.insert(&c, 100).unwrap();
    let clash = lease("10.0.0.3", "10.255.1.0/24");
    assert!(matches!(
        s.reclaim("10.0.0.1", 250, &clash, 300),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.leases().unwrap().len(), 2);
    assert!(s.lease_for_underlay("10.0.0.1").unwrap().is_some());
    assert!(s.reclaim("10.0.0.1", 250, &b, 300).unwrap());
    let all: Vec<_> = s.leases().unwrap();
    assert_eq!(
        all.iter().map(|l| l.lease.clone()).collect::<Vec<_>>(),
        vec![c.clone(), b.clone()],
        "listed in insertion order"
    );
    assert_eq!(all[1].last_renewed_at, 300);
    // The old holder is gone: a second reclaim finds nothing.
    assert!(!s.reclaim("10.0.0.1", 250, &b, 300).unwrap());
    s.delete("10.0.0.2").unwrap();
    s.delete("10.0.0.2").unwrap();
    s.delete("10.0.0.3").unwrap();
    assert!(s.leases().unwrap().is_empty());
}

pub fn controller_expiry_and_reclaim(db: &db::TestDb) {
    let now = Arc::new(AtomicI64::new(1_000_000));
    // /23 in /24s: one leasable block.
    let c = controller(&db.config, "10.255.0.0/23", &now);
    let a = c.acquire("10.0.0.1", false).unwrap();
    assert_eq!(a.overlay_subnet, "10.255.1.0/24");
    assert_eq!(
        c.acquire("10.0.0.1", false).unwrap(),
        a,
        "same cell, same lease"
    );
    assert_eq!(c.acquire("10.0.0.2", false).unwrap_err().status, 409);
    now.fetch_add(50, Ordering::SeqCst);
    assert_eq!(c.stats().unwrap().stale, 1);
    c.renew(&a).unwrap();
    now.fetch_add(99, Ordering::SeqCst);
    assert_eq!(c.list().unwrap(), vec![a.clone()], "renewed, not expired");
    assert_eq!(c.acquire("10.0.0.2", false).unwrap_err().status, 409);
    now.fetch_add(1, Ordering::SeqCst);
    assert!(
        c.list().unwrap().is_empty(),
        "expired leases are not listed"
    );
    let b = c.acquire("10.0.0.2", false).unwrap();
    assert_eq!(
        b.overlay_subnet, a.overlay_subnet,
        "expired lease reclaimed"
    );
    assert_eq!(c.renew(&a).unwrap_err().status, 409, "old holder conflicts");
    let mut wrong = b.clone();
    wrong.overlay_hardware_addr = "ee:ee:00:00:00:00".into();
    assert_eq!(
        c.renew(&wrong).unwrap_err().status,
        409,
        "mismatching renew"
    );
    c.release("10.0.0.2").unwrap();
    c.release("10.0.0.2").unwrap();
    c.renew(&b).unwrap();
    assert_eq!(c.list().unwrap(), vec![b.clone()], "renew acts as acquire");
    let s = c.stats().unwrap();
    assert_eq!((s.total, s.free, s.stale), (1, 0, 0));
    // Single IPs come from the first block.
    let single = c.acquire("10.0.0.9", true).unwrap();
    assert!(
        single.overlay_subnet.starts_with("10.255.0.") && single.overlay_subnet.ends_with("/32")
    );
}

/// Two controllers (separate stores) on one database race to reclaim the expired leases of a
/// full pool: every expired subnet goes to exactly one new cell, the others get 409.
pub fn concurrent_reclaim_from_two_controllers(db: &db::TestDb) {
    let now = Arc::new(AtomicI64::new(1_000_000));
    let c1 = Arc::new(controller(&db.config, "10.255.0.0/22", &now));
    let c2 = Arc::new(controller(&db.config, "10.255.0.0/22", &now));
    let old: HashSet<String> = (1..=3)
        .map(|i| {
            c1.acquire(&format!("10.0.0.{i}"), false)
                .unwrap()
                .overlay_subnet
        })
        .collect();
    assert_eq!(old.len(), 3);
    now.fetch_add(1000, Ordering::SeqCst);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let c = if i % 2 == 0 { c1.clone() } else { c2.clone() };
            std::thread::spawn(move || c.acquire(&format!("10.0.1.{i}"), false))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let won: Vec<&Lease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let lost: Vec<u16> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.status))
        .collect();
    assert_eq!(won.len(), 3, "{results:?}");
    assert_eq!(lost, vec![409; 5], "{results:?}");
    let subnets: HashSet<String> = won.iter().map(|l| l.overlay_subnet.clone()).collect();
    assert_eq!(subnets, old, "each expired subnet reclaimed exactly once");
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM subnets"), 3);
    assert_eq!(c2.list().unwrap().len(), 3);
}

/// Two controllers on one database, more cells than blocks, all at once: every block is leased
/// exactly once and every other cell gets 409 (never a 500 from lost races).
pub fn concurrent_exhaustion_from_two_controllers(db: &db::TestDb) {
    let now = Arc::new(AtomicI64::new(1_000_000));
    // /20 in /24s: 15 leasable blocks.
    let c1 = Arc::new(controller(&db.config, "10.255.0.0/20", &now));
    let c2 = Arc::new(controller(&db.config, "10.255.0.0/20", &now));
    let handles: Vec<_> = (0..30)
        .map(|i| {
            let c = if i % 2 == 0 { c1.clone() } else { c2.clone() };
            std::thread::spawn(move || c.acquire(&format!("10.0.2.{i}"), false))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let won: HashSet<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|l| l.overlay_subnet.clone()))
        .collect();
    let lost: Vec<u16> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.status))
        .collect();
    assert_eq!(won.len(), 15, "{results:?}");
    assert_eq!(lost, vec![409; 15], "{results:?}");
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM subnets"), 15);
}

pub fn migrations_recorded_concurrent_and_guarded(db: &db::TestDb) {
    // Several controllers starting together: one migrator at a time, one record.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let config = db.config.clone();
            std::thread::spawn(move || {
                SqlLeaseStore::open(&config)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    open(&db.config);
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM overlay_migrations"), 1);
    assert_eq!(
        db.query_i64("SELECT MAX(version) FROM overlay_migrations"),
        1
    );
    // The lease tables live beside the policy tables: the policy store migrates the same
    // database independently.
    netman::policy::store::open(&db.config, 1).unwrap();
    open(&db.config)
        .insert(&lease("10.0.0.1", "10.255.1.0/24"), 1)
        .unwrap();
    // A schema newer than this binary knows is refused.
    db.exec("INSERT INTO overlay_migrations (version, name, applied_at) VALUES (99, 'future', 0)");
    let err = SqlLeaseStore::open(&db.config)
        .err()
        .expect("newer schema refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

/// A database that does not answer: start-up retries until `connect_timeout_seconds`, then fails
/// with a clear message naming the database (without credentials).
pub fn startup_retry_times_out(db: &db::TestDb) {
    let config = db::unreachable(db.kind(), 2);
    let started = std::time::Instant::now();
    let err = match netman::overlay::store::open(&config) {
        Ok(_) => panic!("unreachable {config} opened"),
        Err(e) => e,
    };
    assert!(started.elapsed() >= Duration::from_secs(2), "{err}");
    assert!(err.contains("connect_timeout_seconds=2"), "{err}");
    assert!(!err.contains(db::PASSWORD), "{err}");
}

struct RunningController {
    proc: Proc,
    api: String,
    tls: ClientTls,
}

fn start_controller(dir: &std::path::Path, name: &str, db: &db::TestDb) -> RunningController {
    let c = certs(dir, &OVERLAY);
    let (port, debug) = (free_port(), free_port());
    let config = dir.join(format!("{name}.json"));
    std::fs::write(
        &config,
        controller_config(
            &c,
            ("127.0.0.1", port),
            debug,
            ("10.255.0.0/16", 24),
            db.config_json(),
        )
        .to_string(),
    )
    .unwrap();
    let mut command = Command::new(CONTROLLER);
    command.args(["--config", config.to_str().unwrap()]);
    let proc = Proc::spawn(command, &dir.join(format!("{name}.log")));
    wait_until(
        &format!("{name} listening"),
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let s = |p: &std::path::Path| Some(p.to_str().unwrap().to_string());
    RunningController {
        proc,
        api: format!("https://127.0.0.1:{port}"),
        tls: ClientTls {
            ca_cert_file: s(&c.ca),
            client_cert_file: s(&c.client.0),
            client_key_file: s(&c.client.1),
            skip_verification: false,
        },
    }
}

/// Two real controller processes on one database, 120 cells acquiring concurrently through both:
/// every cell gets a lease, no subnet is given twice, both controllers list the same leases.
pub fn two_controller_processes_concurrent_acquire(db: &db::TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let (da, db_) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db_).unwrap();
    let a = start_controller(&da, "a", db);
    let b = start_controller(&db_, "b", db);
    let apis = [a.api.clone(), b.api.clone()];
    let tls = [a.tls.clone(), b.tls.clone()];
    let cells: Vec<String> = (0..120)
        .map(|i| format!("10.0.{}.{}", i / 100, i % 100 + 1))
        .collect();
    let work = Arc::new(std::sync::Mutex::new(cells.clone()));
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let (api, tls, work) = (apis[t % 2].clone(), tls[t % 2].clone(), work.clone());
            std::thread::spawn(move || {
                let agent = agent(&tls, Duration::from_secs(30)).unwrap();
                let mut got = Vec::new();
                loop {
                    let Some(ip) = work.lock().unwrap().pop() else {
                        return got;
                    };
                    let body = serde_json::json!({ "underlay_ip": ip }).to_string();
                    let mut r = agent
                        .put(&format!("{api}/leases/acquire"))
                        .send(body.as_bytes())
                        .unwrap();
                    let text = body_string(&mut r, 1 << 16).unwrap();
                    assert_eq!(r.status().as_u16(), 200, "{ip}: {text}");
                    let l: Lease = serde_json::from_str(&text).unwrap();
                    assert_eq!(l.underlay_ip, ip);
                    got.push(l);
                }
            })
        })
        .collect();
    let leases: Vec<Lease> = handles
        .into_iter()
        .flat_map(|h| {
            h.join().unwrap_or_else(|_| {
                panic!(
                    "an acquisition failed; controller logs:\n{}\n{}",
                    a.proc.log_text(),
                    b.proc.log_text()
                )
            })
        })
        .collect();
    assert_eq!(leases.len(), 120);
    let subnets: HashSet<&str> = leases.iter().map(|l| l.overlay_subnet.as_str()).collect();
    assert_eq!(subnets.len(), 120, "no subnet given twice");
    let macs: HashSet<&str> = leases
        .iter()
        .map(|l| l.overlay_hardware_addr.as_str())
        .collect();
    assert_eq!(macs.len(), 120);
    assert!(!subnets.contains("10.255.0.0/24"));
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM subnets"), 120);
    let mut listed = Vec::new();
    for (api, tls) in apis.iter().zip(&tls) {
        let agent = agent(tls, Duration::from_secs(10)).unwrap();
        let mut r = agent.get(&format!("{api}/leases")).call().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value =
            serde_json::from_str(&body_string(&mut r, 1 << 22).unwrap()).unwrap();
        let mut l: Vec<Lease> = serde_json::from_value(v["leases"].clone()).unwrap();
        l.sort_by(|x, y| x.underlay_ip.cmp(&y.underlay_ip));
        listed.push(l);
    }
    let mut expected = leases.clone();
    expected.sort_by(|x, y| x.underlay_ip.cmp(&y.underlay_ip));
    assert_eq!(listed[0], expected);
    assert_eq!(listed[1], expected, "both controllers list the same leases");
}

db::suite!(
    constraints_renew_reclaim,
    controller_expiry_and_reclaim,
    concurrent_reclaim_from_two_controllers,
    concurrent_exhaustion_from_two_controllers,
    migrations_recorded_concurrent_and_guarded,
    startup_retry_times_out,
    two_controller_processes_concurrent_acquire,
);
