//! One cell's DNS resolver: queries answered per second for internal names, against a trivial
//! UDP echo server driven by the same load generator in the same run (the ratio is what carries
//! across machines and load), and the resolver's memory with 10,000 routes and 50,000 instances.
//! Also: time to build and swap such a table, and to save and restore its snapshot.
//! Then service discovery end to end ([`propagation`]): from a container's `up` on one cell to its
//! name resolving on another cell, and from its `down` to the name no longer resolving, through the
//! real policy server (the registry) and real `netman-dns` daemons in network namespaces.
//! Run (as root, it makes network namespaces): `cargo bench --bench dns`
//! (`NETMAN_DNS_BENCH_SKIP=qps` or `=propagation` leaves a part out).
//! Targets: at least 20,000 queries/s on the 2-core machine; up and down under 1 s (p99).

#[path = "../tests/support/mod.rs"]
mod support;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use netman::dns::table::{Instance, InternalRoute, InternalRoutes};
use netman::dns::{server, snapshot, DnsMetrics, Forwarder, Resolver, ServerConfig};
use netman::dns::{SharedTable, Table};
use netman::lab::netns::NamedNetns;
use netman::netns::run_in;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUTES: usize = 10_000;
const INSTANCES_PER_ROUTE: usize = 5;
const CLIENTS: usize = 2;
/// Queries each client keeps in flight.
const WINDOW: usize = 16;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn routes() -> InternalRoutes {
    let routes = (0..ROUTES)
        .map(|r| {
            let app = uuid::Uuid::new_v4().to_string();
            InternalRoute {
                name: format!("app-{r}.apps.internal"),
                instances: (0..INSTANCES_PER_ROUTE)
                    .map(|i| Instance {
                        app_guid: app.clone(),
                        index: i as u32,
                        ip: Ipv4Addr::from(0x0a00_0000 + (r * INSTANCES_PER_ROUTE + i) as u32),
                    })
                    .collect(),
            }
        })
        .collect();
    InternalRoutes {
        domains: vec!["apps.internal".into()],
        routes,
    }
}

