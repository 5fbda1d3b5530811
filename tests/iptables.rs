//! The shared iptables layer against the real kernel, inside namespaces created here.

use netman::iptables::*;
use netman::lab::netns::NamedNetns;
use netman::netns;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static N: AtomicU32 = AtomicU32::new(0);

fn ns() -> NamedNetns {
    NamedNetns::create(&format!(
        "nmipt{}x{}",
        std::process::id() % 100000,
        N.fetch_add(1, Ordering::SeqCst)
    ))
    .unwrap()
}

fn chain(n: &str) -> Chain {
    Chain::new(n).unwrap()
}

fn in_ns<T: Send + 'static>(ns: &NamedNetns, f: impl FnOnce() -> T + Send + 'static) -> T {
    netns::run_in(&ns.path(), f).unwrap()
}

fn ipt(dir: &tempfile::TempDir) -> Iptables {
    Iptables::new(&dir.path().join("iptables.lock"))
}

#[test]
fn applies_lists_swaps_and_removes() {
    let n = ns();
    let dir = tempfile::tempdir().unwrap();
    let i = ipt(&dir);
    let mark_rule = |tag: u32| {
        Rule::new(Target::SetMark {
            value: tag,
            mask: 0xffffffff,
        })
        .source(host(Ipv4Addr::new(10, 255, 0, 2)))
        .comment(Text::new("comment", &format!("src:app {tag} \"quoted\""), 256).unwrap())
    };
    let i2 = i.clone();
    let state = in_ns(&n, move || {
        let mut b = Batch::new();
        b.create_chain(
            Table::Filter,
            &chain("vpa--1"),
            &[mark_rule(1), mark_rule(2)],
            &Chain::forward(),
            Rule::new(Target::Jump(chain("vpa--1"))),
            Position::First,
        );
        i2.apply(&b).unwrap();
        i2.list(Table::Filter).unwrap()
    });
    assert!(state.has_chain("vpa--1"));
    let rules: Vec<_> = state.rules_of("vpa--1").collect();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].comment(), Some("src:app 1 \"quoted\""));
    assert_eq!(state.jumps_with_prefix("FORWARD", "vpa--").count(), 1);

    // Make-before-break: new chain + jump at position 1, old one removed, in one transaction.
    let i2 = i.clone();
    let state = in_ns(&n, move || {
        let lock = i2.lock().unwrap();
        let s = lock.list(Table::Filter).unwrap();
        let mut b = Batch::new();
        b.swap_chain(
            &s,
            &Chain::forward(),
            &chain("vpa--2"),
            &[mark_rule(3)],
            Rule::new(Target::Jump(chain("vpa--2"))),
            &[chain("vpa--1")],
        );
        lock.apply(&b).unwrap();
        lock.list(Table::Filter).unwrap()
    });
    assert!(!state.has_chain("vpa--1"));
    assert_eq!(state.rules_of("vpa--2").count(), 1);
    let fwd: Vec<_> = state.rules_of("FORWARD").collect();
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].jump_target(), Some("vpa--2"));

    // Removal is idempotent.
    let i2 = i.clone();
    let text = in_ns(&n, move || {
        for _ in 0..2 {
            let s = i2.list(Table::Filter).unwrap();
            let mut b = Batch::new();
            b.remove_chains(&s, &[chain("vpa--2")]);
            i2.apply(&b).unwrap();
        }
        i2.list(Table::Filter).unwrap()
    });
    assert!(text.rules.is_empty());
    assert_eq!(text.chains, vec!["INPUT", "FORWARD", "OUTPUT"]);
}

#[test]
fn a_failing_table_names_the_line_and_changes_nothing_in_it() {
    let n = ns();
    let dir = tempfile::tempdir().unwrap();
    let i = ipt(&dir);
    let err = in_ns(&n, move || {
        let mut b = Batch::new();
        b.push(Table::Filter, Op::NewChain(chain("good")));
        b.push(
            Table::Filter,
            Op::Append(chain("missing"), Rule::new(Target::Accept)),
        );
        let e = i.apply(&b).unwrap_err();
        (e, i.list(Table::Filter).unwrap())
    });
    assert!(
        err.0.to_string().contains("[line: -A missing -j ACCEPT]"),
        "{}",
        err.0
    );
    assert!(
        matches!(&err.0, Error::Restore { table: Some(t), line: Some(l), .. }
            if t == "filter" && l == "-A missing -j ACCEPT"),
        "{:?}",
        err.0
    );
    assert!(
        !err.1.has_chain("good"),
        "the whole table batch is one transaction"
    );
}

