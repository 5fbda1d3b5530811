//! Store benchmark: loads 60,000 policies over 20,000 apps in create batches of 100, then runs 16
//! threads of `list(Either(50 random app ids))` for a few seconds, per backend, and prints one
//! table. Run: `cargo bench --bench store` (env: NETMAN_BENCH_BACKENDS=sqlite,postgres,mariadb,
//! NETMAN_BENCH_POLICIES=60000, NETMAN_BENCH_APPS=20000, NETMAN_BENCH_SECONDS=10,
//! NETMAN_BENCH_THREADS=16). PostgreSQL and MariaDB are started if needed, as in the tests.

#[path = "../tests/support/mod.rs"]
mod support;
use support::db;

use netman::api::policy::Policy;
use netman::policy::store::{self, CachedStore, PolicyFilter, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn app(i: usize) -> String {
    format!("6f1c2d3e-0000-4000-8000-{i:012}")
}

/// Policy k: source app k mod apps, a destination derived from it, one port per "layer" so every
/// (source, destination, port) is distinct.
fn policy(k: usize, apps: usize) -> Policy {
    let layer = k / apps;
    let src = k % apps;
    let dst = (src * 31 + layer * 17 + 1) % apps;
    Policy::new(
        &app(src),
        &app(dst),
        "tcp",
        8000 + layer as i64,
        8000 + layer as i64,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Row {
    backend: &'static str,
    load_secs: f64,
    create_per_sec: f64,
    create_p50: Duration,
    create_p99: Duration,
    reads_per_sec: f64,
    read_p50: Duration,
    read_p99: Duration,
    avg_returned: f64,
}

fn run(backend: &'static str, s: Arc<CachedStore>) -> Row {
    let policies = env("NETMAN_BENCH_POLICIES", 60_000);
    let apps = env("NETMAN_BENCH_APPS", 20_000);
    let seconds = env("NETMAN_BENCH_SECONDS", 10) as u64;
    let threads = env("NETMAN_BENCH_THREADS", 16);

    // Load in create batches of 100, timing each batch.
    let started = Instant::now();
    let mut batches = Vec::new();
    for chunk in (0..policies).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Policy> = chunk.iter().map(|k| policy(*k, apps)).collect();
        let t = Instant::now();
        s.create(&batch).expect("create batch");
        batches.push(t.elapsed());
    }
    let load = started.elapsed();
    assert_eq!(s.count().unwrap(), policies, "every policy stored");
    batches.sort();

    // Steady state: the read cache has caught up with the load (it does so in the background
    // while SQL answers; this is the time that takes).
    let warm = Instant::now();
    while !s.is_fresh() {
        s.list(&PolicyFilter::Either(vec![app(0)])).expect("list");
        assert!(
            warm.elapsed() < Duration::from_secs(120),
            "cache never caught up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "{backend}: read cache ready {:?} after the load",
        warm.elapsed()
    );

    // Filtered reads from many threads.
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                let mut latencies = Vec::new();
                let mut returned = 0usize;
                while Instant::now() < deadline {
                    let ids: Vec<String> = (0..50).map(|_| app(next() as usize % apps)).collect();
                    let t = Instant::now();
                    returned += s.list(&PolicyFilter::Either(ids)).expect("list").len();
                    latencies.push(t.elapsed());
                }
                (latencies, returned)
            })
        })
        .collect();
    let read_started = Instant::now();
    let mut latencies = Vec::new();
    let mut returned = 0;
    for w in workers {
        let (l, r) = w.join().expect("reader");
        latencies.extend(l);
        returned += r;
    }
    let read_secs = read_started.elapsed().as_secs_f64();
    latencies.sort();
    Row {
        backend,
        load_secs: load.as_secs_f64(),
        create_per_sec: policies as f64 / load.as_secs_f64(),
        create_p50: percentile(&batches, 0.50),
        create_p99: percentile(&batches, 0.99),
        reads_per_sec: latencies.len() as f64 / read_secs,
        read_p50: percentile(&latencies, 0.50),
        read_p99: percentile(&latencies, 0.99),
        avg_returned: returned as f64 / latencies.len().max(1) as f64,
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let backends =
        std::env::var("NETMAN_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres,mariadb".into());
    let mut rows = Vec::new();
    for b in backends.split(',').map(str::trim) {
        let fixture = match b {
            "sqlite" => db::sqlite(),
            #[cfg(feature = "postgres")]
            "postgres" => db::postgres(),
            #[cfg(feature = "mysql")]
            "mariadb" | "mysql" => db::mariadb(),
            other => {
                eprintln!("skipping backend {other:?} (unknown or not compiled in)");
                continue;
            }
        };
        let mut config = fixture.config.clone();
        config.max_open_connections = 32;
        config.max_idle_connections = 32;
        let s = Arc::new(CachedStore::new(
            store::open_uncached(&config, 2).expect("open store"),
        ));
        let name: &'static str = match b {
            "sqlite" => "sqlite",
            "postgres" => "postgres",
            _ => "mariadb",
        };
        eprintln!("{name}: loading ...");
        rows.push(run(name, s));
        if std::env::var("NETMAN_BENCH_KEEP").is_ok() {
            eprintln!("keeping {}", fixture.config);
            std::mem::forget(fixture);
        }
    }
    let policies = env("NETMAN_BENCH_POLICIES", 60_000);
    let apps = env("NETMAN_BENCH_APPS", 20_000);
    let threads = env("NETMAN_BENCH_THREADS", 16);
    println!(
        "\nstore benchmark: {policies} policies over {apps} apps; create batches of 100; \
         list(Either(50 ids)) from {threads} threads\n"
    );
    println!(
        "| backend | load (s) | create policies/s | batch(100) p50 ms | batch(100) p99 ms | reads/s | read p50 ms | read p99 ms | policies/read |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.0} | {} | {} | {:.0} | {} | {} | {:.1} |",
            r.backend,
            r.load_secs,
            r.create_per_sec,
            ms(r.create_p50),
            ms(r.create_p99),
            r.reads_per_sec,
            ms(r.read_p50),
            ms(r.read_p99),
            r.avg_returned
        );
    }
}
