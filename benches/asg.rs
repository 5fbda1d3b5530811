//! Dynamic ASG figures (issue 14). Run as root: `cargo bench --bench asg` (its own namespaces).
//!
//! 1. Compile + apply from scratch on one cell, 100 containers in 20 spaces, N groups of 10 rules
//!    (20% globally enabled for running, 80% bound to the cell's spaces: every group applies on
//!    the cell, the worst case); then one group edited and one group bound, on top. The same for
//!    a realistic spread: 13,500 groups over 5,000 spaces, 20 global, of which the cell holds
//!    only those that apply to it.
//! 2. New outbound TCP connections/s through the cell with 13,500 groups, relative to 1 group
//!    (two clients in the same table, interleaved rounds, every 4-tuple new).
//! 3. Container up + down (garden's networker; CNI overlay, then bridge) with the agent owning egress, and
//!    with the static path (no agent) in the same run, with the networker's and the agent's
//!    per-step breakdown; the container's own start (garden's part) is not timed.
//! 4. Propagation from a change on the policy server to the first allowed / first refused
//!    connection on two cells: agents holding the security-groups watch (the default), and, as
//!    the baseline in the same run, agents polling the version every second (`policy_watch:
//!    false`, the lab's poll interval).
//!
//! 5. The periodic sync (every `asg_poll_interval_seconds`) with 13,500 groups and nothing
//!    changed: the agent's refetched groups compiled, diffed and the kernel's table checked
//!    (`agent::asg::drift`), against the whole-table rewrite it replaced, in the same run.
//!
//! `NETMAN_ASG_BENCH=compile,rate,updown,propagation,periodic` picks parts (default: all);
//! `NETMAN_ASG_UPDOWN_PLUGINS=overlay,bridge` the CNI plugin chains of `updown` (default: both).

#[path = "../tests/support/mod.rs"]
mod support;

use netman::agent::asg::bulk;
use netman::agent::asg::compile::{compile_with, Cache};
use netman::agent::asg::counting::ALLOWED_COUNTS;
use netman::agent::asg::drift;
use netman::agent::asg::objects::{render_delete, render_diff, render_full, Objects};
use netman::agent::asg::{compile, DenyNetworks, Settings};
use netman::agent::libnft::LibNft;
use netman::api::security_groups::SecurityGroup;
use netman::cell::Container;
use netman::lab::netns::NamedNetns;
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};
use support::asg_cell::{global, AsgCell};
use support::networker_fixture::{self as fixture, up_input, Cell, Plugin, NET_A};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn settings() -> Settings {
    Settings {
        overlay: "10.255.0.0/16".parse().unwrap(),
        deny: DenyNetworks {
            always: vec!["169.254.0.0/16".parse().unwrap()],
            running: vec!["10.0.0.0/8".parse().unwrap()],
            staging: vec![],
        },
        log_all: false,
        nflog_group: 1,
        denied_logs_per_sec: 1,
        accepted_udp_logs_per_sec: 100,
    }
}

/// `n` groups of 10 rules: distinct /32 destinations in 100.64.0.0/10, ports from a pool of 200
/// (some ranges), one rule in ten UDP; group i is global when i % 5 == 0, else bound to space
/// i % 20.
fn groups(n: usize) -> Vec<SecurityGroup> {
    (0..n)
        .map(|i| {
            let rules: Vec<serde_json::Value> = (0..10)
                .map(|r| {
                    let k = (i * 10 + r) as u32;
                    let host = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + k);
                    let port = 1000 + (k * 7919) % 200;
                    let ports = if r == 9 {
                        format!("{port}-{}", port + 50)
                    } else {
                        format!("{port}, {}", port + 1)
                    };
                    let proto = if r == 3 { "udp" } else { "tcp" };
                    json!({"protocol": proto, "destination": host.to_string(), "ports": ports})
                })
                .collect();
            let global = i % 5 == 0;
            SecurityGroup {
                guid: format!("g{i:05}"),
                name: format!("group-{i}"),
                rules: serde_json::to_string(&rules).unwrap(),
                running_default: global,
                staging_default: false,
                running_space_guids: if global {
                    vec![]
                } else {
                    vec![format!("space-{}", i % 20)]
                },
                staging_space_guids: vec![],
            }
        })
        .collect()
}

fn containers(n: usize) -> Vec<Container> {
    (0..n)
        .map(|i| {
            let mut c = Container::for_app(
                &format!("c{i}"),
                Ipv4Addr::new(10, 255, 1 + (i / 200) as u8, (i % 200) as u8 + 2),
                &format!("app-{i}"),
            );
            c.metadata
                .insert("space_id".into(), json!(format!("space-{}", i % 20)));
            c.metadata.insert("container_workload".into(), json!("app"));
            c
        })
        .collect()
}

fn ns(name: &str) -> NamedNetns {
    NamedNetns::create(&support::unique(name)).unwrap()
}

