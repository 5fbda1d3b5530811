//! vxlan-policy-agent figures: plan+apply from scratch and incrementally, new-connection rate
//! with 1 vs 10,001 policies, and convergence from the API call to the first accepted packet.
//! Run as root: `cargo bench --bench agent` (creates and removes its own namespaces).

#[path = "../tests/support/mod.rs"]
mod support;
use support::agent_lab as lab;

use lab::policy_api::PolicyApi;
use lab::{tcp_connect, Conn, Lab, TcpServer};
use netman::agent::libnft::LibNft;
use netman::agent::nft::{render_diff, render_full, C2cLogging, Nft, Runner};
use netman::agent::plan::{plan, Diff};
use netman::api::policy::{format_tag, Policy};
use netman::cell::Container as StoreContainer;
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::path::Path;
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

/// Source ports for one (client, server address, server port): each connection of a run takes
/// the next, so no 4-tuple is used twice and no SYN meets the TIME_WAIT entry of an earlier
/// connection in a cell's conntrack or a container's socket table (which, with the kernel's own
/// port choice wrapping the range, cost a 1 s SYN retransmit each and made the figures show that
/// instead of the dataplane).
struct SourcePorts {
    next: u32,
}

impl SourcePorts {
    const FIRST: u32 = 1024;

    fn new() -> SourcePorts {
        SourcePorts { next: Self::FIRST }
    }

    fn capacity() -> usize {
        (65536 - Self::FIRST) as usize
    }

    fn take(&mut self, n: usize) -> u16 {
        let first = self.next;
        self.next += n as u32;
        assert!(
            self.next <= 65536,
            "out of unused source ports: lower the connections per sample"
        );
        first as u16
    }
}

/// `n` sequential connect+close from the calling thread's namespace, source ports `first..`;
/// (successes, elapsed).
fn connect_from_ports(to: SocketAddrV4, first: u16, n: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut ok = 0;
    for i in 0..n {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        // The same port towards the other server may still be in TIME_WAIT here.
        setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
        setsockopt(&fd, sockopt::SendTimeout, &TimeVal::new(2, 0)).unwrap();
        let local = SockaddrIn::from(SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            first + i as u16,
        ));
        bind(fd.as_raw_fd(), &local).expect("bind source port");
        if connect(fd.as_raw_fd(), &SockaddrIn::from(to)).is_ok() {
            ok += 1;
        }
    }
    (ok, started.elapsed())
}

/// TCP counters of one namespace that move when a connection does not go at wire speed.
#[derive(Debug, Clone, Copy, Default)]
struct Retransmits {
    /// `Tcp: RetransSegs` (SYN and SYN-ACK retransmits included).
    segments: u64,
    /// `TcpExt: TCPTimeouts`.
    timeouts: u64,
    /// `TcpExt: TCPSynRetrans` (SYN and SYN-ACK retransmits).
    syn: u64,
}

impl Retransmits {
    fn of(ns: &Path) -> Retransmits {
        netman::netns::run_in(ns, || {
            // thread-self: /proc/self/net would show the main thread's namespace.
            let counter = |file: &str, group: &str, name: &str| -> u64 {
                let text =
                    std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap();
                let mut rows = text
                    .lines()
                    .filter(|l| l.starts_with(&format!("{group}: ")));
                let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
                let i = names.split_whitespace().position(|n| n == name).unwrap();
                values.split_whitespace().nth(i).unwrap().parse().unwrap()
            };
            Retransmits {
                segments: counter("snmp", "Tcp", "RetransSegs"),
                timeouts: counter("netstat", "TcpExt", "TCPTimeouts"),
                syn: counter("netstat", "TcpExt", "TCPSynRetrans"),
            }
        })
        .unwrap()
    }

    fn since(self, before: Retransmits) -> Retransmits {
        Retransmits {
            segments: self.segments - before.segments,
            timeouts: self.timeouts - before.timeouts,
            syn: self.syn - before.syn,
        }
    }