#[test]
fn every_target_and_match_is_accepted_by_the_kernel() {
    let n = ns();
    let dir = tempfile::tempdir().unwrap();
    let i = ipt(&dir);
    let ip = Ipv4Addr::new(10, 0, 0, 2);
    let c = chain("all-shapes");
    let filter_rules = vec![
        Rule::new(Target::Reject(RejectWith::TcpReset)).protocol(Protocol::Tcp),
        Rule::new(Target::Drop)
            .with(Match::SourceRange(IpRange::new(ip, ip).unwrap()))
            .protocol(Protocol::Udp)
            .with(Match::SourcePort(PortRange::new(1, 2).unwrap())),
        Rule::new(Target::Return)
            .with(Match::InInterface(InterfaceName::new("eth0").unwrap()))
            .with(Match::OutInterface {
                name: InterfaceName::new("vtep").unwrap(),
                negate: true,
            }),
        Rule::new(Target::Nflog {
            group: 3,
            prefix: Text::new("prefix", "DENY_x y", 63).unwrap(),
        })
        .with(Match::Limit {
            rate: Rate::per_minute(2).unwrap(),
            burst: 5,
        }),
        Rule::new(Target::Reject(RejectWith::IcmpPortUnreachable))
            .protocol(Protocol::Tcp)
            .ctstate(&[CtState::New])
            .with(Match::HashLimitAbove {
                rate: Rate::per_second(100).unwrap(),
                burst: 1000,
                name: Text::new("name", "h1", 15).unwrap(),
                expire_ms: 10000,
            }),
        Rule::new(Target::Accept)
            .protocol(Protocol::Icmp)
            .with(Match::Icmp(IcmpType {
                kind: 8,
                code: None,
            })),
        Rule::new(Target::Accept).with(Match::Mark {
            value: 0xc,
            mask: Some(0xffff),
            negate: false,
        }),
        Rule::new(Target::Goto(chain("all-shapes-2"))),
    ];
    let state = in_ns(&n, move || {
        let mut b = Batch::new();
        b.push(Table::Filter, Op::NewChain(chain("all-shapes-2")));
        b.push(Table::Filter, Op::NewChain(c.clone()));
        b.append_rules(Table::Filter, &c, &filter_rules);
        b.push(Table::Nat, Op::NewChain(c.clone()));
        b.append_rules(
            Table::Nat,
            &c,
            &[
                Rule::new(Target::Masquerade).not_destination("10.255.0.0/16".parse().unwrap()),
                Rule::new(Target::Dnat { ip, port: None }),
            ],
        );
        b.push(
            Table::Mangle,
            Op::Append(
                Chain::prerouting(),
                Rule::new(Target::SetMark {
                    value: 0xffff0000,
                    mask: 0xffffffff,
                }),
            ),
        );
        i.apply(&b).unwrap();
        (
            i.list(Table::Filter).unwrap(),
            i.list(Table::Nat).unwrap(),
            i.list(Table::Mangle).unwrap(),
        )
    });
    assert_eq!(state.0.rules_of("all-shapes").count(), 8);
    assert_eq!(state.1.rules_of("all-shapes").count(), 2);
    assert_eq!(state.2.rules_of("PREROUTING").count(), 1);
}