fn libnft_in(ns: &NamedNetns) -> LibNft {
    netman::netns::run_in(&ns.path(), LibNft::open)
        .unwrap()
        .unwrap()
}

/// The realistic spread: `n` groups over 5,000 spaces (`space-<i % 5000>`), the first 20
/// globally enabled for running; a cell whose containers are in `space-0`..`space-19` holds
/// only the groups that apply to it (as the internal API's `space_guids` filter returns them).
fn groups_spread(n: usize) -> Vec<SecurityGroup> {
    groups(n)
        .into_iter()
        .enumerate()
        .map(|(i, mut g)| {
            g.running_default = i < 20;
            g.running_space_guids = if i < 20 {
                vec![]
            } else {
                vec![format!("space-{}", i % 5000)]
            };
            g
        })
        .collect()
}

/// What the policy server answers the cell: the groups global for a lifecycle or bound to one
/// of its spaces.
fn for_cell(all: &[SecurityGroup], spaces: &[String]) -> Vec<SecurityGroup> {
    all.iter()
        .filter(|g| {
            g.running_default
                || g.staging_default
                || g.running_space_guids
                    .iter()
                    .chain(&g.staging_space_guids)
                    .any(|s| spaces.contains(s))
        })
        .cloned()
        .collect()
}

/// The table without its counters (the baseline of the counters' cost): no counted set, no
/// named counter, no counting statement; the same chains and maps otherwise.
fn without_counters(o: &Objects) -> Objects {
    let mut o = o.clone();
    o.sets.remove(ALLOWED_COUNTS);
    o.counters.clear();
    for (_, rules) in o.chains.values_mut() {
        rules.retain(|r| !r.contains(&format!("update @{ALLOWED_COUNTS}")));
        for r in rules.iter_mut() {
            if let Some(at) = r.find("counter name \"") {
                let end = r[at + 14..].find('"').unwrap() + at + 16;
                r.replace_range(at..end, "");
            }
        }
    }
    o
}