    fn add(self, other: Retransmits) -> Retransmits {
        Retransmits {
            segments: self.segments + other.segments,
            timeouts: self.timeouts + other.timeouts,
            syn: self.syn + other.syn,
        }
    }

    fn any(&self) -> bool {
        self.segments + self.timeouts > 0
    }
}

/// One sample: connections/s, and the retransmits in client and server while it ran.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rate: f64,
    retransmits: Retransmits,
}

const PER_SAMPLE: usize = 1500;
const ROUNDS: usize = 11;
/// Client containers of app A: each has its own source ports, so more samples fit in a run.
const CLIENTS: [&str; 2] = ["a", "a2"];

fn connection_rate() {
    let started = Instant::now();
    println!(
        "== new TCP connections/s from a to b (sequential connect+close, {PER_SAMPLE} per sample, every 4-tuple new; \
         medians of {ROUNDS} interleaved rounds over the samples without retransmits)"
    );
    let mut lab = Lab::new(2);
    for client in CLIENTS {
        lab.cell(1).add_container(client, "app-A");
    }
    lab.cell(1).add_container("b2", "app-B");
    lab.cell(2).add_container("b", "app-B");
    let _s = [
        TcpServer::start(lab.container("b"), 8080),
        TcpServer::start(lab.container("b2"), 8080),
    ];
    let mut allow = Policy::new("app-A", "app-B", "tcp", 8080, 8080);
    allow.source.tag = Some("0001".into());
    let dests: Vec<String> = vec!["app-B".into()];
    // Per (client, target).
    let mut ports: Vec<[SourcePorts; 2]> = CLIENTS
        .iter()
        .map(|_| [SourcePorts::new(), SourcePorts::new()])
        .collect();
    // One sample: one warm-up connect, then PER_SAMPLE sequential connects, from the client with
    // the most unused source ports towards the target.
    let mut sample = |lab: &Lab, target: usize| -> Sample {
        let client = (0..CLIENTS.len())
            .min_by_key(|c| ports[*c][target].next)
            .unwrap();
        let (a, t) = (
            lab.container(CLIENTS[client]),
            lab.container(["b2", "b"][target]),
        );
        let to = SocketAddrV4::new(t.ip, 8080);
        let first = ports[client][target].take(PER_SAMPLE + 1);
        let before = [Retransmits::of(&a.ns.path()), Retransmits::of(&t.ns.path())];
        let (ok, took) = netman::netns::run_in(&a.ns.path(), move || {
            assert_eq!(connect_from_ports(to, first, 1).0, 1, "warm-up connect");
            connect_from_ports(to, first + 1, PER_SAMPLE)
        })
        .unwrap();
        assert_eq!(ok, PER_SAMPLE);
        let retransmits = Retransmits::of(&a.ns.path())
            .since(before[0])
            .add(Retransmits::of(&t.ns.path()).since(before[1]));
        Sample {
            rate: ok as f64 / took.as_secs_f64(),
            retransmits,
        }
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
            "1 policy (A->B tcp 8000-8999, a wide range)",
            vec![wide_allow.clone()],
        ),
        (
            "10,001: 10,000 wide ranges + A->B 8000-8999",
            with(wide(10_000), &wide_allow),
        ),
    ];
    assert!(
        variants.len() * ROUNDS * (PER_SAMPLE + 1) <= CLIENTS.len() * SourcePorts::capacity(),
        "more connections per target than source ports"
    );
    // The machine is shared: variants are interleaved round by round, and each ratio is taken
    // against its baseline measured in the same round; medians over the rounds.
    let mut samples: Vec<[Vec<Sample>; 2]> = vec![[Vec::new(), Vec::new()]; variants.len()];
    for _ in 0..ROUNDS {
        for ((_, policies), of_variant) in variants.iter().zip(samples.iter_mut()) {
            install(&lab, 0, policies);
            install(&lab, 1, policies);
            for (target, of_target) in of_variant.iter_mut().enumerate() {
                of_target.push(sample(&lab, target));
            }
        }
    }
    let med = |mut v: Vec<f64>| -> Option<f64> {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v.get(v.len() / 2).copied()
    };
    let show = |v: Option<f64>, decimals: usize| match v {
        Some(x) => format!("{x:.decimals$}"),
        None => "n/a".to_string(),
    };
    for (i, (name, _)) in variants.iter().enumerate() {
        let base = if i >= 4 { 4 } else { 0 };
        let mut cols = Vec::new();
        for (target, label) in ["same cell", "cross cell"].iter().enumerate() {
            let (mine, theirs) = (&samples[i][target], &samples[base][target]);
            let clean: Vec<f64> = mine
                .iter()
                .filter(|s| !s.retransmits.any())
                .map(|s| s.rate)
                .collect();
            let kept = clean.len();
            let ratios: Vec<f64> = mine
                .iter()
                .zip(theirs)
                .filter(|(s, b)| !s.retransmits.any() && !b.retransmits.any())
                .map(|(s, b)| s.rate / b.rate)
                .collect();
            let spread = match (
                ratios.iter().cloned().reduce(f64::min),
                ratios.iter().cloned().reduce(f64::max),
            ) {
                (Some(lo), Some(hi)) => format!("{lo:.2}-{hi:.2}"),
                _ => "n/a".into(),
            };
            let lost = mine
                .iter()
                .fold(Retransmits::default(), |t, s| t.add(s.retransmits));
            cols.push(format!(
                "{label} {:>6}/s ratio {} [{spread}] ({kept}/{ROUNDS} clean; retransmits {} (SYN {}), timeouts {})",
                show(med(clean), 0),
                show(med(ratios), 2),
                lost.segments,
                lost.syn,
                lost.timeouts,
            ));
        }
        println!("{name:<48} {}", cols.join("; "));
    }
    println!(
        "(rate section took {:.0} s)",
        started.elapsed().as_secs_f64()
    );
}

