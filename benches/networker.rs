//! garden-external-networker latency: `up` and `down` (and both together) of one container, as
//! garden runs them (one process per action, in the cell's network namespace), per CNI plugin
//! variant, with two port mappings and 0 / 10 / 1,000 security-group rules.
//! Run: `cargo bench --bench networker` (as root). Target: up + down, 2 ports + 10 rules,
//! median under 50 ms.

#[path = "../tests/support/mod.rs"]
mod support;
use support::networker_fixture as fixture;

use fixture::*;
use netman::iptables::{Batch, Op, Table};
use netman::networker::names::ChainNames;
use netman::networker::protocol::PortMapping;
use netman::networker::{cni_exec, rules, Config, Networker};
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

/// Per-step medians of the networker's `total ... ms: step ms, ...` lines (`log_level` info).
#[derive(Default)]
struct StepTimes(Vec<(String, Vec<f64>)>);

impl StepTimes {
    fn add(&mut self, stderr: &str, marker: &str) {
        let steps = stderr
            .lines()
            .find(|l| l.contains(marker))
            .and_then(netman::steps::parse)
            .unwrap_or_else(|| panic!("no step line {marker:?} in {stderr}"));
        for (name, v) in steps {
            match self.0.iter_mut().find(|(n, _)| *n == name) {
                Some((_, vs)) => vs.push(v),
                None => self.0.push((name, vec![v])),
            }
        }
    }

