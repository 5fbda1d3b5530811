//! The per-cell DNS resolver in network namespaces: a client namespace asks a resolver listening
//! on 169.254.0.2:53 in a "cell" namespace, which forwards other names to test upstreams in a
//! third namespace. Needs root.

mod support;
use support::dns;

use dns::{a_records, ask_tcp, ask_udp, ask_udp_edns, send_udp, Mode, Upstream};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use netman::dns::metrics::{Failure, ForwardOutcome, Kind};
use netman::dns::query::{Decision, Forward, Reply};
use netman::dns::table::{Instance, InternalRoute, InternalRoutes};
use netman::dns::{server, snapshot, DnsMetrics, Forwarder, Handler, Resolver, Running};
use netman::dns::{ServerConfig, SharedTable, Table, Transport};
use netman::lab::netns::NamedNetns;
use netman::netns::run_in;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESOLVER: &str = "169.254.0.2:53";
/// Upstream addresses in the upstream namespace.
const UPSTREAM_IPS: [&str; 3] = ["169.254.20.2", "169.254.20.3", "169.254.20.4"];

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn resolver_addr() -> SocketAddr {
    RESOLVER.parse().unwrap()
}

fn upstream_addr(i: usize) -> SocketAddr {
    format!("{}:53", UPSTREAM_IPS[i]).parse().unwrap()
}

/// client --veth-- cell (resolver on 169.254.0.2) --veth-- upstreams. Removed on drop.
struct Net {
    client: NamedNetns,
    cell: NamedNetns,
    upstream: NamedNetns,
}

impl Net {
    fn new() -> Net {
        let tag = format!(
            "nmdns{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let client = NamedNetns::create(&format!("{tag}c")).unwrap();
        let cell = NamedNetns::create(&format!("{tag}r")).unwrap();
        let upstream = NamedNetns::create(&format!("{tag}u")).unwrap();
        let ip = |ns: &NamedNetns, args: &str| {
            let args: Vec<&str> = args.split_whitespace().collect();
            let mut full = vec!["ip"];
            full.extend(args);
            ns.exec(&full).unwrap();
        };
        ip(
            &cell,
            &format!("link add c0 netns {} type veth peer name r0", client.name),
        );
        ip(
            &cell,
            &format!("link add u0 netns {} type veth peer name r1", upstream.name),
        );
        ip(&client, "addr add 169.254.10.2/24 dev c0");
        ip(&client, "link set c0 up");
        ip(&client, "route add default via 169.254.10.1");
        ip(&cell, "addr add 169.254.10.1/24 dev r0");
        ip(&cell, "addr add 169.254.20.1/24 dev r1");
        // The resolver's address, as on a cell (no dummy device here: the module may be absent).
        ip(&cell, "addr add 169.254.0.2/32 dev lo");
        for dev in ["r0", "r1"] {
            ip(&cell, &format!("link set {dev} up"));
        }
        for a in UPSTREAM_IPS {
            ip(&upstream, &format!("addr add {a}/24 dev u0"));
        }
        ip(&upstream, "link set u0 up");
        ip(&upstream, "route add default via 169.254.20.1");
        Net {
            client,
            cell,
            upstream,
        }
    }

    /// Starts test upstreams in the upstream namespace, one per mode, on UPSTREAM_IPS in order.
    fn upstreams(&self, modes: &[Mode]) -> Vec<Upstream> {
        let modes = modes.to_vec();
        run_in(&self.upstream.path(), move || {
            modes
                .iter()
                .enumerate()
                .map(|(i, m)| Upstream::start(upstream_addr(i), *m))
                .collect()
        })
        .unwrap()
    }

    fn resolver(&self, table: Table, upstreams: Vec<SocketAddr>, timeout: Duration) -> Cell {
        self.resolver_with(table, upstreams, timeout, ServerConfig::default(), |r| r)
    }

    /// A resolver in the cell namespace; `wrap` may put another handler around it.
    fn resolver_with<H: Handler>(
        &self,
        table: Table,
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        config: ServerConfig,
        wrap: impl FnOnce(Resolver) -> H + Send + 'static,
    ) -> Cell {
        let metrics = DnsMetrics::default();
        let shared = Arc::new(SharedTable::new(table));
        let (m, t) = (metrics.clone(), Arc::clone(&shared));
        let running = run_in(&self.cell.path(), move || {
            let forwarder = Forwarder::new(upstreams, timeout, m.clone()).unwrap();
            let handler = Arc::new(wrap(Resolver::new(t, forwarder)));
            let (udp, tcp) = bind_again(resolver_addr());
            server::start(udp, tcp, handler, &config, m).unwrap()
        })
        .unwrap();
        Cell {
            running,
            table: shared,
            metrics,
        }
    }

    /// Runs `f` in the client namespace.
    fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in(&self.client.path(), f).unwrap()
    }
}

