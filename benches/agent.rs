//! vxlan-policy-agent figures: plan+apply from scratch and incrementally, new-connection rate
//! with 1 vs 10,001 policies, and convergence from the API call to the first accepted packet.
//! Run as root: `cargo bench --bench agent` (creates and removes its own namespaces).

#[path = "../tests/agent_lab/mod.rs"]
mod lab;

use lab::policy_api::PolicyApi;
use lab::{tcp_connect, tcp_connect_loop, Conn, Lab, TcpServer};
use netman::agent::libnft::LibNft;
use netman::agent::nft::{render_diff, render_full, C2cLogging, Nft, Runner};
use netman::agent::plan::{plan, Diff};
use netman::api::policy::{format_tag, Policy};
use netman::cell::Container as StoreContainer;
use rand::Rng;
use std::time::{Duration, Instant};

const LOG_OFF: C2cLogging = C2cLogging {
    enabled: false,
    group: 2,
    udp_per_sec: 100,
};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// `n` policies onto `dests` local destination apps from `n / dests` remote source apps (one
/// tag each); with `ranges`, every tenth policy is a wide port range (1,000 ports: an
/// interval-set element). One element per policy.
fn synthetic(n: usize, dests: &[String], ranges: bool) -> Vec<Policy> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let src = i / dests.len();
        let dst = &dests[i % dests.len()];
        let (start, end) = if ranges && i % 10 == 0 {
            (20000, 20999)
        } else {
            (8000 + (i % 7) as i64, 8000 + (i % 7) as i64)
        };
        let mut p = Policy::new(&format!("src-{src}"), dst, "tcp", start, end);
        p.source.tag = Some(format_tag(src as u32 + 10, 2));
        p.destination.tag = Some("0001".into());
        out.push(p);
    }
    out
}

fn local_containers(count: usize) -> Vec<StoreContainer> {
    (0..count)
        .map(|i| {
            StoreContainer::for_app(
                &format!("h{i}"),
                std::net::Ipv4Addr::new(10, 255, 1, 2 + i as u8),
                &format!("dst-{i}"),
            )
        })
        .collect()
}

fn plan_and_apply() {
    println!("== plan + apply on one cell (100 local destination containers; 1 in 10 policies a 1,000-port range)");
    let lab = Lab::new(1);
    let path = lab.cells[0].ns.path();
    let containers = local_containers(100);
    let dests: Vec<String> = containers
        .iter()
        .filter_map(|c| c.app().map(str::to_string))
        .collect();
    for (n, backend) in [
        (1_000usize, "libnftables"),
        (10_000, "libnftables"),
        (50_000, "libnftables"),
        (10_000, "nft -f -"),
    ] {
        let policies = synthetic(n, &dests, true);
        let (containers, dests) = (containers.clone(), dests.clone());
        let line = netman::netns::run_in(&path, move || {
            let nft: Box<dyn Runner> = match backend {
                "nft -f -" => Box::new(Nft::new("nft")),
                _ => Box::new(LibNft::open().unwrap()),
            };
            let (mut full, mut plan_t, mut apply_t) = (Vec::new(), Vec::new(), Vec::new());
            let mut installed = None;
            for _ in 0..5 {
                let t0 = Instant::now();
                let (p, _) = plan(&containers, &policies);
                let script = render_full(&p, &LOG_OFF);
                let t1 = Instant::now();
                nft.run(&script).unwrap();
                let t2 = Instant::now();
                full.push(t2 - t0);
                plan_t.push(t1 - t0);
                apply_t.push(t2 - t1);
                installed = Some(p);
            }
            let base = installed.unwrap();
            let elements = base.element_count();
            // One added and one removed policy on top (single port, and a port range).
            let mut add = Vec::new();
            let mut remove = Vec::new();
            let mut remove_range = Vec::new();
            for (k, dest) in dests.iter().enumerate().take(10) {
                let mut extra = Policy::new("src-new", dest, "tcp", 7000, 7000);
                extra.source.tag = Some("FFF0".into());
                let mut more = policies.clone();
                more.push(extra);
                let t0 = Instant::now();
                let (p1, _) = plan(&containers, &more);
                nft.run(&render_diff(&Diff::between(&base, &p1)).unwrap()).unwrap();
                add.push(t0.elapsed());
                let t0 = Instant::now();
                let (p0, _) = plan(&containers, &policies);
                nft.run(&render_diff(&Diff::between(&p1, &p0)).unwrap()).unwrap();
                remove.push(t0.elapsed());
                // Remove an existing range policy and put it back.
                let mut fewer = policies.clone();
                fewer.remove(k * 10);
                let t0 = Instant::now();
                let (p2, _) = plan(&containers, &fewer);
                nft.run(&render_diff(&Diff::between(&p0, &p2)).unwrap()).unwrap();
                remove_range.push(t0.elapsed());
                nft.run(&render_diff(&Diff::between(&p2, &p0)).unwrap()).unwrap();
            }
            format!(
                "[{backend}] {n:>6} policies ({elements} elements): from scratch {:.1} ms (plan+render {:.1}, nft {:.1}); \
                 +1 policy {:.1} ms; -1 policy {:.1} ms; -1 range policy {:.1} ms",
                ms(median(full)),
                ms(median(plan_t)),
                ms(median(apply_t)),
                ms(median(add)),
                ms(median(remove)),
                ms(median(remove_range)),
            )
        })
        .unwrap();
        println!("{line}");
    }
}