fn convergence() {
    println!("== convergence: policy created -> first accepted connection (agent defaults: the watch; polls every 1 s only without it), 100 policies");
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
    // Idle cost: requests each agent sends to the policy server while nothing changes. Only the
    // ops that are requests count (the `cycle` op is local work around them), by op and outcome.
    let requests = |cell: &lab::Cell| -> BTreeMap<String, f64> {
        let (_, m) = cell.local_http("GET", 8721, "/metrics", "").unwrap();
        m.lines()
            .filter(|l| l.starts_with("vpa_poll_duration_seconds_count{"))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let label = |name: &str| {
                    series
                        .split(&format!("{name}=\""))
                        .nth(1)?
                        .split('"')
                        .next()
                        .map(str::to_string)
                };
                let op = label("op")?;
                if !["last_updated", "watch", "policies"].contains(&op.as_str()) {
                    return None;
                }
                Some((format!("{op}/{}", label("outcome")?), value.parse().ok()?))
            })
            .collect()
    };
    let idle = Duration::from_secs(30);
    let before: Vec<_> = lab.cells.iter().map(requests).collect();
    std::thread::sleep(idle);
    let after: Vec<_> = lab.cells.iter().map(requests).collect();
    for (i, (b0, a0)) in before.iter().zip(after.iter()).enumerate() {
        let by_op: Vec<String> = a0
            .iter()
            .map(|(k, v)| (k, v - b0.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d > 0.0)
            .map(|(k, d)| format!("{k} {d}"))
            .collect();
        let total: f64 = a0.values().sum::<f64>() - b0.values().sum::<f64>();
        println!(
            "idle: cell {} sent {:.2} requests/s to the policy server ({total} in {} s: {})",
            i + 1,
            total / idle.as_secs_f64(),
            idle.as_secs(),
            if by_op.is_empty() {
                "none".to_string()
            } else {
                by_op.join(", ")
            }
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
