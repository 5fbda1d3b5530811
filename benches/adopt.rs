//! Adoption and transfer benchmark (issue 19): for a database of 60,000 policies over 20,000
//! apps, the time `policy-server migrate` takes to adopt the original's database in place
//! (PostgreSQL, MariaDB), and the time `export` and `import` take on each backend (SQLite,
//! PostgreSQL, MariaDB). Each figure is printed with a baseline measured in the same run on the
//! same database: for adopt, the time the original's tables took to fill with a few large
//! statements (the fixture's bulk fill); for export and import, one full listing of the store
//! (what the internal API serves an agent). Target: every adopt, export and import under 30 s.
//!
//! Run: `cargo bench --bench adopt` (env: NETMAN_BENCH_POLICIES=60000, NETMAN_BENCH_APPS=20000).
//! PostgreSQL and MariaDB are started if needed, as in the tests.
#![cfg(all(feature = "postgres", feature = "mysql"))]

#[path = "../tests/support/mod.rs"]
mod support;
use netman::policy::adopt::{self, MigrateOptions};
use netman::policy::store::{self, PolicyFilter};
use netman::policy::transfer;
use std::time::{Duration, Instant};
use support::{cf_networking, db};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let v = f();
    (v, start.elapsed())
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

struct Row {
    backend: &'static str,
    what: &'static str,
    took: Duration,
    baseline: &'static str,
    base: Duration,
}

/// One full listing through the store (no cache): the baseline of export and import.
fn list_all(test_db: &db::TestDb) -> (usize, Duration) {
    let s = store::open_uncached(&test_db.config, 2).expect("open store");
    let (listed, took) = timed(|| s.list(&PolicyFilter::All).expect("list"));
    (listed.len(), took)
}

/// `policy-server export` without the file: the document as bytes.
fn export(test_db: &db::TestDb) -> Vec<u8> {
    let doc = transfer::export(&test_db.config, 2).expect("export");
    serde_json::to_vec(&doc).expect("serialise")
}

fn main() {
    let policies = env("NETMAN_BENCH_POLICIES", 60_000);
    let apps = env("NETMAN_BENCH_APPS", 20_000);
    let sample = cf_networking::sample_policies(policies, apps);
    let mut rows = Vec::new();
    let mut document = None;

    for (backend, test_db) in [("postgres", db::postgres()), ("mariadb", db::mariadb())] {
        eprintln!("{backend}: building the original's database ...");
        let mut o = cf_networking::build(&test_db, cf_networking::Shape::Head, 2);
        let ((), fill) = timed(|| o.bulk_fill(&sample));
        eprintln!("{backend}: adopting ...");
        let (report, took) =
            timed(|| adopt::migrate(&test_db.config, 2, MigrateOptions::default()).expect("adopt"));
        assert!(
            report.iter().any(|l| l.contains("adopted: done")),
            "{report:?}"
        );
        rows.push(Row {
            backend,
            what: "adopt (migrate)",
            took,
            baseline: "bulk fill of the original",
            base: fill,
        });
        let (count, list) = list_all(&test_db);
        assert_eq!(count, policies, "{backend}: policies after adoption");
        eprintln!("{backend}: exporting ...");
        let (bytes, took) = timed(|| export(&test_db));
        rows.push(Row {
            backend,
            what: "export",
            took,
            baseline: "list all",
            base: list,
        });
        document = Some(bytes);
    }

    let bytes = document.expect("a document");
    for (backend, test_db) in [
        ("sqlite", db::sqlite()),
        ("postgres", db::postgres()),
        ("mariadb", db::mariadb()),
    ] {
        eprintln!("{backend}: importing ...");
        let (done, took) =
            timed(|| transfer::import(&test_db.config, 2, &bytes, false).expect("import"));
        assert_eq!(done.policies, policies, "{backend}: imported");
        let (count, list) = list_all(&test_db);
        assert_eq!(count, policies, "{backend}: policies after import");
        rows.push(Row {
            backend,
            what: "import",
            took,
            baseline: "list all",
            base: list,
        });
        if backend == "sqlite" {
            eprintln!("{backend}: exporting ...");
            let (again, took) = timed(|| export(&test_db));
            let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
            let (a, b) = (parse(&again), parse(&bytes));
            assert_eq!(a["policies"], b["policies"], "sqlite's export: policies");
            assert_eq!(a["tags"], b["tags"], "sqlite's export: tags");
            rows.push(Row {
                backend,
                what: "export",
                took,
                baseline: "list all",
                base: list,
            });
        }
    }

    println!(
        "\nadopt/transfer benchmark: {policies} policies over {apps} apps, document {:.1} MB \
         (target: each under 30 s)\n",
        bytes.len() as f64 / 1e6
    );
    println!(
        "{:<9} {:<16} {:>9}   {:<26} {:>9} {:>7}",
        "backend", "operation", "seconds", "baseline (same run)", "seconds", "ratio"
    );
    for r in &rows {
        println!(
            "{:<9} {:<16} {:>9}   {:<26} {:>9} {:>7.1}",
            r.backend,
            r.what,
            secs(r.took),
            r.baseline,
            secs(r.base),
            r.took.as_secs_f64() / r.base.as_secs_f64().max(1e-6)
        );
    }
}