fn install(lab: &Lab, cell: usize, policies: &[Policy]) {
    let containers: Vec<StoreContainer> = lab.cells[cell]
        .containers
        .iter()
        .map(|c| StoreContainer::for_app(&c.handle, c.ip, &c.app))
        .collect();
    let (p, _) = plan(&containers, policies);
    lab.cells[cell]
        .nft_script(&render_full(&p, &LOG_OFF))
        .unwrap();
}

fn connection_rate() {
    println!("== new TCP connections/s from a to b (sequential connect+close; medians of 7 interleaved rounds of 1,500)");
    let mut lab = Lab::new(2);
    lab.cell(1).add_container("a", "app-A");
    lab.cell(1).add_container("b2", "app-B");
    lab.cell(2).add_container("b", "app-B");
    for c in ["a", "b", "b2"] {
        let ns = &lab.container(c).ns;
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1").unwrap();
        ns.sysctl("net.ipv4.ip_local_port_range", "10000 65000")
            .unwrap();
    }
    let _s = [
        TcpServer::start(lab.container("b"), 8080),
        TcpServer::start(lab.container("b2"), 8080),
    ];
    let mut allow = Policy::new("app-A", "app-B", "tcp", 8080, 8080);
    allow.source.tag = Some("0001".into());
    let dests: Vec<String> = vec!["app-B".into()];
    // One sample: 1,500 sequential connects.
    let rate = |lab: &Lab, target: &str| -> f64 {
        let (a, t) = (lab.container("a"), lab.container(target));
        assert_eq!(tcp_connect(a, t.ip, 8080), Conn::Ok);
        let (ok, took) = tcp_connect_loop(a, t.ip, 8080, 1500);
        assert_eq!(ok, 1500);
        ok as f64 / took.as_secs_f64()
    };
    let mut wide_allow = allow.clone();
    wide_allow.destination.ports = netman::api::policy::Ports {
        start: 8000,
        end: 8999,
    };
    let wide = |n: usize| -> Vec<Policy> {
        synthetic(n, &dests, false)
            .into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                let s = 30000 + (i % 100) as i64 * 300;
                p.destination.ports.start = s;
                p.destination.ports.end = s + 100;
                p
            })
            .collect()
    };
    let with = |mut v: Vec<Policy>, p: &Policy| {
        v.push(p.clone());
        v
    };
    let variants: Vec<(&str, Vec<Policy>)> = vec![
        ("1 policy (A->B tcp 8080)", vec![allow.clone()]),
        (
            "10,001 policies, all single ports",
            with(synthetic(10_000, &dests, false), &allow),
        ),
        (
            "10,001: 9,001 single ports + 1,000 wide ranges",
            with(synthetic(10_000, &dests, true), &allow),
        ),
        (
            "10,001: 10,000 wide ranges + A->B single port",
            with(wide(10_000), &allow),
        ),
        (
            "1 policy (A->B tcp 8000-8999, interval set)",
            vec![wide_allow.clone()],
        ),
        (
            "10,001: 10,000 wide ranges + A->B 8000-8999",
            with(wide(10_000), &wide_allow),
        ),
    ];
    // The machine is shared: variants are interleaved round by round, and each ratio is taken
    // against its baseline measured in the same round; medians over the rounds.
    const ROUNDS: usize = 7;
    let mut samples = vec![(Vec::new(), Vec::new()); variants.len()];
    for _ in 0..ROUNDS {
        for (i, (_, policies)) in variants.iter().enumerate() {
            install(&lab, 0, policies);
            install(&lab, 1, policies);
            samples[i].0.push(rate(&lab, "b2"));
            samples[i].1.push(rate(&lab, "b"));
        }
    }
    let med = |v: &[f64]| -> f64 {
        let mut v = v.to_vec();
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    };
    for (i, (name, _)) in variants.iter().enumerate() {
        let base = if i >= 4 { 4 } else { 0 };
        let ratio = |k: usize| -> f64 {
            let r: Vec<f64> = (0..ROUNDS)
                .map(|r| {
                    let (s, b) = (&samples[i], &samples[base]);
                    if k == 0 {
                        s.0[r] / b.0[r]
                    } else {
                        s.1[r] / b.1[r]
                    }
                })
                .collect();
            med(&r)
        };
        println!(
            "{name:<50} same cell {:>6.0}/s (ratio {:.2}), cross cell {:>6.0}/s (ratio {:.2})",
            med(&samples[i].0),
            ratio(0),
            med(&samples[i].1),
            ratio(1)
        );
    }
}