/// Compile + apply from scratch, then one edit of group `edit` (another destination and port)
/// and one bind of group `bind` to `space-3`, on top; medians of 3.
fn measure(nft: &LibNft, label: &str, all: &[SecurityGroup], edit: usize, bind: usize) {
    let conts = containers(100);
    let spaces: Vec<String> = (0..20).map(|i| format!("space-{i}")).collect();
    let mut scratch = Vec::new();
    let mut compile_t = Vec::new();
    let (mut parse_t, mut render_t, mut kernel_t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut whole_t, mut replace_t) = (Vec::new(), Vec::new());
    let mut edit_t = Vec::new();
    let mut bind_t = Vec::new();
    let mut edit_parts = Vec::new();
    // Render + kernel, with and without the counters, from scratch and for the edit.
    let (mut with_scratch, mut without_scratch) = (Vec::new(), Vec::new());
    let (mut with_edit, mut without_edit) = (Vec::new(), Vec::new());
    let (mut elements, mut fetched) = (0, 0);
    for _ in 0..3 {
        let gs = for_cell(all, &spaces);
        fetched = gs.len();
        // The groups' rules parsed alone (the compilation's first step), apart from the rest.
        let t = Instant::now();
        for g in &gs {
            let _ = std::hint::black_box(netman::asg::parse_rules_lenient(&g.rules));
        }
        parse_t.push(ms(t.elapsed()));
        // A cell where no table filters yet (a first start): the agent's first apply.
        nft.run(&render_delete()).unwrap();
        let mut cache = Cache::default();
        let t = Instant::now();
        let c = compile_with(&mut cache, &gs, &conts, &settings());
        let compiled = t.elapsed();
        bulk::apply_first(nft, &c.objects).unwrap();
        scratch.push(ms(t.elapsed()));
        compile_t.push(ms(compiled));
        kernel_t.push(ms(t.elapsed() - compiled));
        elements = c.objects.element_count();
        // Baselines in the same run: the same table written whole by libnftables, on a cell
        // without a table (what a first apply did until now), and over the live table (what
        // replacing a live table still does: an agent restart, a drift repair).
        nft.run(&render_delete()).unwrap();
        let t = Instant::now();
        let script = render_full(&c.objects);
        let rendered = t.elapsed();
        nft.run(&script).unwrap();
        render_t.push(ms(rendered));
        whole_t.push(ms(t.elapsed()));
        let t = Instant::now();
        nft.run(&render_full(&c.objects)).unwrap();
        replace_t.push(ms(t.elapsed()));
        assert!(
            c.skipped.is_empty(),
            "{:?}",
            &c.skipped[..c.skipped.len().min(3)]
        );

        let mut edited = all.to_vec();
        let rules = &mut edited[edit].rules;
        let host = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + edit as u32 * 10);
        *rules = rules.replacen(&format!("\"{host}\""), "\"100.127.255.1\"", 1);
        *rules = rules.replacen("\"ports\":\"", "\"ports\":\"4242,", 1);
        assert_ne!(edited[edit].rules, all[edit].rules, "{}", all[edit].rules);
        let gs = for_cell(&edited, &spaces);
        let t = Instant::now();
        let c2 = compile_with(&mut cache, &gs, &conts, &settings());
        let compiled = t.elapsed();
        let script = render_diff(&c.objects, &c2.objects).unwrap();
        let rendered = t.elapsed();
        nft.run(&script).unwrap();
        edit_t.push(ms(t.elapsed()));
        edit_parts.push((
            ms(compiled),
            ms(rendered - compiled),
            ms(t.elapsed() - rendered),
            script.lines().count(),
        ));

        let mut bound = edited;
        bound[bind].running_space_guids.push("space-3".into());
        let gs = for_cell(&bound, &spaces);
        let t = Instant::now();
        let c3 = compile_with(&mut cache, &gs, &conts, &settings());
        nft.run(&render_diff(&c2.objects, &c3.objects).unwrap())
            .unwrap();
        bind_t.push(ms(t.elapsed()));

        // The same table and edit without the counters, against the same steps with them.
        let (bare, bare2) = (without_counters(&c.objects), without_counters(&c2.objects));
        assert_ne!(bare, c.objects);
        let apply = |script: String| {
            let t = Instant::now();
            nft.run(&script).unwrap();
            ms(t.elapsed())
        };
        let t = Instant::now();
        let script = render_full(&bare);
        without_scratch.push(ms(t.elapsed()) + apply(script));
        let t = Instant::now();
        let script = render_diff(&bare, &bare2).unwrap();
        without_edit.push(ms(t.elapsed()) + apply(script));
        let t = Instant::now();
        let script = render_full(&c.objects);
        with_scratch.push(ms(t.elapsed()) + apply(script));
        let t = Instant::now();
        let script = render_diff(&c.objects, &c2.objects).unwrap();
        with_edit.push(ms(t.elapsed()) + apply(script));
    }
    println!(
        "{label}: {fetched} groups on the cell ({elements} set elements): from scratch {:.0} ms; one edit {:.1} ms; one bind {:.1} ms  (medians of 3)",
        median(scratch),
        median(edit_t),
        median(bind_t)
    );
    let (first, whole) = (median(kernel_t), median(whole_t));
    println!(
        "  from scratch: compile {:.0} ms (parsing the rules alone: {:.0} ms), apply {first:.0} ms (the table dormant by libnftables, the plain maps' elements over nfnetlink)",
        median(compile_t),
        median(parse_t),
    );
    println!(
        "  baseline, the same table by libnftables alone: on a cell without it {whole:.0} ms (render {:.0} ms; ratio apply / this {:.2}), over the live table {:.0} ms",
        median(render_t),
        first / whole,
        median(replace_t)
    );
    let (ws, bs) = (median(with_scratch), median(without_scratch));
    let (we, be) = (median(with_edit), median(without_edit));
    println!(
        "  counters: render + kernel from scratch {ws:.0} ms with, {bs:.0} ms without (ratio {:.2}); one edit {we:.1} ms with, {be:.1} ms without (ratio {:.2})",
        ws / bs,
        we / be
    );
    let part = |f: fn(&(f64, f64, f64, usize)) -> f64| median(edit_parts.iter().map(f).collect());
    println!(
        "  one edit: compile {:.1} ms, diff {:.1} ms, kernel (libnftables) {:.1} ms, {} script lines",
        part(|p| p.0),
        part(|p| p.1),
        part(|p| p.2),
        edit_parts.last().map_or(0, |p| p.3)
    );
}

fn compile_and_apply() {
    println!("== compile + apply, one cell, 100 containers in 20 spaces, groups of 10 rules; one group edited, one bound, on top");
    println!("load average at start: {}", support::machine::loadavg());
    let cell = ns("asgb");
    let nft = libnft_in(&cell);
    for n in [1_000usize, 13_500] {
        // Worst case: every group applies on the cell; the bound group comes from elsewhere.
        let mut gs = groups(n);
        let mut spare = groups(1).remove(0);
        spare.guid = "spare".into();
        spare.running_default = false;
        spare.running_space_guids = vec!["elsewhere".into()];
        gs.push(spare);
        let bind = gs.len() - 1;
        measure(
            &nft,
            &format!("worst case, {n} groups all on the cell"),
            &gs,
            0,
            bind,
        );
    }
    // Realistic: 13,500 groups over 5,000 spaces, 20 global; the cell fetches what applies.
    let gs = groups_spread(13_500);
    measure(
        &nft,
        "spread, 13,500 groups over 5,000 spaces (20 global)",
        &gs,
        0,
        13_499,
    );
}

