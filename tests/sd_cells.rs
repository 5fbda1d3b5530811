//! Service discovery end to end in network namespaces: the real policy server (the registry)
//! and a real `netman-dns` on each cell, containers asking their cell's resolver. Needs root.

mod support;
use support::sd::{lookup, Cell, Registry};
use support::wait_until;

use hickory_proto::op::ResponseCode;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(10);

fn answer(ns: &std::path::Path, name: &str) -> Option<Vec<Ipv4Addr>> {
    match lookup(ns, name) {
        Ok((ResponseCode::NoError, ips)) => Some(ips),
        _ => None,
    }
}

fn sorted(mut v: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    v.sort();
    v
}

#[test]
fn names_resolve_across_cells_follow_up_and_down_and_outlive_the_registry() {
    let mut registry = Registry::start(3);
    let cell1 = Cell::start(&registry, 1, 1);
    let mut cell2 = Cell::start(&registry, 2, 1);
    let frontend = cell1.up("frontend-guid", 0);
    let b0 = cell2.up("backend-guid", 0);
    let b1 = cell2.up("backend-guid", 1);
    let b2 = cell1.up("backend-guid", 2);
    let here = frontend.path();

    // Before the route is mapped, the name does not exist.
    wait_until("the first table", WITHIN, || {
        matches!(
            lookup(&here, "backend.apps.internal"),
            Ok((ResponseCode::NXDomain, _))
        )
    });
    registry.map_route("backend-guid", "backend");
    let all = sorted(vec![b0.ip, b1.ip, b2.ip]);
    wait_until("backend resolves to every instance", WITHIN, || {
        answer(&here, "backend.apps.internal") == Some(all.clone())
    });
    // One instance by index, on another cell; an index that does not run is NXDOMAIN.
    assert_eq!(answer(&here, "0.backend.apps.internal"), Some(vec![b0.ip]));
    assert_eq!(answer(&here, "1.backend.apps.internal"), Some(vec![b1.ip]));
    assert_eq!(
        lookup(&here, "7.backend.apps.internal").unwrap().0,
        ResponseCode::NXDomain
    );
    // Unknown names under the domain: NXDOMAIN; names outside: forwarded to the upstream.
    assert_eq!(
        lookup(&here, "nobody.apps.internal").unwrap().0,
        ResponseCode::NXDomain
    );
    assert_eq!(
        answer(&here, "www.example.test"),
        Some(vec![Ipv4Addr::new(192, 0, 2, 1)])
    );
    // The other cell's containers see the same.
    assert_eq!(
        answer(&b0.path(), "backend.apps.internal"),
        Some(all.clone())
    );

    // A container removed is gone at once (within the registrar's check and one watch).
    let started = Instant::now();
    cell2.down(&b1);
    let without_b1 = sorted(vec![b0.ip, b2.ip]);
    wait_until("b1 gone", WITHIN, || {
        answer(&here, "backend.apps.internal") == Some(without_b1.clone())
    });
    let removal = started.elapsed();
    assert_eq!(
        lookup(&here, "1.backend.apps.internal").unwrap().0,
        ResponseCode::NXDomain
    );
    eprintln!("container down to gone on another cell: {removal:?}");

    // The registry killed and restarted: every lookup meanwhile answered from the last table.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (stop, here, want) = (stop.clone(), here.clone(), without_b1.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match lookup(&here, "backend.apps.internal") {
                    Ok((ResponseCode::NoError, ips)) if ips == want => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    registry.kill();
    std::thread::sleep(Duration::from_secs(2));
    registry.spawn();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = prober.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed lookups of {}: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 50, "only {ok} lookups made");
    // And it follows changes again after the restart.
    let b3 = cell1.up("backend-guid", 3);
    let with_b3 = sorted(vec![b0.ip, b2.ip, b3.ip]);
    if let Err(last) =
        support::wait_for(WITHIN, Ok((ResponseCode::NoError, with_b3.clone())), || {
            lookup(&here, "backend.apps.internal")
        })
    {
        panic!(
            "b3 not resolved within {WITHIN:?} after the registry's restart: last answer {last:?}\n\
             cell 1 log:\n{}\nregistry log:\n{}",
            cell1.log(),
            registry.log()
        );
    }

    // A cell that stops reporting (its resolver killed) is removed after the expiry (3 s), not
    // before.
    cell2.kill();
    let killed = Instant::now();
    let only_cell1 = sorted(vec![b2.ip, b3.ip]);
    wait_until("cell 2 expired", WITHIN, || {
        answer(&here, "backend.apps.internal") == Some(only_cell1.clone())
    });
    let expired_after = killed.elapsed();
    assert!(
        expired_after >= Duration::from_secs(2),
        "cell 2 was removed after {expired_after:?}, before its 3 s expiry"
    );
    assert!(
        registry.log().contains("\"cell-2\" sent no refresh"),
        "{}",
        registry.log()
    );
    // Its resolver back: the cell reports again and its instances return.
    cell2.spawn();
    wait_until("cell 2 back", WITHIN, || {
        answer(&here, "backend.apps.internal") == Some(with_b3.clone())
    });
}