/// Queries for random internal names: 80% whole routes, 10% one instance, 10% unknown names.
fn queries() -> Vec<Vec<u8>> {
    (0..4096)
        .map(|i| {
            let r = rand::random::<u32>() as usize % ROUTES;
            let name = match i % 10 {
                0 => format!("{}.app-{r}.apps.internal.", r % INSTANCES_PER_ROUTE),
                1 => format!("missing-{r}.apps.internal."),
                _ => format!("app-{r}.apps.internal."),
            };
            let mut m = Message::query();
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(
                Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
            m.to_vec().unwrap()
        })
        .collect()
}

/// Replies per second: `CLIENTS` threads, each keeping `WINDOW` queries in flight (a window
/// lost to a drop is sent again after 50 ms).
fn drive(sockets: &[UdpSocket], server: SocketAddr, queries: &Arc<Vec<Vec<u8>>>) -> f64 {
    let started = Instant::now();
    let deadline = started + ROUND;
    let answered: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let queries = Arc::clone(queries);
                scope.spawn(move || {
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let mut next = c * 997;
                    let mut send = |s: &UdpSocket| {
                        next = (next + 1) % queries.len();
                        s.send_to(&queries[next], server).unwrap();
                    };
                    let mut buf = [0u8; 1500];
                    let mut answered = 0u64;
                    for _ in 0..WINDOW {
                        send(s);
                    }
                    while Instant::now() < deadline {
                        match s.recv_from(&mut buf) {
                            Ok((n, _)) => {
                                assert!(n >= 12 && buf[2] & 0x80 != 0, "a response");
                                answered += 1;
                                send(s);
                            }
                            Err(_) => {
                                for _ in 0..WINDOW {
                                    send(s);
                                }
                            }
                        }
                    }
                    answered
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    answered as f64 / started.elapsed().as_secs_f64()
}

/// The floor: `workers` threads on one UDP socket sending every datagram back.
fn start_echo(workers: usize) -> (SocketAddr, Arc<AtomicBool>) {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..workers {
        let (socket, stop) = (Arc::clone(&socket), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4097];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    // Sent back as a response (QR set), as the load generator checks.
                    if n > 2 {
                        buf[2] |= 0x80;
                    }
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        });
    }
    (addr, stop)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let skip = std::env::var("NETMAN_DNS_BENCH_SKIP").unwrap_or_default();
    if !skip.contains("qps") {
        qps_and_memory();
    }
    if !skip.contains("propagation") {
        propagation();
    }
}

fn qps_and_memory() {
    println!(
        "dns bench: load average before {}",
        support::machine::loadavg()
    );
    let ns = NamedNetns::create(&format!("nmdnsbench{}", std::process::id())).unwrap();
    let config = ServerConfig::default();

    // Memory and table handling with 10,000 routes and 50,000 instances.
    let doc = routes();
    let rss_before = rss_kib();
    let t = Instant::now();
    let table = Table::new(&doc).unwrap();
    let build = t.elapsed();
    let rss_table = rss_kib();
    drop(doc);
    let shared = Arc::new(SharedTable::new(table));
    let t = Instant::now();
    shared.replace(&shared.load().to_routes()).unwrap();
    let swap = t.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dns-table");
    let t = Instant::now();
    snapshot::save_table(&path, &shared.load()).unwrap();
    let save = t.elapsed();
    let t = Instant::now();
    let restored = snapshot::restore(&path).unwrap().expect("saved");
    let restore = t.elapsed();
    assert_eq!(restored.instance_count(), ROUTES * INSTANCES_PER_ROUTE);
    drop(restored);
    let snapshot_kib = std::fs::metadata(&path).unwrap().len() / 1024;

    let metrics = DnsMetrics::default();
    let (s, m, c) = (Arc::clone(&shared), metrics.clone(), config.clone());
    let (resolver, echo, sockets) = run_in(&ns.path(), move || {
        // Nothing is forwarded in this benchmark; the upstream is never asked.
        let forwarder = Forwarder::new(
            vec!["127.0.0.1:9".parse().unwrap()],
            Duration::from_secs(1),
            m.clone(),
        )
        .unwrap();
        let (udp, tcp) = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let resolver =
            server::start(udp, tcp, Arc::new(Resolver::new(s, forwarder)), &c, m).unwrap();
        let echo = start_echo(c.udp_workers);
        let sockets: Vec<UdpSocket> = (0..CLIENTS)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        (resolver, echo, sockets)
    })
    .unwrap();
    let queries = Arc::new(queries());

    let (mut dns_qps, mut echo_qps) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        echo_qps.push(drive(&sockets, echo.0, &queries));
        dns_qps.push(drive(&sockets, resolver.udp_addr(), &queries));
    }
    let rss_served = rss_kib();
    echo.1.store(true, Ordering::SeqCst);
    resolver.stop();
    drop(ns);

    let (dns, base) = (median(dns_qps.clone()), median(echo_qps.clone()));
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|q| format!("{q:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "dns bench: {CLIENTS} clients x {WINDOW} in flight, {} UDP workers, {ROUNDS} rounds of {} s",
        config.udp_workers,
        ROUND.as_secs()
    );
    println!(
        "  resolver, internal names: {dns:>8.0} queries/s (rounds: {})",
        fmt(&dns_qps)
    );
    println!(
        "  UDP echo baseline:        {base:>8.0} datagrams/s (rounds: {})",
        fmt(&echo_qps)
    );
    println!("  ratio resolver / echo:    {:.2}", dns / base);
    println!(
        "  memory, {ROUTES} routes / {} instances: table +{} KiB (RSS {} -> {} KiB), RSS after serving {} KiB",
        ROUTES * INSTANCES_PER_ROUTE,
        rss_table.saturating_sub(rss_before),
        rss_before,
        rss_table,
        rss_served
    );
    println!(
        "  table build {:.1} ms, swap (rebuild from its own dump) {:.1} ms, snapshot {} KiB: save {:.1} ms, restore {:.1} ms",
        build.as_secs_f64() * 1e3,
        swap.as_secs_f64() * 1e3,
        snapshot_kib,
        save.as_secs_f64() * 1e3,
        restore.as_secs_f64() * 1e3
    );
    println!(
        "  answered by the resolver: {} NOERROR, {} NXDOMAIN",
        metrics.queries(
            netman::dns::Transport::Udp,
            netman::dns::metrics::Kind::Internal,
            "NOERROR"
        ),
        metrics.queries(
            netman::dns::Transport::Udp,
            netman::dns::metrics::Kind::Internal,
            "NXDOMAIN"
        )
    );
    println!(
        "dns bench: load average after {}",
        support::machine::loadavg()
    );
}

