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