/// The usual set-up: one normal upstream, a resolver on `table`, and its address.
fn standard(table: Table) -> (Net, Vec<Upstream>, Cell, SocketAddr) {
    let net = Net::new();
    let ups = net.upstreams(&[Mode::Normal]);
    let cell = net.resolver(table, vec![ups[0].addr], Duration::from_secs(1));
    let server = cell.running.udp_addr();
    (net, ups, cell, server)
}

struct Cell {
    running: Running,
    table: Arc<SharedTable>,
    metrics: DnsMetrics,
}

fn instance(app: &str, index: u32, ip: [u8; 4]) -> Instance {
    Instance {
        app_guid: app.into(),
        index,
        ip: Ipv4Addr::from(ip),
    }
}

/// `backend.apps.internal`: `n` instances 10.255.<base>.<i+1>; `idle.apps.internal`: none.
fn routes(n: u32, base: u8) -> InternalRoutes {
    InternalRoutes {
        domains: vec!["apps.internal".into()],
        routes: vec![
            InternalRoute {
                name: "backend.apps.internal".into(),
                instances: (0..n)
                    .map(|i| instance("backend-guid", i, [10, 255, base, i as u8 + 1]))
                    .collect(),
            },
            InternalRoute {
                name: "idle.apps.internal".into(),
                instances: vec![],
            },
        ],
    }
}

fn table(n: u32) -> Table {
    Table::new(&routes(n, 0)).unwrap()
}

fn sorted(mut v: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    v.sort();
    v
}

fn backend_ips(n: u32, base: u8) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::new(10, 255, base, i as u8 + 1))
        .collect()
}

