//! Policy server benchmark: loads 60,000 policies over 20,000 apps through the external API in
//! batches of 100, then measures internal `GET policies?id=` (50 ids) with 16 concurrent
//! mutual-TLS keep-alive clients, and external list latency. Prints figures; asserts nothing.
//!
//! `cargo bench --bench policy_server` (SQLite). `NETMAN_BENCH_DATABASES=sqlite,postgres,mysql`
//! adds the other backends (servers started as in the store tests).

#[path = "../tests/support/mod.rs"]
mod support;
use support::{db, policy_server};

use policy_server::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const APPS: usize = 20_000;
const POLICIES: usize = 60_000;
const BATCH: usize = 100;
const READERS: usize = 16;
const READ_SECONDS: u64 = 8;

fn app(i: usize) -> String {
    format!("{:08x}-app-{i}", i.wrapping_mul(2654435761) as u32)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    backend: String,
    create_per_s: f64,
    create_p50: f64,
    create_p99: f64,
    read_per_s: f64,
    read_p50: f64,
    read_p99: f64,
    list_all_ms: f64,
    list_filtered_ms: f64,
}

fn run(backend: &str, database: serde_json::Value) -> Figures {
    let server = PolicyServer::start_with(|c, dir| {
        if database.is_null() {
            c["database"]["connection_string"] = serde_json::json!(dir.join("bench.db"));
        } else {
            c["database"] = database.clone();
        }
    });

    // Load in batches of 100, timing each batch.
    let url = format!("{}/networking/v1/external/policies", server.external);
    let client = server.client();
    let mut batch_ms = Vec::with_capacity(POLICIES / BATCH);
    let load_started = Instant::now();
    for b in 0..POLICIES / BATCH {
        let policies: Vec<(String, String, i64)> = (b * BATCH..(b + 1) * BATCH)
            .map(|i| {
                let src = app(i % APPS);
                let dst = app((i * 7 + 1 + i / APPS) % APPS);
                (src, dst, 8080 + (i / APPS) as i64)
            })
            .collect();
        let refs: Vec<(&str, &str, &str, i64, i64)> = policies
            .iter()
            .map(|(s, d, p)| (s.as_str(), d.as_str(), "tcp", *p, *p))
            .collect();
        let body = v1_body(&refs);
        let started = Instant::now();
        let resp = client
            .post(&url)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send(body.as_bytes())
            .unwrap();
        assert_eq!(resp.status(), 200, "create batch {b}");
        batch_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let load_s = load_started.elapsed().as_secs_f64();
    batch_ms.sort_by(f64::total_cmp);

    // Internal filtered reads, 16 keep-alive mTLS clients.
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let agent = server.internal_client();
            let base = format!("{}/networking/v1/internal/policies", server.internal);
            let (latencies, stop) = (latencies.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut n = r * 1000;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> =
                        (0..50).map(|k| app((n * 131 + k * 397) % APPS)).collect();
                    n += 1;
                    let started = Instant::now();
                    let mut resp = agent
                        .get(format!("{base}?id={}", ids.join(",")))
                        .call()
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    let _ = netman::http::client::body_string(&mut resp, 64 << 20).unwrap();
                    mine.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(READ_SECONDS));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let mut reads = latencies.lock().unwrap().clone();
    reads.sort_by(f64::total_cmp);

    // External list latency: everything, and one app's policies.
    let time_get = |path: &str| {
        let mut samples: Vec<f64> = (0..5)
            .map(|_| {
                let started = Instant::now();
                let (status, body) = server.get(path, Some(ADMIN_TOKEN));
                assert_eq!(status, 200);
                assert!(body.len() > 10);
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    let list_all_ms = time_get("/networking/v1/external/policies");
    let list_filtered_ms = time_get(&format!("/networking/v1/external/policies?id={}", app(42)));

    Figures {
        backend: backend.to_string(),
        create_per_s: POLICIES as f64 / load_s,
        create_p50: percentile(&batch_ms, 0.5),
        create_p99: percentile(&batch_ms, 0.99),
        read_per_s: reads.len() as f64 / READ_SECONDS as f64,
        read_p50: percentile(&reads, 0.5),
        read_p99: percentile(&reads, 0.99),
        list_all_ms,
        list_filtered_ms,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let wanted = std::env::var("NETMAN_BENCH_DATABASES").unwrap_or_else(|_| "sqlite".into());
    let mut rows = Vec::new();
    for backend in wanted.split(',').map(str::trim) {
        // Keeps the test database alive (it is dropped with it) while the server uses it.
        let test_db = match backend {
            "sqlite" => None,
            "postgres" => Some(db::postgres()),
            "mysql" | "mariadb" => Some(db::mariadb()),
            other => {
                eprintln!("unknown backend {other} (sqlite, postgres, mysql)");
                continue;
            }
        };
        let database = test_db
            .as_ref()
            .map_or(serde_json::Value::Null, |d| d.config_json());
        eprintln!("loading {POLICIES} policies over {APPS} apps on {backend}...");
        rows.push(run(backend, database));
        drop(test_db);
    }
    println!(
        "\npolicy server, {POLICIES} policies over {APPS} apps ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| backend | create policies/s (batches of {BATCH}) | batch p50 ms | batch p99 ms | internal GET ?id= (50 ids) req/s, {READERS} mTLS clients | p50 ms | p99 ms | external list all ms | external list ?id=1 app ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for f in rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} |",
            f.backend,
            f.create_per_s,
            f.create_p50,
            f.create_p99,
            f.read_per_s,
            f.read_p50,
            f.read_p99,
            f.list_all_ms,
            f.list_filtered_ms
        );
    }
}