fn sh(ns: &NamedNetns, args: &[&str]) {
    ns.exec(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

/// `n` sequential connect+close from the calling thread's namespace with source ports
/// `first..`; (successes, elapsed).
fn connects(to: SocketAddrV4, first: u16, n: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut ok = 0;
    for i in 0..n {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
        let local = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, first + i as u16));
        bind(fd.as_raw_fd(), &local).unwrap();
        if connect(fd.as_raw_fd(), &SockaddrIn::from(to)).is_ok() {
            ok += 1;
        }
    }
    (ok, started.elapsed())
}

/// Connection attempts answered by a reset (nothing listens), each to its own port from
/// `ports.0`, from source ports `ports.1..`; (refused, elapsed).
fn refused_connects(to: Ipv4Addr, ports: (u16, u16), n: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut refused = 0;
    for i in 0..n as u16 {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
        let local = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, ports.1 + i));
        bind(fd.as_raw_fd(), &local).unwrap();
        let remote = SockaddrIn::from(SocketAddrV4::new(to, ports.0 + i));
        if connect(fd.as_raw_fd(), &remote) == Err(nix::errno::Errno::ECONNREFUSED) {
            refused += 1;
        }
    }
    (refused, started.elapsed())
}

/// The first destination port of the rate bench's new-key connections.
const NEW_KEYS_FROM: u16 = 20_000;

