//! garden-external-networker latency: `up` and `down` (and both together) of one container, as
//! garden runs them (one process per action, in the cell's network namespace), per CNI plugin
//! variant, with two port mappings and 0 / 10 / 1,000 security-group rules.
//! Run: `cargo bench --bench networker` (as root). Target: up + down, 2 ports + 10 rules,
//! median under 50 ms.

#[path = "../tests/networker_fixture.rs"]
mod fixture;

use fixture::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn rules(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                let a = format!("10.200.{}.{}", i / 250, i % 250 + 1);
                tcp_rule(&a, &a, 443, 443 + (i % 3) as u16, false)
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let median = v[v.len() / 2];
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).min(v.len()) - 1];
    (ms(median), ms(p99))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("garden-external-networker: one up and one down per iteration (process spawn included)");
    println!(
        "{:<8} {:>6} {:>5} | {:>12} {:>12} | {:>12} {:>12} | {:>14} {:>14}",
        "plugin", "rules", "iters", "up med ms", "up p99 ms", "down med ms", "down p99 ms", "up+down med", "up+down p99"
    );
    for &plugin in PLUGINS {
        let cell = Cell::new(plugin);
        let k = Container::start();
        for (n, iters) in [(0usize, 40usize), (10, 40), (1000, 15)] {
            let input = up_input(k.pid(), &[(0, 8080), (0, 9090)], rules(n));
            // warm-up (creates the bridge, tables, caches)
            cell.up("warm", &input).unwrap();
            cell.down("warm").unwrap();
            let (mut ups, mut downs, mut both) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..iters {
                let h = format!("bench-{n}-{i}");
                let t0 = Instant::now();
                cell.up(&h, &input).unwrap();
                let t1 = Instant::now();
                cell.down(&h).unwrap();
                let t2 = Instant::now();
                ups.push(t1 - t0);
                downs.push(t2 - t1);
                both.push(t2 - t0);
            }
            let (um, up) = stats(ups);
            let (dm, dp) = stats(downs);
            let (bm, bp) = stats(both);
            println!(
                "{:<8} {:>6} {:>5} | {:>12.1} {:>12.1} | {:>12.1} {:>12.1} | {:>14.1} {:>14.1}",
                format!("{plugin:?}"),
                n,
                iters,
                um,
                up,
                dm,
                dp,
                bm,
                bp
            );
        }
    }
}