#[test]
fn internal_names_are_answered_from_another_namespace_over_udp_and_tcp() {
    let (net, ups, cell, server) = standard(table(3));
    net.client(move || {
        for m in [
            ask_udp(server, "backend.apps.internal.", RecordType::A),
            ask_tcp(server, "backend.apps.internal.", RecordType::A),
            ask_udp(server, "BACKEND.Apps.Internal.", RecordType::A),
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.metadata.authoritative);
            assert_eq!(sorted(a_records(&m)), backend_ips(3, 0));
            assert!(m.answers.iter().all(|r| r.ttl == 0), "TTL 0");
        }
        // The question comes back as asked (0x20 case randomisation keeps working).
        let m = ask_udp(server, "BACKEND.Apps.Internal.", RecordType::A);
        assert_eq!(m.queries[0].name().to_ascii(), "BACKEND.Apps.Internal.");

        for (name, ip) in [
            ("0.backend.apps.internal.", 1),
            ("2.backend.apps.internal.", 3),
        ] {
            for m in [
                ask_udp(server, name, RecordType::A),
                ask_tcp(server, name, RecordType::A),
            ] {
                assert_eq!(a_records(&m), [Ipv4Addr::new(10, 255, 0, ip)], "{name}");
            }
        }
        for name in [
            "nope.apps.internal.",
            "3.backend.apps.internal.",
            "00.backend.apps.internal.",
            "x.backend.apps.internal.",
        ] {
            for m in [
                ask_udp(server, name, RecordType::A),
                ask_tcp(server, name, RecordType::A),
            ] {
                assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
                assert!(m.answers.is_empty());
            }
        }
        for rtype in [
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::TXT,
            RecordType::MX,
        ] {
            for name in ["backend.apps.internal.", "0.backend.apps.internal."] {
                let m = ask_udp(server, name, rtype);
                assert_eq!(
                    m.metadata.response_code,
                    ResponseCode::NoError,
                    "{name} {rtype}"
                );
                assert!(m.answers.is_empty(), "{name} {rtype}");
            }
        }
        // A mapped route with no running instance exists: NOERROR, no address.
        let m = ask_udp(server, "idle.apps.internal.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    });
    assert_eq!(
        ups[0].queries(),
        0,
        "internal names never reach the upstream"
    );
    assert!(
        cell.metrics
            .queries(Transport::Udp, Kind::Internal, "NXDOMAIN")
            >= 4
    );
    assert!(
        cell.metrics
            .queries(Transport::Tcp, Kind::Internal, "NOERROR")
            >= 3
    );
}

#[test]
fn other_names_are_forwarded_over_udp_and_tcp() {
    let (net, ups, cell, server) = standard(table(2));
    net.client(move || {
        for m in [
            ask_udp(server, "www.example.test.", RecordType::A),
            ask_tcp(server, "www.example.test.", RecordType::A),
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 1)]);
            assert_eq!(m.answers[0].ttl, 300, "the upstream's answer, untouched");
        }
        // The upstream's NXDOMAIN is passed on; the internal NXDOMAIN is the resolver's own.
        let m = ask_udp(server, "nope.example.test.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(!m.metadata.authoritative);
        let m = ask_udp(server, "nope.apps.internal.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        // A name that only ends like an internal domain is not under it.
        let m = ask_udp(server, "xapps.internal.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    });
    assert_eq!(ups[0].udp_queries.load(Ordering::SeqCst), 3);
    assert_eq!(ups[0].tcp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(
        cell.metrics
            .forwards(Transport::Udp, ForwardOutcome::Answered),
        3
    );
    assert_eq!(
        cell.metrics
            .forwards(Transport::Tcp, ForwardOutcome::Answered),
        1
    );
    assert_eq!(
        cell.metrics
            .queries(Transport::Udp, Kind::Forwarded, "NXDOMAIN"),
        2
    );
}

#[test]
fn a_truncated_upstream_answer_is_passed_on_and_the_client_gets_it_whole_over_tcp() {
    let (net, _ups, _cell, server) = standard(table(1));
    net.client(move || {
        let m = ask_udp(server, "big.example.test.", RecordType::A);
        assert!(m.metadata.truncation, "UDP answer must say truncated");
        let m = ask_tcp(server, "big.example.test.", RecordType::A);
        assert!(!m.metadata.truncation);
        assert_eq!(a_records(&m).len(), dns::BIG_COUNT as usize);
        // With EDNS the upstream sends it all over UDP; the resolver relays what the client takes.
        let m = ask_udp_edns(server, "big.example.test.", RecordType::A, Some(4096));
        assert_eq!(a_records(&m).len(), dns::BIG_COUNT as usize);
    });
}

#[test]
fn large_internal_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let (net, _ups, _cell, server) = standard(table(250));
    net.client(move || {
        let q = dns::query("backend.apps.internal.", RecordType::A, None);
        let raw = send_udp(server, &q, Duration::from_secs(2)).unwrap();
        assert!(raw.len() <= 512);
        let m = Message::from_vec(&raw).unwrap();
        assert!(m.metadata.truncation);
        assert!(!a_records(&m).is_empty());
        let m = ask_udp_edns(server, "backend.apps.internal.", RecordType::A, Some(1232));
        assert!(m.metadata.truncation);
        let m = ask_tcp(server, "backend.apps.internal.", RecordType::A);
        assert!(!m.metadata.truncation);
        assert_eq!(sorted(a_records(&m)), backend_ips(250, 0));
    });
}

#[test]
fn silent_and_failing_upstreams_are_passed_over() {
    let net = Net::new();
    let ups = net.upstreams(&[Mode::Silent, Mode::ServFail, Mode::Normal]);
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let cell = net.resolver(table(1), addrs, Duration::from_millis(300));
    let server = cell.running.udp_addr();
    let m = cell.metrics.clone();
    net.client(move || {
        let answered_by = |proto: &str| {
            let msg = match proto {
                "udp" => ask_udp(server, "who.example.test.", RecordType::A),
                _ => ask_tcp(server, "who.example.test.", RecordType::A),
            };
            assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
            a_records(&msg)[0].to_string()
        };
        let started = Instant::now();
        assert_eq!(answered_by("udp"), UPSTREAM_IPS[2]);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "waited for the silent one"
        );
        assert_eq!(m.forwards(Transport::Udp, ForwardOutcome::Timeout), 1);
        assert_eq!(m.forwards(Transport::Udp, ForwardOutcome::Rejected), 1);
        // The upstream that answered is asked first from now on.
        for _ in 0..5 {
            assert_eq!(answered_by("udp"), UPSTREAM_IPS[2]);
        }
        assert_eq!(answered_by("tcp"), UPSTREAM_IPS[2]);
        assert_eq!(m.forwards(Transport::Udp, ForwardOutcome::Timeout), 1);
        assert_eq!(m.forwards(Transport::Udp, ForwardOutcome::Answered), 6);
        assert_eq!(m.forwards(Transport::Tcp, ForwardOutcome::Answered), 1);
    });
}

#[test]
fn no_answering_upstream_gives_servfail_in_bounded_time() {
    let net = Net::new();
    let ups = net.upstreams(&[Mode::Silent]);
    // The second upstream has nothing listening (port unreachable).
    let addrs = vec![ups[0].addr, "169.254.20.3:53".parse().unwrap()];
    let cell = net.resolver(table(1), addrs, Duration::from_millis(300));
    let server = cell.running.udp_addr();
    let m = cell.metrics.clone();
    net.client(move || {
        let started = Instant::now();
        let msg = ask_udp(server, "www.example.test.", RecordType::A);
        assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
        assert!(started.elapsed() < Duration::from_secs(2));
        let msg = ask_tcp(server, "www.example.test.", RecordType::A);
        assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
        // Internal names are still answered while every upstream is down.
        let msg = ask_udp(server, "0.backend.apps.internal.", RecordType::A);
        assert_eq!(a_records(&msg).len(), 1);
    });
    assert_eq!(m.queries(Transport::Udp, Kind::Forwarded, "SERVFAIL"), 1);
    assert!(
        m.forwards(Transport::Udp, ForwardOutcome::Error)
            + m.forwards(Transport::Udp, ForwardOutcome::Timeout)
            >= 2
    );
}

#[test]
fn answers_are_shuffled_per_query() {
    let (net, _ups, _cell, server) = standard(table(6));
    let (orders, firsts) = net.client(move || {
        let mut orders = HashSet::new();
        let mut firsts: HashMap<Ipv4Addr, usize> = HashMap::new();
        for _ in 0..300 {
            let ips = a_records(&ask_udp(server, "backend.apps.internal.", RecordType::A));
            assert_eq!(sorted(ips.clone()), backend_ips(6, 0));
            *firsts.entry(ips[0]).or_default() += 1;
            orders.insert(ips);
        }
        (orders, firsts)
    });
    // 720 orders are possible; 300 uniform draws hit well over 150 distinct ones, and each
    // address comes first about 50 times.
    assert!(orders.len() > 150, "{} distinct orders", orders.len());
    assert_eq!(firsts.len(), 6);
    assert!(
        firsts.values().all(|&n| n >= 20),
        "first positions: {firsts:?}"
    );
}

#[test]
fn the_table_is_swapped_while_queries_run() {
    let (net, ups, cell, server) = standard(table(4));
    let a = Arc::new(routes(4, 1));
    let b = Arc::new(routes(7, 2));
    cell.table.replace(&a).unwrap();
    let (set_a, set_b) = (backend_ips(4, 1), backend_ips(7, 2));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, set_a, set_b) = (Arc::clone(&stop), set_a.clone(), set_b.clone());
            let ns = net.client.path();
            std::thread::spawn(move || {
                run_in(&ns, move || {
                    let (mut seen_a, mut seen_b) = (0, 0);
                    while !stop.load(Ordering::SeqCst) {
                        let m = ask_udp(server, "backend.apps.internal.", RecordType::A);
                        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                        let ips = sorted(a_records(&m));
                        if ips == set_a {
                            seen_a += 1;
                        } else if ips == set_b {
                            seen_b += 1;
                        } else {
                            panic!("an answer mixing tables: {ips:?}");
                        }
                    }
                    (seen_a, seen_b)
                })
                .unwrap()
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut swaps = 0;
    while Instant::now() < deadline {
        cell.table
            .replace(if swaps % 2 == 0 { &b } else { &a })
            .unwrap();
        swaps += 1;
        std::thread::sleep(Duration::from_micros(500));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let (seen_a, seen_b) = c.join().expect("client thread");
        assert!(
            seen_a > 0 && seen_b > 0,
            "both tables served: {seen_a} / {seen_b}"
        );
    }
    assert!(swaps > 100, "{swaps} swaps");

    // The internal domains change at run time: a new domain is answered, the old one forwarded.
    let mut moved = routes(2, 3);
    moved.domains = vec!["svc.internal".into()];
    moved.routes[0].name = "backend.svc.internal".into();
    moved.routes[1].name = "idle.svc.internal".into();
    cell.table.replace(&moved).unwrap();
    let before = ups[0].queries();
    net.client(move || {
        let m = ask_udp(server, "backend.svc.internal.", RecordType::A);
        assert_eq!(sorted(a_records(&m)), backend_ips(2, 3));
        let m = ask_udp(server, "backend.apps.internal.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(!m.metadata.authoritative, "now the upstream's answer");
    });
    assert_eq!(ups[0].queries(), before + 1);
}

#[test]
fn a_restarted_resolver_serves_its_snapshot_at_once_and_a_damaged_one_is_reported() {
    let net = Net::new();
    let ups = net.upstreams(&[Mode::Normal]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dns-table");
    assert!(
        snapshot::restore(&path).unwrap().is_none(),
        "no snapshot yet"
    );

    let cell = net.resolver(table(1), vec![ups[0].addr], Duration::from_secs(1));
    let live = Table::new(&routes(3, 5)).unwrap();
    cell.table.replace(&live.to_routes()).unwrap();
    snapshot::save_table(&path, &cell.table.load()).unwrap();
    cell.running.stop();

    let restored = snapshot::restore(&path).unwrap().expect("a snapshot");
    let cell = net.resolver(restored, vec![ups[0].addr], Duration::from_secs(1));
    let server = cell.running.udp_addr();
    net.client(move || {
        let m = ask_udp(server, "backend.apps.internal.", RecordType::A);
        assert_eq!(sorted(a_records(&m)), backend_ips(3, 5));
    });

    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&path, &bytes).unwrap();
    match snapshot::restore(&path) {
        Err(snapshot::SnapshotError::Damaged(msg)) => assert!(msg.contains("dns-table"), "{msg}"),
        Err(e) => panic!("expected Damaged, got {e}"),
        Ok(t) => panic!(
            "a damaged snapshot read as {:?} routes",
            t.map(|t| t.route_count())
        ),
    }
    // What a resolver serves then, until the registry answers: SERVFAIL (which clients retry)
    // for internal names, never an NXDOMAIN they would believe; other names as usual.
    cell.running.stop();
    let not_ready = Table::not_ready(&["apps.internal".into()]).unwrap();
    let cell = net.resolver(not_ready, vec![ups[0].addr], Duration::from_secs(1));
    let server = cell.running.udp_addr();
    net.client(move || {
        let m = ask_udp(server, "backend.apps.internal.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        let m = ask_udp(server, "www.example.test.", RecordType::A);
        assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 1)]);
    });
    cell.table.replace(&routes(1, 6)).unwrap();
    net.client(move || {
        let m = ask_udp(server, "backend.apps.internal.", RecordType::A);
        assert_eq!(a_records(&m), backend_ips(1, 6));
    });
}

/// Packets that are not proper queries, each with what must come back (`None`: nothing).
fn bad_packets() -> Vec<(&'static str, Vec<u8>, Option<ResponseCode>)> {
    let good = dns::query("backend.apps.internal.", RecordType::A, None);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        p
    };
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    let mut forward_loop = good[..12].to_vec();
    // label "a", then a pointer forward to itself at offset 14.
    forward_loop.extend_from_slice(&[1, b'a', 0xc0, 14, 0, 1, 0, 1]);
    vec![
        ("empty", vec![], None),
        ("shorter than a header", good[..7].to_vec(), None),
        ("a response", with(&|p| p[2] |= 0x80), None),
        (
            "cut in the question",
            good[..good.len() - 3].to_vec(),
            Some(ResponseCode::FormErr),
        ),
        (
            "no question",
            with(&|p| p[5] = 0),
            Some(ResponseCode::FormErr),
        ),
        (
            "two questions",
            with(&|p| p[5] = 2),
            Some(ResponseCode::FormErr),
        ),
        ("compression loop", looped, Some(ResponseCode::FormErr)),
        ("pointer forward", forward_loop, Some(ResponseCode::FormErr)),
        (
            "status opcode",
            with(&|p| p[2] |= 2 << 3),
            Some(ResponseCode::NotImp),
        ),
        (
            "notify opcode",
            with(&|p| p[2] |= 4 << 3),
            Some(ResponseCode::NotImp),
        ),
        (
            "update opcode",
            with(&|p| p[2] |= 5 << 3),
            Some(ResponseCode::NotImp),
        ),
        (
            "oversized",
            with(&|p| p.resize(5000, 0x41)),
            Some(ResponseCode::FormErr),
        ),
        (
            "answer count lies",
            with(&|p| p[7] = 5),
            Some(ResponseCode::FormErr),
        ),
        (
            "zone transfer",
            dns::query("apps.internal.", RecordType::AXFR, None),
            Some(ResponseCode::Refused),
        ),
    ]
}

#[test]
fn malformed_packets_get_errors_or_are_dropped_and_the_server_stays_up() {
    let (net, _ups, cell, server) = standard(table(2));
    net.client(move || {
        for (what, packet, expected) in bad_packets() {
            let got = send_udp(server, &packet, Duration::from_millis(300));
            match (expected, got) {
                (None, Err(_)) => {}
                (None, Ok(r)) => panic!("{what}: answered {r:?}"),
                (Some(_), Err(e)) => panic!("{what}: no answer over udp ({e})"),
                (Some(rcode), Ok(r)) => {
                    let m = Message::from_vec(&r).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(m.metadata.response_code, rcode, "{what}");
                    if packet.len() >= 2 {
                        assert_eq!(r[..2], packet[..2], "{what}: ID");
                    }
                }
            }
            // TCP: errors are answered; what is dropped closes the connection.
            if packet.len() <= u16::MAX as usize {
                let mut s = TcpStream::connect(server).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                dns::write_framed(&mut s, &packet).unwrap();
                match (expected, dns::read_framed(&mut s)) {
                    (Some(rcode), Ok(r)) => {
                        assert_eq!(
                            Message::from_vec(&r).unwrap().metadata.response_code,
                            rcode,
                            "{what}"
                        )
                    }
                    (None, Err(_)) => {}
                    (e, r) => panic!("{what} over tcp: expected {e:?}, got {r:?}"),
                }
            }
        }
        let m = ask_udp(server, "backend.apps.internal.", RecordType::A);
        assert_eq!(a_records(&m).len(), 2, "still answering");
    });
    assert_eq!(cell.metrics.failures(Failure::Panic), 0);
    assert!(
        cell.metrics
            .queries(Transport::Udp, Kind::Invalid, "FORMERR")
            >= 7
    );
    assert!(
        cell.metrics
            .queries(Transport::Udp, Kind::Invalid, "dropped")
            >= 3
    );
}

#[test]
fn slow_idle_and_excess_tcp_clients_are_cut_off_and_others_served() {
    let net = Net::new();
    let ups = net.upstreams(&[Mode::Normal]);
    let config = ServerConfig {
        tcp_connections: 4,
        tcp_query_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let cell = net.resolver_with(
        table(1),
        vec![ups[0].addr],
        Duration::from_secs(1),
        config,
        |r| r,
    );
    let server = cell.running.udp_addr();
    let m = cell.metrics.clone();
    net.client(move || {
        // Four connections take every slot: one idle, one sending a query byte by byte too
        // slowly, two that announce a long query and stop.
        let mut held = vec![TcpStream::connect(server).unwrap()];
        let mut slow = TcpStream::connect(server).unwrap();
        let q = dns::query("backend.apps.internal.", RecordType::A, None);
        for _ in 0..2 {
            let mut s = TcpStream::connect(server).unwrap();
            s.write_all(&[0x10, 0x00, 0xab]).unwrap();
            held.push(s);
        }
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(100));
        // A fifth connection is closed at once.
        let mut extra = TcpStream::connect(server).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let _ = dns::write_framed(&mut extra, &q);
        assert!(
            dns::read_framed(&mut extra).is_err(),
            "over the limit, closed"
        );
        // UDP is unaffected.
        assert_eq!(
            a_records(&ask_udp(server, "backend.apps.internal.", RecordType::A)).len(),
            1
        );
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        for byte in framed.iter().take(5) {
            if slow.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        // Every one of them is closed by its deadline, and the slots free up.
        for mut s in held.into_iter().chain([slow]) {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 16];
            assert!(
                matches!(s.read(&mut buf), Ok(0) | Err(_)),
                "closed by the server"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            a_records(&ask_tcp(server, "backend.apps.internal.", RecordType::A)).len(),
            1
        );
    });
    assert!(m.failures(Failure::TcpConnectionLimit) >= 1);
    assert!(m.failures(Failure::TcpDeadline) >= 4);
}

#[test]
fn one_tcp_connection_carries_many_queries() {
    let (net, _ups, _cell, server) = standard(table(2));
    net.client(move || {
        let mut s = TcpStream::connect(server).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for name in [
            "backend.apps.internal.",
            "www.example.test.",
            "nope.apps.internal.",
        ] {
            dns::write_framed(&mut s, &dns::query(name, RecordType::A, None)).unwrap();
        }
        let rcodes: Vec<ResponseCode> = (0..3)
            .map(|_| {
                Message::from_vec(&dns::read_framed(&mut s).unwrap())
                    .unwrap()
                    .metadata
                    .response_code
            })
            .collect();
        assert_eq!(
            rcodes,
            [
                ResponseCode::NoError,
                ResponseCode::NoError,
                ResponseCode::NXDomain
            ]
        );
    });
}

/// Panics on one name: how a bug in a worker would look.
struct PanicsOn(Resolver);

impl Handler for PanicsOn {
    fn decide(&self, packet: &[u8], transport: Transport) -> Decision {
        if packet.windows(4).any(|w| w == b"boom") {
            panic!("boom");
        }
        self.0.decide(packet, transport)
    }

    fn forward(&self, query: &Forward, transport: Transport) -> Reply {
        if query.bytes.windows(5).any(|w| w == b"kaput") {
            panic!("kaput");
        }
        self.0.forward(query, transport)
    }
}

#[test]
fn a_panic_in_a_worker_is_counted_and_the_worker_goes_on() {
    let net = Net::new();
    let ups = net.upstreams(&[Mode::Normal]);
    let config = ServerConfig {
        udp_workers: 1,
        forward_workers: 1,
        ..ServerConfig::default()
    };
    let cell = net.resolver_with(
        table(1),
        vec![ups[0].addr],
        Duration::from_secs(1),
        config,
        PanicsOn,
    );
    let server = cell.running.udp_addr();
    net.client(move || {
        for name in ["boom.apps.internal.", "kaput.example.test."] {
            for _ in 0..3 {
                let q = dns::query(name, RecordType::A, None);
                assert!(send_udp(server, &q, Duration::from_millis(200)).is_err());
            }
            let mut s = TcpStream::connect(server).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            dns::write_framed(&mut s, &dns::query(name, RecordType::A, None)).unwrap();
            assert!(dns::read_framed(&mut s).is_err(), "connection closed");
        }
        assert_eq!(
            a_records(&ask_udp(server, "backend.apps.internal.", RecordType::A)).len(),
            1
        );
        assert_eq!(
            a_records(&ask_udp(server, "www.example.test.", RecordType::A)).len(),
            1
        );
        assert_eq!(
            a_records(&ask_tcp(server, "www.example.test.", RecordType::A)).len(),
            1
        );
    });
    assert_eq!(cell.metrics.failures(Failure::Panic), 8);
}

#[test]
fn a_full_forwarding_queue_answers_servfail_at_once() {
    let net = Net::new();
    let ups = net.upstreams(&[Mode::Silent]);
    let config = ServerConfig {
        forward_workers: 1,
        forward_queue: 1,
        ..ServerConfig::default()
    };
    let cell = net.resolver_with(
        table(1),
        vec![ups[0].addr],
        Duration::from_secs(1),
        config,
        |r| r,
    );
    let server = cell.running.udp_addr();
    let servfails = net.client(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        for i in 0..6 {
            if i == 1 {
                // Let the worker take the first, so that the second waits in the queue.
                std::thread::sleep(Duration::from_millis(100));
            }
            s.send_to(
                &dns::query(&format!("q{i}.example.test."), RecordType::A, None),
                server,
            )
            .unwrap();
        }
        let mut buf = [0u8; 512];
        let mut servfails = 0;
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            servfails += 1;
        }
        servfails
    });
    // One in the worker, one queued: the other four are refused at once (the first two come
    // back SERVFAIL after the upstream timeout, later than the 500 ms read above).
    assert_eq!(servfails, 4);
    assert_eq!(cell.metrics.failures(Failure::ForwardQueueFull), 4);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn valid_queries() -> Vec<Vec<u8>> {
        [
            ("backend.apps.internal.", RecordType::A, None),
            ("0.backend.apps.internal.", RecordType::AAAA, Some(1232)),
            ("nope.apps.internal.", RecordType::A, Some(4096)),
            ("www.example.test.", RecordType::A, None),
        ]
        .iter()
        .map(|(n, t, e)| dns::query(n, *t, *e))
        .collect()
    }

    /// A valid query with bytes changed, cut, or added.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        (
            0..4usize,
            prop::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            prop::option::of(any::<usize>()),
            prop::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(which, flips, cut, tail)| {
                let mut p = valid_queries()[which].clone();
                for (at, byte) in flips {
                    let i = at % p.len();
                    p[i] = byte;
                }
                if let Some(c) = cut {
                    p.truncate(c % (p.len() + 1));
                }
                p.extend(tail);
                p
            })
    }

    fn packets() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![prop::collection::vec(any::<u8>(), 0..600), mutated()]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

        /// Every packet gets a parseable answer with its ID, a forward, or nothing; no panic.
        #[test]
        fn decisions_on_arbitrary_bytes(packet in packets(), tcp in any::<bool>()) {
            let t = table(3);
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            match netman::dns::query::decide(&t, &packet, transport) {
                Decision::Reply(r) => {
                    let m = Message::from_vec(&r.bytes).expect("our answers parse");
                    prop_assert_eq!(&r.bytes[..2], &packet[..2]);
                    prop_assert_eq!(m.metadata.message_type, hickory_proto::op::MessageType::Response);
                    if !tcp {
                        prop_assert!(r.bytes.len() <= netman::dns::query::MAX_UDP_ANSWER as usize);
                    }
                }
                Decision::Forward(f) => prop_assert_eq!(f.bytes, packet),
                Decision::Drop => prop_assert!(packet.len() < 12 || packet[2] & 0x80 != 0),
            }
        }
    }

    /// The same over the wire, against a running resolver, which must answer afterwards.
    #[test]
    fn arbitrary_and_mutated_packets_over_the_wire_leave_the_server_answering() {
        let net = Net::new();
        let ups = net.upstreams(&[Mode::Normal]);
        let cell = net.resolver(table(3), vec![ups[0].addr], Duration::from_millis(200));
        let server = cell.running.udp_addr();
        net.client(move || {
            let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
                cases: 400,
                ..ProptestConfig::default()
            });
            let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            runner
                .run(&(packets(), any::<bool>()), |(packet, tcp)| {
                    if tcp {
                        let mut s = TcpStream::connect(server).unwrap();
                        let _ = dns::write_framed(&mut s, &packet);
                    } else {
                        udp.send_to(&packet, server).unwrap();
                    }
                    Ok(())
                })
                .unwrap();
            for name in ["backend.apps.internal.", "www.example.test."] {
                assert_eq!(
                    ask_udp(server, name, RecordType::A).metadata.response_code,
                    ResponseCode::NoError
                );
                assert_eq!(
                    ask_tcp(server, name, RecordType::A).metadata.response_code,
                    ResponseCode::NoError
                );
            }
        });
        assert_eq!(cell.metrics.failures(Failure::Panic), 0);
    }
}

/// Binds the resolver's address again right after the old resolver closed it.
fn bind_again(addr: SocketAddr) -> (std::net::UdpSocket, std::net::TcpListener) {
    support::bind::retry_in_use(|| server::bind(addr)).unwrap()
}