fn connection_rate() {
    const PER_SAMPLE: usize = 1500;
    const ROUNDS: usize = 11;
    println!("== new outbound TCP connections/s through the cell ({PER_SAMPLE} sequential connect+close per sample, every 4-tuple new, {ROUNDS} interleaved rounds)");
    println!("load average at start: {}", support::machine::loadavg());
    let cell = ns("asgr");
    let internet = ns("asgi");
    cell.sysctl("net.ipv4.ip_forward", "1").unwrap();
    sh(
        &cell,
        &[
            "ip",
            "link",
            "add",
            "wan0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &internet.name,
        ],
    );
    sh(
        &cell,
        &["ip", "addr", "add", "198.51.100.1/24", "dev", "wan0"],
    );
    sh(&cell, &["ip", "link", "set", "wan0", "up"]);
    sh(
        &internet,
        &["ip", "addr", "add", "198.51.100.2/24", "dev", "eth0"],
    );
    sh(&internet, &["ip", "link", "set", "eth0", "up"]);
    sh(
        &internet,
        &["ip", "route", "add", "10.255.0.0/16", "via", "198.51.100.1"],
    );
    // Two clients: the baseline (staging: 1 global group + 1 space group) and the big one
    // (running: 13,500 groups, the allowing rule in its space's layer, so both take the same
    // lookups: deny set, global layer, space layer).
    let clients: Vec<(NamedNetns, Ipv4Addr)> = [2u8, 3]
        .iter()
        .map(|k| {
            let c = ns("asgk");
            let ip = Ipv4Addr::new(10, 255, 1, *k);
            let host_if = format!("k{k}");
            sh(
                &cell,
                &[
                    "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns",
                    &c.name,
                ],
            );
            sh(
                &cell,
                &["ip", "addr", "add", "169.254.0.1/32", "dev", &host_if],
            );
            sh(&cell, &["ip", "link", "set", &host_if, "up"]);
            sh(
                &cell,
                &["ip", "route", "add", &format!("{ip}/32"), "dev", &host_if],
            );
            sh(
                &c,
                &["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
            );
            sh(&c, &["ip", "link", "set", "eth0", "up"]);
            sh(
                &c,
                &[
                    "ip",
                    "route",
                    "add",
                    "169.254.0.1",
                    "dev",
                    "eth0",
                    "scope",
                    "link",
                ],
            );
            sh(
                &c,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    "169.254.0.1",
                    "dev",
                    "eth0",
                    "src",
                    &ip.to_string(),
                ],
            );
            (c, ip)
        })
        .collect();
    let server = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 8080);
    let listener = netman::netns::run_in(&internet.path(), move || TcpListener::bind(server))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s)
        }
    });

    let allow =
        json!([{"protocol": "tcp", "destination": "198.51.100.2", "ports": "8080"}]).to_string();
    let mut gs = groups(13_500);
    let mut stage_global = groups(1).remove(0);
    stage_global.guid = "sg".into();
    stage_global.running_default = false;
    stage_global.staging_default = true;
    stage_global.running_space_guids.clear();
    let mut stage_space = stage_global.clone();
    stage_space.guid = "ss".into();
    stage_space.staging_default = false;
    stage_space.staging_space_guids = vec!["space-b".into()];
    stage_space.rules = allow.clone();
    let mut run_space = stage_space.clone();
    run_space.guid = "rs".into();
    run_space.staging_space_guids.clear();
    run_space.running_space_guids = vec!["space-3".into()];
    // And a port range nothing listens on: each connection there is a new counted key.
    run_space.rules = json!([
        {"protocol": "tcp", "destination": "198.51.100.2", "ports": "8080"},
        {"protocol": "tcp", "destination": "198.51.100.2", "ports": format!("{NEW_KEYS_FROM}-{}", NEW_KEYS_FROM + 40_000)},
    ])
    .to_string();
    gs.extend([stage_global, stage_space, run_space]);
    let mut baseline = Container::for_app("base", clients[0].1, "a");
    baseline
        .metadata
        .insert("space_id".into(), json!("space-b"));
    baseline
        .metadata
        .insert("container_workload".into(), json!("staging"));
    let mut big = Container::for_app("big", clients[1].1, "b");
    big.metadata.insert("space_id".into(), json!("space-3"));
    big.metadata
        .insert("container_workload".into(), json!("app"));
    let c = compile(&gs, &[baseline, big], &settings());
    let nft = libnft_in(&cell);
    nft.run(&render_full(&c.objects)).unwrap();
    // Counters on or off: the `ok` chain with or without its counting statements.
    let ok_on = c.objects.chains["ok"].1.clone();
    let ok_off = without_counters(&c.objects).chains["ok"].1.clone();
    assert_ne!(ok_on, ok_off);
    let set_ok = |rules: &[String]| {
        let mut script = "flush chain ip netman_asg ok\n".to_string();
        for r in rules {
            script.push_str(&format!("add rule ip netman_asg ok {r}\n"));
        }
        nft.run(&script).unwrap();
    };

    let mut next_port = [1024u32; 2];
    let mut sample = |which: usize| -> f64 {
        let first = next_port[which];
        next_port[which] += PER_SAMPLE as u32 + 1;
        assert!(next_port[which] < 65536);
        let (ok, took) = netman::netns::run_in(&clients[which].0.path(), move || {
            connects(server, first as u16, PER_SAMPLE + 1)
        })
        .unwrap();
        assert_eq!(ok, PER_SAMPLE + 1, "every connection is allowed");
        PER_SAMPLE as f64 / took.as_secs_f64()
    };
    // Every connection a new key (the counted set emptied first): the set's insert path.
    let mut next_dport = NEW_KEYS_FROM;
    let mut new_keys = |counters: bool| -> f64 {
        set_ok(if counters { &ok_on } else { &ok_off });
        nft.run("flush set ip netman_asg allowed_counts\n").unwrap();
        let first = next_dport;
        next_dport += PER_SAMPLE as u16;
        let to = *server.ip();
        let (refused, took) = netman::netns::run_in(&clients[1].0.path(), move || {
            refused_connects(to, (first, 10_000), PER_SAMPLE)
        })
        .unwrap();
        assert_eq!(
            refused, PER_SAMPLE,
            "every attempt passes the table and is reset"
        );
        set_ok(&ok_on);
        PER_SAMPLE as f64 / took.as_secs_f64()
    };
    let (mut new_on, mut new_off, mut new_ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (on, off) = if round % 2 == 0 {
            let on = new_keys(true);
            (on, new_keys(false))
        } else {
            let off = new_keys(false);
            (new_keys(true), off)
        };
        new_on.push(on);
        new_off.push(off);
        new_ratio.push(on / off);
    }
    let (mut base, mut many, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut off, mut on_off) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // 13,500 groups with the counting statements out of `ok`: after the two others in
        // even rounds, before them in odd ones.
        let counters_off = |sample: &mut dyn FnMut(usize) -> f64| {
            set_ok(&ok_off);
            let o = sample(1);
            set_ok(&ok_on);
            o
        };
        let (b, m, o) = if round % 2 == 0 {
            let b = sample(0);
            let m = sample(1);
            (b, m, counters_off(&mut sample))
        } else {
            let o = counters_off(&mut sample);
            let m = sample(1);
            (sample(0), m, o)
        };
        base.push(b);
        many.push(m);
        ratios.push(m / b);
        off.push(o);
        on_off.push(m / o);
    }
    println!(
        "1 group: {:.0}/s; 13,500 groups: {:.0}/s; ratio (median of per-round ratios) {:.2}",
        median(base),
        median(many.clone()),
        median(ratios)
    );
    println!(
        "13,500 groups, every attempt a new counted key (reset by the server), counters on: {:.0}/s; off: {:.0}/s; ratio on/off (median of per-round ratios) {:.2} [{:.2}-{:.2}]",
        median(new_on),
        median(new_off),
        median(new_ratio.clone()),
        new_ratio.iter().cloned().fold(f64::MAX, f64::min),
        new_ratio.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "13,500 groups, counters on: {:.0}/s; off: {:.0}/s; ratio on/off (median of per-round ratios) {:.2} [{:.2}-{:.2}]",
        median(many),
        median(off),
        median(on_off.clone()),
        on_off.iter().cloned().fold(f64::MAX, f64::min),
        on_off.iter().cloned().fold(0.0, f64::max)
    );
}

/// The real policy server (SQLite) and a way to write its groups as its syncer does.
struct RealServer {
    server: support::policy_server::PolicyServer,
    store: netman::policy::asg::store::SqlAsgStore,
}

