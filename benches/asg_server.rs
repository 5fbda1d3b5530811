//! The policy server's share of security-group propagation, on a real server (SQLite): with 1
//! and with 13,500 groups of 10 rules each (the field's largest foundations), the time from an
//! admin API edit to a parked cell watch answering and the cell's full fetch being read, and the
//! latency of a cell's fetch on a quiet server. The 1-group run is the baseline of the ratio.
//!
//! `cargo bench --bench asg_server` (set `NETMAN_ASG_BENCH_GROUPS=1,13500` to choose sizes).

#[path = "../tests/support/mod.rs"]
mod support;
use support::policy_server::{PolicyServer, ADMIN_TOKEN};

use netman::api::security_groups::SecurityGroup;
use netman::db::DatabaseConfig;
use netman::policy::asg::store::{AsgStore, SqlAsgStore, SyncMark};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SPACES: usize = 1000;
const ROUNDS: usize = 40;

fn rules(i: usize) -> String {
    let rules: Vec<Value> = (0..10)
        .map(|r| {
            json!({"protocol":"tcp","destination":format!("10.{}.{}.0/24", i % 250, r),
                   "ports":format!("{}, {}", 1000 + r, 2000 + r),"type":0,"code":0,
                   "description":"","log":false})
        })
        .collect();
    serde_json::to_string(&rules).unwrap()
}

fn seed(server: &PolicyServer, n: usize) {
    let config: DatabaseConfig = serde_json::from_value(server.config["database"].clone()).unwrap();
    let store = SqlAsgStore::open(&config).unwrap();
    let groups: Vec<SecurityGroup> = (0..n)
        .map(|i| SecurityGroup {
            guid: format!("00000000-0000-0000-0000-{i:012}"),
            name: format!("asg-{i}"),
            rules: rules(i),
            running_default: i % 1000 == 0,
            staging_default: false,
            running_space_guids: vec![format!("space-{}", i % SPACES)],
            staging_space_guids: vec![],
        })
        .collect();
    store.replace(&groups, &SyncMark::default()).unwrap();
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn get(agent: &ureq::Agent, url: &str) -> String {
    let mut resp = agent.get(url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap()
}

struct Figures {
    groups: usize,
    fetch_p50: f64,
    fetch_p99: f64,
    bytes: usize,
    propagation_p50: f64,
    propagation_p99: f64,
}

fn measure(n: usize) -> Figures {
    let server = PolicyServer::start();
    seed(&server, n);
    let cell = server.internal_client();
    let spaces: Vec<String> = (0..10).map(|i| format!("space-{}", i * 37)).collect();
    let fetch_url = format!(
        "{}/networking/v1/internal/security_groups?space_guids={}",
        server.internal,
        spaces.join(",")
    );
    let version_url = format!(
        "{}/networking/v1/internal/security_groups_last_updated",
        server.internal
    );
    // A quiet server: the cell's fetch.
    let mut bytes = get(&cell, &fetch_url).len();
    let mut fetch = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        bytes = get(&cell, &fetch_url).len();
        fetch.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Propagation: the cell parks a watch; an admin binds a group to the cell's space; the time
    // until the watch answered and the fetch is read.
    let admin = server.client();
    let mut propagation = Vec::new();
    for round in 0..ROUNDS {
        let version: i64 = get(&cell, &version_url).trim().parse().unwrap();
        let watcher = {
            let cell = cell.clone();
            let url = format!("{version_url}?wait=30&after={version}");
            let fetch_url = fetch_url.clone();
            std::thread::spawn(move || {
                get(&cell, &url);
                get(&cell, &fetch_url);
                Instant::now()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let guid = format!("00000000-0000-0000-0000-{:012}", round % n);
        let started = Instant::now();
        let mut resp = admin
            .post(format!(
                "{}/networking/v1/external/security_groups/{guid}/relationships/running_spaces",
                server.external
            ))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .send(json!({"data": [{"guid": format!("{}-{round}", spaces[0])}]}).to_string())
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{}",
            resp.body_mut().read_to_string().unwrap()
        );
        let answered = watcher.join().unwrap();
        propagation.push(answered.duration_since(started).as_secs_f64() * 1000.0);
    }
    Figures {
        groups: n,
        fetch_p50: percentile(&mut fetch, 0.5),
        fetch_p99: percentile(&mut fetch, 0.99),
        bytes,
        propagation_p50: percentile(&mut propagation, 0.5),
        propagation_p99: percentile(&mut propagation, 0.99),
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("NETMAN_ASG_BENCH_GROUPS")
        .unwrap_or_else(|_| "1,13500".into())
        .split(',')
        .map(|s| s.trim().parse().expect("NETMAN_ASG_BENCH_GROUPS: numbers"))
        .collect();
    println!(
        "policy server, SQLite, {ROUNDS} rounds each; a cell asks for 10 spaces of {SPACES}; \
         groups of 10 rules"
    );
    println!(
        "groups | cell fetch p50 / p99 ms | fetch bytes | edit -> watch -> fetch p50 / p99 ms"
    );
    let mut baseline = None;
    for n in sizes {
        let f = measure(n);
        println!(
            "{} | {:.1} / {:.1} | {} | {:.1} / {:.1}",
            f.groups, f.fetch_p50, f.fetch_p99, f.bytes, f.propagation_p50, f.propagation_p99
        );
        match baseline {
            None => baseline = Some(f),
            Some(ref b) => println!(
                "  ratio to {} group(s): propagation p50 {:.2}, p99 {:.2}",
                b.groups,
                f.propagation_p50 / b.propagation_p50,
                f.propagation_p99 / b.propagation_p99
            ),
        }
    }
}