    fn line(&self) -> String {
        self.0
            .iter()
            .map(|(n, vs)| {
                let mut vs = vs.clone();
                vs.sort_by(|a, b| a.partial_cmp(b).unwrap());
                format!("{n} {:.1}", vs[vs.len() / 2])
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
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

/// The floor under the same machine load: the CNI chain alone (ADD + DEL, no networker), and
/// the container's rules alone: added with one restore, then removed, in turn, by the three
/// ways there are: one `iptables-restore` deleting exactly what `up` added (`down` until
/// session 7), listing with `iptables-save` then one restore (the fallback), and one nf_tables
/// transaction over nfnetlink (`down` since session 7).
fn baseline(cell: &Cell, k: &Container, iters: usize) {
    let config: Config = serde_json::from_value(cell.config.clone()).unwrap();
    let list = cni_exec::load(&cell.path("cni-config")).unwrap().unwrap();
    let rt = cni_exec::Runtime {
        plugin_dir: cell.path("plugins"),
        container_id: "baseline".into(),
        netns: k.ns.path(),
        ifname: "eth1".into(),
        metadata: Default::default(),
        runtime_config: None,
    };
    let mut cni = Vec::new();
    let mut removal: [Vec<Duration>; 3] = Default::default();
    for i in 0..iters {
        let (l, r) = (list.clone(), rt.clone());
        cni.push(
            netman::netns::run_in(&cell.cell.path(), move || {
                let t = Instant::now();
                let res = l.add(&r).unwrap();
                l.del(&r, Some(&res)).unwrap();
                t.elapsed()
            })
            .unwrap(),
        );
        for (way, took) in removal.iter_mut().enumerate() {
            let c = config.clone();
            took.push(
                netman::netns::run_in(&cell.cell.path(), move || {
                    remove_rules_alone(&c, (way + i) % 3)
                })
                .unwrap(),
            );
        }
    }
    let (cm, cp) = stats(cni);
    println!("baseline: CNI chain ADD+DEL alone: median {cm:.1} ms, p99 {cp:.1} ms");
    // Each vector holds every way in turn; regroup by way.
    let mut by_way: [Vec<Duration>; 3] = Default::default();
    for (slot, took) in removal.iter().enumerate() {
        for (i, d) in took.iter().enumerate() {
            by_way[(slot + i) % 3].push(*d);
        }
    }
    let [exact, listing, netlink] = by_way.map(stats);
    println!(
        "baseline: container rules removal alone (added with one restore, not timed), median / p99: \
         iptables-restore exact {:.1} / {:.1} ms, iptables-save + restore {:.1} / {:.1} ms, \
         nfnetlink {:.1} / {:.1} ms; nfnetlink / exact restore {:.2}",
        exact.0,
        exact.1,
        listing.0,
        listing.1,
        netlink.0,
        netlink.1,
        netlink.0 / exact.0
    );
}

/// Adds the rules of a container with two port mappings, then times their removal by `way`
/// (0: exact restore, 1: listing + restore, 2: nfnetlink).
fn remove_rules_alone(c: &Config, way: usize) -> Duration {
    let n = Networker::new(c.clone());
    let mappings = [
        PortMapping {
            host_port: 61000,
            container_port: 8080,
        },
        PortMapping {
            host_port: 61001,
            container_port: 9090,
        },
    ];
    let ip: std::net::Ipv4Addr = "10.77.0.200".parse().unwrap();
    let plan = rules::UpPlan {
        config: c,
        handle: "baseline",
        ip,
        mappings: &mappings,
        asg: Vec::new(),
        workload: Some("app"),
        agent_egress: false,
    };
    n.iptables.apply(&plan.batch()).unwrap();
    let t = Instant::now();
    match way {
        0 => n.iptables.apply(&exact_removal(c, "baseline", ip)).unwrap(),
        1 => n.remove_rules(&["baseline".to_string()]).unwrap(),
        _ => {
            let removed = n
                .iptables
                .remove_chains_over_netlink(&rules::removal_plan(c, "baseline"))
                .unwrap();
            assert!(removed > 0);
        }
    }
    t.elapsed()
}

/// What `down` restored until session 7: a delete of each jump `up` added, then flush and
/// delete of each chain.
fn exact_removal(c: &Config, handle: &str, ip: std::net::Ipv4Addr) -> Batch {
    let names = ChainNames::for_handle(handle);
    let mut b = Batch::new();
    for (table, parent, jump) in rules::hooks(c, handle, ip, false) {
        b.push(table, Op::Delete(parent, jump));
    }
    for (table, chains) in [
        (Table::Mangle, names.mangle()),
        (Table::Nat, names.nat()),
        (Table::Filter, names.filter()),
    ] {
        for chain in &chains {
            b.push(table, Op::Flush(chain.clone()));
        }
        for chain in chains {
            b.push(table, Op::DeleteChain(chain));
        }
    }
    b
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!(
        "garden-external-networker: one up and one down per iteration (process spawn included)"
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    println!(
        "{:<8} {:>6} {:>5} | {:>12} {:>12} | {:>12} {:>12} | {:>14} {:>14}",
        "plugin",
        "rules",
        "iters",
        "up med ms",
        "up p99 ms",
        "down med ms",
        "down p99 ms",
        "up+down med",
        "up+down p99"
    );
    let mut breakdowns = Vec::new();
    for &plugin in PLUGINS {
        let cell = Cell::with_config(plugin, |c| c["log_level"] = serde_json::json!("info"));
        let k = Container::start();
        // warm-up (creates the bridge)
        let input = up_input(k.pid(), &[], rules(0));
        cell.up("warm", &input).unwrap();
        cell.down("warm").unwrap();
        baseline(&cell, &k, 30);
        for (n, iters) in [(0usize, 40usize), (10, 40), (1000, 15)] {
            let input = up_input(k.pid(), &[(0, 8080), (0, 9090)], rules(n));
            // warm-up (creates the bridge, tables, caches)
            cell.up("warm", &input).unwrap();
            cell.down("warm").unwrap();
            let (mut ups, mut downs, mut both) = (Vec::new(), Vec::new(), Vec::new());
            let (mut up_steps, mut down_steps) = (StepTimes::default(), StepTimes::default());
            for i in 0..iters {
                let h = format!("bench-{n}-{i}");
                let t0 = Instant::now();
                let up = cell.run(&["--action", "up", "--handle", &h], &input.to_string());
                let t1 = Instant::now();
                assert!(up.ok, "up {h}: {}", up.stderr);
                let down = cell.run(&["--action", "down", "--handle", &h], "");
                let t2 = Instant::now();
                assert!(down.ok, "down {h}: {}", down.stderr);
                up_steps.add(&up.stderr, &format!("up {h}: total"));
                down_steps.add(&down.stderr, &format!("down {h}: total"));
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
            breakdowns.push(format!(
                "{plugin:?}, {n} rules:\n  up (medians, ms): {}\n  down (medians, ms; *_in_parallel beside the others): {}",
                up_steps.line(),
                down_steps.line()
            ));
        }
    }
    println!("per-step breakdown, as the networker logs it at info:");
    for b in breakdowns {
        println!("{b}");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}