impl RealServer {
    fn start() -> RealServer {
        let server = support::policy_server::PolicyServer::start();
        let db: netman::db::DatabaseConfig =
            serde_json::from_value(server.config["database"].clone()).unwrap();
        let store = netman::policy::asg::store::SqlAsgStore::open(&db).unwrap();
        RealServer { server, store }
    }

    fn internal(&self) -> std::net::SocketAddr {
        self.server
            .internal
            .trim_start_matches("https://")
            .parse()
            .unwrap()
    }

    fn set(&self, groups: &[serde_json::Value]) {
        use netman::policy::asg::store::{AsgStore, SyncMark};
        let groups: Vec<SecurityGroup> = groups
            .iter()
            .map(|g| serde_json::from_value(g.clone()).unwrap())
            .collect();
        self.store.replace(&groups, &SyncMark::default()).unwrap();
    }
}

/// The per-step medians of [`netman::steps::Steps`] lines, in the order steps first appear.
#[derive(Default)]
struct StepTimes {
    order: Vec<String>,
    values: std::collections::HashMap<String, Vec<f64>>,
}

impl StepTimes {
    /// Adds the steps of the line of `text` that contains `marker`; false when there is none.
    fn add(&mut self, text: &str, marker: &str) -> bool {
        let Some(steps) = text
            .lines()
            .find(|l| l.contains(marker))
            .and_then(netman::steps::parse)
        else {
            return false;
        };
        for (name, v) in steps {
            if !self.values.contains_key(&name) {
                self.order.push(name.clone());
            }
            self.values.entry(name).or_default().push(v);
        }
        true
    }