#[test]
fn a_restarted_resolver_answers_from_its_snapshot_while_the_registry_is_down() {
    let mut registry = Registry::start(30);
    let mut cell = Cell::start(&registry, 3, 1);
    let c = cell.up("app-guid", 0);
    registry.map_route("app-guid", "app");
    wait_until("app resolves", WITHIN, || {
        answer(&c.path(), "app.apps.internal") == Some(vec![c.ip])
    });
    registry.kill();
    cell.kill();
    cell.spawn();
    // No registry: the snapshot answers at once.
    assert_eq!(answer(&c.path(), "app.apps.internal"), Some(vec![c.ip]));
    assert!(
        cell.log().contains("serving the snapshot"),
        "{}",
        cell.log()
    );
    // Damaged snapshot and no registry: SERVFAIL for internal names (clients retry), never a
    // believable NXDOMAIN; other names are still forwarded.
    cell.kill();
    std::fs::write(
        cell.dir.path().join("dns-snapshot"),
        b"netman-dns-snapshot 1 3 00\nabc",
    )
    .unwrap();
    cell.spawn();
    assert_eq!(
        lookup(&c.path(), "app.apps.internal").unwrap().0,
        ResponseCode::ServFail
    );
    assert!(cell.log().contains("snapshot not used"), "{}", cell.log());
    assert_eq!(
        answer(&c.path(), "www.example.test"),
        Some(vec![Ipv4Addr::new(192, 0, 2, 1)])
    );
    // The registry back: the resolver follows it.
    registry.spawn();
    wait_until("app resolves again", WITHIN, || {
        answer(&c.path(), "app.apps.internal") == Some(vec![c.ip])
    });
}

#[test]
fn a_damaged_container_store_neither_empties_nor_expires_the_cells_entries() {
    let registry = Registry::start(2);
    let cell = Cell::start(&registry, 4, 1);
    let c = cell.up("app-guid", 0);
    registry.map_route("app-guid", "app");
    wait_until("app resolves", WITHIN, || {
        answer(&c.path(), "app.apps.internal") == Some(vec![c.ip])
    });
    let store = cell.dir.path().join("store.json");
    let sound = std::fs::read(&store).unwrap();
    std::fs::write(&store, b"{\"damaged").unwrap();
    // Three expiries: the registrar keeps reporting what it last read soundly.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert_eq!(
            answer(&c.path(), "app.apps.internal"),
            Some(vec![c.ip]),
            "the cell's entry went while its store was damaged: {}",
            registry.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        cell.log().contains("reporting the last sound read"),
        "{}",
        cell.log()
    );
    // Mended: the cell's changes are reported again.
    std::fs::write(&store, sound).unwrap();
    let d = cell.up("app-guid", 1);
    let both = sorted(vec![c.ip, d.ip]);
    wait_until("the new instance", WITHIN, || {
        answer(&c.path(), "app.apps.internal") == Some(both.clone())
    });
}