#[test]
fn apply_waits_for_the_shared_lock_file() {
    let n = ns();
    let dir = tempfile::tempdir().unwrap();
    let lock_path: PathBuf = dir.path().join("iptables.lock");
    std::fs::write(&lock_path, "").unwrap();
    // Another netman process holds the lock.
    // (`cat` holds no copy of the lock fd thanks to -o; closing its stdin ends both.)
    let mut holder = Command::new("flock")
        .args(["-x", "-o"])
        .arg(&lock_path)
        .arg("cat")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let i = Iptables::new(&lock_path);
    let (tx, rx) = std::sync::mpsc::channel();
    let path = n.path();
    let worker = std::thread::spawn(move || {
        let r = netns::run_in(&path, move || {
            let mut b = Batch::new();
            b.push(Table::Filter, Op::NewChain(chain("after-lock")));
            i.apply(&b)
        });
        tx.send(r).unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        rx.try_recv().is_err(),
        "apply must wait while another process holds the lock"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    rx.recv().unwrap().unwrap().unwrap();
    worker.join().unwrap();
    assert!(n
        .exec(&["iptables-save", "-t", "filter"])
        .unwrap()
        .contains(":after-lock"));
}

/// A container's chains in nat and filter, hooked into built-in chains the way the networker
/// hooks them (one hooked twice, by a jump and by a goto).
fn container_chains(i: &Iptables, h: &str, last_octet: u8) {
    let ip = host(Ipv4Addr::new(10, 255, 0, last_octet));
    let mut b = Batch::new();
    b.create_chain(
        Table::Nat,
        &chain(&format!("netin--{h}")),
        &[Rule::new(Target::Dnat {
            ip: Ipv4Addr::new(10, 255, 0, last_octet),
            port: Some(8080),
        })
        .protocol(Protocol::Tcp)
        .with(Match::DestinationPort(PortRange::single(61000).unwrap()))],
        &Chain::prerouting(),
        Rule::new(Target::Jump(chain(&format!("netin--{h}")))),
        Position::Last,
    );
    b.create_chain(
        Table::Filter,
        &chain(&format!("input--{h}")),
        &[Rule::new(Target::Reject(RejectWith::IcmpPortUnreachable))
            .comment(Text::new("comment", &format!("input of {h}"), 256).unwrap())],
        &Chain::input(),
        Rule::new(Target::Jump(chain(&format!("input--{h}")))).source(ip),
        Position::Last,
    );
    b.create_chain(
        Table::Filter,
        &chain(&format!("overlay--{h}")),
        &[Rule::new(Target::Accept)],
        &Chain::forward(),
        Rule::new(Target::Jump(chain(&format!("overlay--{h}")))),
        Position::First,
    );
    b.add_jump(
        Table::Filter,
        &Chain::forward(),
        Rule::new(Target::Goto(chain(&format!("overlay--{h}")))).source(ip),
        Position::Last,
    );
    i.apply(&b).unwrap();
}

fn removal_of(h: &str) -> Vec<netlink_removal::ChainRemoval> {
    vec![
        netlink_removal::ChainRemoval {
            table: Table::Nat,
            chains: vec![chain(&format!("netin--{h}")), chain(&format!("masq--{h}"))],
            parents: vec![Chain::prerouting(), Chain::postrouting()],
        },
        netlink_removal::ChainRemoval {
            table: Table::Filter,
            chains: vec![
                chain(&format!("input--{h}")),
                chain(&format!("overlay--{h}")),
            ],
            parents: vec![Chain::input(), Chain::forward()],
        },
    ]
}

/// `iptables-save` of nat and filter without counters and comments lines.
fn saved() -> String {
    let out = Command::new("iptables-save").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap().to_string() + "\n")
        .collect()
}

#[test]
fn chains_and_every_jump_to_them_are_removed_over_netlink_and_nothing_else() {
    let n = ns();
    let dir = tempfile::tempdir().unwrap();
    let i = ipt(&dir);
    let (before_b, after, removed, again) = in_ns(&n, move || {
        container_chains(&i, "a", 2);
        container_chains(&i, "b", 3);
        let before_b: Vec<String> = saved()
            .lines()
            .filter(|l| l.contains("--b"))
            .map(str::to_string)
            .collect();
        let removed = i.remove_chains_over_netlink(&removal_of("a")).unwrap();
        let after = saved();
        let again = i.remove_chains_over_netlink(&removal_of("a")).unwrap();
        (before_b, after, removed, again)
    });
    // netin, input, overlay existed; masq did not.
    assert_eq!(removed, 3);
    assert!(!after.contains("--a"), "{after}");
    let after_b: Vec<&str> = after.lines().filter(|l| l.contains("--b")).collect();
    assert_eq!(after_b, before_b, "{after}");
    assert_eq!(again, 0, "a second removal finds nothing");
}

#[test]
fn a_chain_still_jumped_to_from_elsewhere_is_refused_and_nothing_changes() {
    let n = ns();
    let dir = tempfile::tempdir().unwrap();
    let i = ipt(&dir);
    let (before, result, after) = in_ns(&n, move || {
        container_chains(&i, "a", 2);
        let mut b = Batch::new();
        b.create_chain(
            Table::Filter,
            &chain("elsewhere"),
            &[Rule::new(Target::Jump(chain("input--a")))],
            &Chain::output(),
            Rule::new(Target::Jump(chain("elsewhere"))),
            Position::Last,
        );
        i.apply(&b).unwrap();
        let before = saved();
        let result = i.remove_chains_over_netlink(&removal_of("a"));
        (before, result, saved())
    });
    match result {
        Err(Error::Netlink(e)) => {
            assert_eq!(e.errno, Some(16), "EBUSY: {e}");
            assert!(e.to_string().contains("input--a"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(after, before, "the refused transaction changed nothing");
}