    /// `step median`, with `(in k of n)` for a step only some runs had (e.g. a fetch).
    fn line(&self) -> String {
        let runs = self.values.get("total").map_or(0, Vec::len);
        self.order
            .iter()
            .map(|n| {
                let v = &self.values[n];
                let some = if v.len() < runs {
                    format!(" (in {} of {runs})", v.len())
                } else {
                    String::new()
                };
                format!("{n} {:.1}{some}", median(v.clone()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One path's figures: wall-clock times of `up` and `down` (one networker process each) and the
/// networker's own per-step breakdown of each.
#[derive(Default)]
struct UpDown {
    up: Vec<f64>,
    down: Vec<f64>,
    both: Vec<f64>,
    up_steps: StepTimes,
    down_steps: StepTimes,
}

impl UpDown {
    fn print(&self, label: &str) {
        println!(
            "{label}: up+down median {:.1} ms, p99 {:.1} ms; up median {:.1} ms; down median {:.1} ms",
            median(self.both.clone()),
            percentile(self.both.clone(), 0.99),
            median(self.up.clone()),
            median(self.down.clone()),
        );
        println!(
            "  up steps (networker, medians, ms): {}",
            self.up_steps.line()
        );
        println!(
            "  down steps (networker, medians, ms; rules_in_parallel runs beside the others): {}",
            self.down_steps.line()
        );
    }
}

/// Container up + down as garden runs it, the agent owning egress, against the static path in
/// the same run. What is timed is the networker alone: each iteration's container (a namespace
/// with a process in it, garden's part) is started before the clock starts and stopped after it
/// ends.
fn up_down() {
    let plugins =
        std::env::var("NETMAN_ASG_UPDOWN_PLUGINS").unwrap_or_else(|_| "overlay,bridge".into());
    for p in plugins.split(',') {
        match p.trim() {
            "overlay" => up_down_with(Plugin::Overlay, "netman overlay"),
            "bridge" => up_down_with(Plugin::Bridge, "bridge + host-local"),
            other => {
                panic!("unknown plugin {other:?} in NETMAN_ASG_UPDOWN_PLUGINS (overlay, bridge)")
            }
        }
    }
}

fn up_down_with(plugin: Plugin, plugin_name: &str) {
    const N: usize = 40;
    println!("== container up + down (garden-external-networker, one process per action, CNI {plugin_name}, 2 port mappings): the agent owning egress (1 global group of 10 rules) vs the static netout path (10 rules, no policy_agent_asg_url) in the same run, {N} each, interleaved, beside one container that stays up on each cell; container start not timed");
    println!("load average at start: {}", support::machine::loadavg());
    let ten = |i: usize| format!("10.200.0.{}", i + 1);
    let group_rules: Vec<serde_json::Value> = (0..10)
        .map(|i| json!({"protocol": "tcp", "destination": ten(i), "ports": format!("443-{}", 443 + i % 3)}))
        .collect();
    let netout: Vec<serde_json::Value> = (0..10)
        .map(|i| fixture::tcp_rule(&ten(i), &ten(i), 443, 443 + (i % 3) as u16, false))
        .collect();
    let real = RealServer::start();
    real.set(&[global("ten", json!(group_rules), true, true)]);
    let agent_cell =
        AsgCell::with_plugin(plugin, &real.server.certs, real.internal(), true, |_| {});
    let static_cell = Cell::new(plugin);
    for cell in [&agent_cell.net, &static_cell] {
        let mut config = cell.config.clone();
        config["log_level"] = json!("info");
        std::fs::write(&cell.config_path, config.to_string()).unwrap();
    }
    let cells = [(&agent_cell.net, "agent"), (&static_cell, "static")];
    // A container that stays up on each cell, as on a real cell, where the one that goes is
    // rarely the last of its rule set (the last one also drops the rule set's chain).
    let keepers: Vec<fixture::Container> = cells
        .iter()
        .map(|(cell, tag)| {
            let c = fixture::Container::start();
            let input = up_input(c.pid(), &[(0, 8080)], json!(netout));
            let up = cell.run(
                &["--action", "up", "--handle", &format!("{tag}-keeper")],
                &input.to_string(),
            );
            assert!(up.ok, "up {tag}-keeper: {}", up.stderr);
            c
        })
        .collect();
    let mut runs = [UpDown::default(), UpDown::default()];
    for i in 0..=N {
        for ((cell, tag), run) in cells.iter().zip(runs.iter_mut()) {
            let c = fixture::Container::start();
            let input = up_input(c.pid(), &[(0, 8080), (0, 9090)], json!(netout));
            let h = format!("{tag}{i}");
            let t0 = Instant::now();
            let up = cell.run(&["--action", "up", "--handle", &h], &input.to_string());
            let t1 = Instant::now();
            assert!(
                up.ok,
                "up {h}: {}\nagent: {}",
                up.stderr,
                agent_cell.agent_log()
            );
            let down = cell.run(&["--action", "down", "--handle", &h], "");
            let t2 = Instant::now();
            assert!(down.ok, "down {h}: {}", down.stderr);
            drop(c);
            if i == 0 {
                continue; // warm-up (creates the bridge of bridge + host-local)
            }
            run.up.push(ms(t1 - t0));
            run.down.push(ms(t2 - t1));
            run.both.push(ms(t2 - t0));
            assert!(
                run.up_steps.add(&up.stderr, &format!("up {h}: total")),
                "{}",
                up.stderr
            );
            assert!(
                run.down_steps
                    .add(&down.stderr, &format!("down {h}: total")),
                "{}",
                down.stderr
            );
        }
    }
    println!("load average at end: {}", support::machine::loadavg());
    for (cell, tag) in &cells {
        let down = cell.run(
            &["--action", "down", "--handle", &format!("{tag}-keeper")],
            "",
        );
        assert!(down.ok, "down {tag}-keeper: {}", down.stderr);
    }
    drop(keepers);
    let [agent, fixed] = &runs;
    agent.print("agent owns egress");
    let log = agent_cell.agent_log();
    let (mut force, mut cleanup) = (StepTimes::default(), StepTimes::default());
    for i in 1..=N {
        force.add(&log, &format!("force-asgs-for-container agent{i}: "));
        cleanup.add(&log, &format!("force-orphaned-asgs-cleanup agent{i}: "));
    }
    println!(
        "  agent, /force-asgs-for-container (medians, ms): {}",
        force.line()
    );
    println!(
        "  agent, /force-orphaned-asgs-cleanup (medians, ms): {}",
        cleanup.line()
    );
    fixed.print("static netout path");
    println!(
        "ratio of up+down medians, agent / static: {:.2}",
        median(agent.both.clone()) / median(fixed.both.clone())
    );
}

fn propagation() {
    const N: usize = 20;
    println!("== propagation: bind / unbind through the real policy server's admin API -> first allowed / first refused connection on 2 cells, {N} of each (probe every 10 ms)");
    for watch in [true, false] {
        propagation_with(N, watch);
    }
}

/// A connection from the namespace at `path` to `host:port` that answers "ok". A SYN that gets
/// no answer is not retried: the kernel would resend it only after its 1 s initial timeout, and
/// that second would be the probe's, not the propagation's (the tests' probe waits 1.5 s).
fn quick_tcp(path: &Path, host: &str, port: u16) -> bool {
    use std::io::Read;
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().unwrap();
    netman::netns::run_in(path, move || {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))
        else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).is_ok() && buf == "ok"
    })
    .unwrap()
}

/// `n` binds and unbinds, cells with the watch (`watch`) or polling the version every second.
fn propagation_with(n: usize, watch: bool) {
    let real = RealServer::start();
    let mut cells: Vec<AsgCell> = (0..2)
        .map(|_| {
            AsgCell::new(&real.server.certs, real.internal(), true, |c| {
                c["asg_poll_interval_seconds"] = json!(3600);
                c["poll_interval_seconds"] = json!(1);
                c["policy_watch"] = json!(watch);
            })
        })
        .collect();
    for c in &mut cells {
        c.net.internet_tcp(&[443]);
    }
    let apps: Vec<_> = cells
        .iter()
        .map(|c| c.up("app", "space-1", "app", json!([])))
        .collect();
    let rules = json!([{"protocol": "tcp", "destination": NET_A, "ports": "443"}]);
    let (mut allow_t, mut refuse_t) = (Vec::new(), Vec::new());
    let first = |want: bool, path: &Path| -> f64 {
        let t = Instant::now();
        while quick_tcp(path, NET_A, 443) != want {
            assert!(t.elapsed() < Duration::from_secs(30), "never {want}");
            std::thread::sleep(Duration::from_millis(10));
        }
        ms(t.elapsed())
    };
    let api = "/networking/v1/external/security_groups";
    let admin = support::policy_server::ADMIN_TOKEN;
    let token = Some(admin);
    let (status, body) = real.server.post(
        api,
        token,
        &json!({"name": "db", "rules": rules}).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let guid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let spaces = format!("{api}/{guid}/relationships/running_spaces");
    for _ in 0..n {
        let t = Instant::now();
        let (status, body) = real.server.post(
            &spaces,
            token,
            &json!({"data": [{"guid": "space-1"}]}).to_string(),
        );
        assert_eq!(status, 200, "bind: {body}");
        for app in &apps {
            let _ = first(true, &app.ns.path());
            allow_t.push(ms(t.elapsed()));
        }
        let t = Instant::now();
        let resp = real
            .server
            .client()
            .delete(format!("{}{spaces}/space-1", real.server.external))
            .header("authorization", format!("Bearer {admin}"))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "unbind");
        for app in &apps {
            let _ = first(false, &app.ns.path());
            refuse_t.push(ms(t.elapsed()));
        }
    }
    println!(
        "{}: first allowed p50 {:.0} ms, p99 {:.0} ms; first refused p50 {:.0} ms, p99 {:.0} ms",
        if watch {
            "watch (default)"
        } else {
            "version polled every 1 s"
        },
        median(allow_t.clone()),
        percentile(allow_t, 0.99),
        median(refuse_t.clone()),
        percentile(refuse_t, 0.99)
    );
}

/// The periodic sync with nothing changed: refetched groups (equal values, new allocations)
/// compiled through the cache, diffed (nothing to apply) and the kernel's table checked, against
/// the whole-table rewrite of earlier versions; medians of 5, interleaved.
fn periodic() {
    println!("== periodic sync, nothing changed, one cell, 100 containers in 20 spaces, groups of 10 rules");
    let spaces: Vec<String> = (0..20).map(|i| format!("space-{i}")).collect();
    let conts = containers(100);
    for (label, all) in [
        ("worst case, 13,500 groups all on the cell", groups(13_500)),
        (
            "spread, 13,500 groups over 5,000 spaces",
            groups_spread(13_500),
        ),
    ] {
        let cell = ns("asgp");
        let nft = std::sync::Arc::new(libnft_in(&cell));
        let mut cache = Cache::default();
        let installed = compile_with(&mut cache, &for_cell(&all, &spaces), &conts, &settings());
        nft.run(&render_full(&installed.objects)).unwrap();
        let (mut rewrite, mut sync, mut check) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            let t = Instant::now();
            nft.run(&render_full(&installed.objects)).unwrap();
            rewrite.push(ms(t.elapsed()));

            let fetched = for_cell(&all, &spaces);
            let t = Instant::now();
            let again = compile_with(&mut cache, &fetched, &conts, &settings());
            assert!(render_diff(&installed.objects, &again.objects).is_none());
            let compiled = t.elapsed();
            // The rules are counted over nfnetlink in the calling thread's namespace.
            let (nft, objects) = (std::sync::Arc::clone(&nft), again.objects.clone());
            let (d, checked) = netman::netns::run_in(&cell.path(), move || {
                let t = Instant::now();
                (drift::check(nft.as_ref(), &objects), t.elapsed())
            })
            .unwrap();
            let d = d.unwrap();
            assert!(d.is_empty(), "{d:?}");
            check.push(ms(checked));
            sync.push(ms(compiled + checked));
        }
        let (rewrite, sync) = (median(rewrite), median(sync));
        println!(
            "{label} ({} elements): whole rewrite {rewrite:.0} ms; compile + diff + check {sync:.1} ms (check alone {:.1} ms); ratio {:.3}  (medians of 5)",
            installed.objects.element_count(),
            median(check),
            sync / rewrite
        );
    }
}

fn main() {
    let parts = std::env::var("NETMAN_ASG_BENCH")
        .unwrap_or_else(|_| "compile,rate,updown,propagation,periodic".into());
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for part in parts.split(',') {
        match part {
            "compile" => compile_and_apply(),
            "rate" => connection_rate(),
            "updown" => up_down(),
            "propagation" => propagation(),
            "periodic" => periodic(),
            other => panic!("unknown part {other}"),
        }
    }
}