fn convergence() {
    println!("== convergence: policy created -> first accepted connection (defaults: poll 1 s), 100 policies");
    let api = PolicyApi::start();
    let mut lab = Lab::new(2);
    lab.cell(1).add_container("a", "app-A");
    lab.cell(2).add_container("b", "app-B");
    for i in 1..=2 {
        let cell = lab.cell(i);
        cell.relay_to(api.internal_addr());
        cell.start_agent(&api.certs, |_| {});
    }
    for cell in &lab.cells {
        cell.wait_agent_up();
    }
    let (a, b) = (lab.container("a"), lab.container("b"));
    let n: u16 = std::env::var("VPA_BENCH_POLICIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let ports: Vec<u16> = (0..n).map(|i| 10000 + i).collect();
    let _servers: Vec<TcpServer> = ports.iter().map(|p| TcpServer::start(b, *p)).collect();
    let mut rng = rand::thread_rng();
    let mut lat = Vec::new();
    for p in &ports {
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1000)));
        assert_eq!(tcp_connect(a, b.ip, *p), Conn::Refused);
        let t0 = Instant::now();
        api.allow(&[("app-A", "app-B", "tcp", *p as i64, *p as i64)]);
        loop {
            let ta = Instant::now();
            let r = tcp_connect(a, b.ip, *p);
            if std::env::var("VPA_BENCH_DEBUG").is_ok() && ta.elapsed() > Duration::from_millis(50)
            {
                println!(
                    "slow attempt {:?} {r:?} at {:?}",
                    ta.elapsed(),
                    t0.elapsed()
                );
            }
            if r == Conn::Ok {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no convergence");
            std::thread::sleep(Duration::from_millis(5));
        }
        lat.push(t0.elapsed());
        if std::env::var("VPA_BENCH_DEBUG").is_ok() {
            println!("{:?} {:?}", std::time::SystemTime::now(), t0.elapsed());
        }
    }
    if std::env::var("VPA_BENCH_DEBUG").is_ok() {
        println!("{}", lab.cells[1].agent_log());
    }
    println!(
        "median {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 1.0))
    );
    // Idle cost: requests per second each agent sends while nothing changes.
    let count = |cell: &lab::Cell| -> f64 {
        let (_, m) = cell.local_http("GET", 8721, "/metrics", "").unwrap();
        m.lines()
            .filter(|l| {
                l.starts_with("vpa_poll_duration_seconds_count") && !l.contains("op=\"cycle\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before: Vec<f64> = lab.cells.iter().map(count).collect();
    std::thread::sleep(Duration::from_secs(10));
    let after: Vec<f64> = lab.cells.iter().map(count).collect();
    for (i, (b0, a0)) in before.iter().zip(after.iter()).enumerate() {
        println!(
            "idle: cell {} sent {:.2} requests/s to the policy server",
            i + 1,
            (a0 - b0) / 10.0
        );
    }
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    if run("apply") {
        plan_and_apply();
    }
    if run("rate") {
        connection_rate();
    }
    if run("convergence") {
        convergence();
    }
}