/// Samples of each of up and down.
const SAMPLES: usize = 60;
/// Other routes and instances in the table while samples run (so each change moves a table of
/// realistic size through the watch).
const BACKGROUND_ROUTES: usize = 1_000;
const BACKGROUND_INSTANCES: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Polls `name` from `ns` until `done` holds for the answer; the time from `since`.
fn until(
    ns: &std::path::Path,
    name: &str,
    since: Instant,
    done: impl Fn(&support::sd::Answer) -> bool,
) -> Duration {
    let deadline = since + Duration::from_secs(30);
    loop {
        let answer = support::sd::lookup(ns, name);
        if done(&answer) {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no change within 30 s ({answer:?})"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// From a container's `up` on cell 2 (the moment the networker records it in the cell's store,
/// its last step) to `<index>.prop.apps.internal` resolving to it in a container on cell 1, and
/// from its `down` to NXDOMAIN there.
fn propagation() {
    use hickory_proto::op::ResponseCode;
    use support::sd::{container, Cell, Registry};
    println!(
        "sd propagation bench: load average before {}",
        support::machine::loadavg()
    );
    let registry = Registry::start(30);
    let cell1 = Cell::start(&registry, 1, 10);
    let cell2 = Cell::start(&registry, 2, 10);
    let asker = cell1.up("asker-guid", 0);
    let routes: Vec<serde_json::Value> = (0..BACKGROUND_ROUTES)
        .map(|r| serde_json::json!({"app_guid": format!("bg-{r}"), "host": format!("bg-{r}"), "domain": "apps.internal"}))
        .chain(std::iter::once(serde_json::json!({"app_guid": "prop-guid", "host": "prop", "domain": "apps.internal"})))
        .collect();
    for chunk in routes.chunks(1000) {
        let (status, body) = registry.post(
            "/networking/v1/external/internal_routes",
            &serde_json::json!({ "routes": chunk }).to_string(),
        );
        assert_eq!(status, 200, "{body}");
    }
    for i in 0..BACKGROUND_INSTANCES {
        let ip = Ipv4Addr::from(0x0a_64_00_00 + i as u32);
        let r = i % BACKGROUND_ROUTES;
        cell2
            .store
            .add(container(
                &format!("bg-{i}"),
                ip,
                &format!("bg-{r}"),
                (i / BACKGROUND_ROUTES) as u32,
            ))
            .unwrap();
    }
    let here = asker.path();
    let last_bg = format!("1.bg-{}.apps.internal", BACKGROUND_ROUTES - 1);
    until(
        &here,
        &last_bg,
        Instant::now(),
        |a| matches!(a, Ok((ResponseCode::NoError, ips)) if !ips.is_empty()),
    );

    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        let ip = Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250) as u8 + 2);
        let handle = format!("prop-{i}");
        let name = format!("{i}.prop.apps.internal");
        let t = Instant::now();
        cell2
            .store
            .add(container(&handle, ip, "prop-guid", i as u32))
            .unwrap();
        ups.push(until(
            &here,
            &name,
            t,
            |a| matches!(a, Ok((ResponseCode::NoError, ips)) if ips == &vec![ip]),
        ));
        let t = Instant::now();
        cell2.store.delete(&handle).unwrap();
        downs.push(until(&here, &name, t, |a| {
            matches!(a, Ok((ResponseCode::NXDomain, _)))
        }));
    }
    ups.sort();
    downs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "sd propagation bench: {SAMPLES} samples each, table of {} routes / {} instances, across cells",
        BACKGROUND_ROUTES + 1,
        BACKGROUND_INSTANCES
    );
    for (what, v) in [("up -> resolves", &ups), ("down -> NXDOMAIN", &downs)] {
        println!(
            "  {what:<18} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap())
        );
    }
    println!(
        "sd propagation bench: load average after {}",
        support::machine::loadavg()
    );
}
