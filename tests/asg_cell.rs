//! Dynamic ASGs on the cell (issue 14): the real networker (garden's plugin, CNI `bridge` +
//! `host-local`) and the real vxlan-policy-agent inside cell namespaces, containers sending real
//! packets to an "internet" namespace, the security groups served over the internal API's wire
//! (mutual TLS) by a policy server whose groups the test changes.

mod support;
use serde_json::{json, Value};
use std::time::Duration;
use support::asg_cell::*;
use support::networker_fixture::{udp_probe, Container, NET_A, NET_B, NET_C};
use support::original_wire::{rsa_pki, FakeOriginalServer};
use support::wait_for;

#[test]
fn bind_edit_unbind_delete_and_global_groups_are_enforced_for_running_and_staging() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    let mut cell = AsgCell::new(&pki, server.addr, true, |_| {});
    cell.net.internet_tcp(&[80, 443, 8080]);
    cell.net.internet_udp(&[53]);

    // Nothing bound: the app can reach nothing outside, and the networker made no NetOut chain.
    let app = cell.up("app1", "space-1", "app", json!([]));
    let stager = cell.up("stage1", "space-1", "staging", json!([]));
    let (a, s) = (app.ns.path(), stager.ns.path());
    assert!(!tcp(&a, NET_A, 80));
    assert!(
        !cell.net.iptables_save().contains("netout--app1"),
        "{}",
        cell.net.iptables_save()
    );

    // Bound to the space for running: "80, 443" allows both ports, only to that host.
    set_groups(
        &server,
        &[group(
            "web",
            json!([{"protocol": "tcp", "destination": NET_A, "ports": "80, 443"}]),
            &["space-1"],
            &[],
        )],
    );
    eventually("bind: 80", true, || tcp(&a, NET_A, 80), &cell);
    assert!(tcp(&a, NET_A, 443), "the second port of \"80, 443\"");
    assert!(!tcp(&a, NET_A, 8080));
    assert!(!tcp(&a, NET_B, 80));
    assert!(
        !tcp(&s, NET_A, 80),
        "a running group does not apply to staging"
    );

    // Edited: a range of hosts and another port; the old rule is gone.
    set_groups(
        &server,
        &[group(
            "web",
            json!([{"protocol": "tcp", "destination": format!("{NET_A}-{NET_B}"), "ports": "8080"}]),
            &["space-1"],
            &[],
        )],
    );
    eventually("edit: new range", true, || tcp(&a, NET_B, 8080), &cell);
    assert!(tcp(&a, NET_A, 8080));
    assert!(!tcp(&a, NET_A, 80), "the edited-away port");

    // Globally enabled for staging: the stager can, the app still only what its space has.
    set_groups(
        &server,
        &[
            group(
                "web",
                json!([{"protocol": "tcp", "destination": format!("{NET_A}-{NET_B}"), "ports": "8080"}]),
                &["space-1"],
                &[],
            ),
            global(
                "stage",
                json!([{"protocol": "tcp", "destination": format!("{NET_A},{NET_B}"), "ports": "443"}]),
                false,
                true,
            ),
        ],
    );
    eventually("global staging", true, || tcp(&s, NET_B, 443), &cell);
    assert!(tcp(&s, NET_A, 443), "comma list");
    assert!(!tcp(&a, NET_B, 443));

    // Unbound from the space: new connections refused again; deleting the global group too.
    set_groups(
        &server,
        &[global(
            "stage",
            json!([{"protocol": "tcp", "destination": format!("{NET_A},{NET_B}"), "ports": "443"}]),
            false,
            true,
        )],
    );
    eventually("unbind", false, || tcp(&a, NET_A, 8080), &cell);
    set_groups(&server, &[]);
    eventually("delete", false, || tcp(&s, NET_A, 443), &cell);

    // Global for running, protocol all to everything: the deny network still wins.
    set_groups(
        &server,
        &[global(
            "open",
            json!([{"protocol": "all", "destination": "0.0.0.0/0"}]),
            true,
            false,
        )],
    );
    eventually("global running", true, || tcp(&a, NET_B, 80), &cell);
    assert!(
        udp_probe(&a, &format!("{NET_A}:53")).is_ok(),
        "all includes udp"
    );
    assert!(!tcp(&a, NET_C, 80), "deny_networks beat allows");
    assert!(!tcp(&s, NET_B, 80), "running only");

    // A task counts as running; a container made after the change holds its rules at once.
    let (task, ip) = cell.up_with_ip("task1", "space-9", "task", json!([]));
    assert!(
        tcp(&task.ns.path(), NET_A, 80),
        "first connection of a new container"
    );
    assert!(
        cell.asg_table().contains(&format!("{ip} : jump rs_r")),
        "{}",
        cell.asg_table()
    );

    // down leaves no egress entry behind, and no chain of the container.
    cell.net.down("task1").unwrap();
    assert!(
        !cell.asg_table().contains(&format!("{ip} :")),
        "{}",
        cell.asg_table()
    );
    assert!(!cell.net.iptables_save().contains("task1"));
}

#[test]
fn icmp_types_udp_and_logged_rules() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    let mut cell = AsgCell::new(&pki, server.addr, true, |_| {});
    cell.net.internet_udp(&[53]);
    let app = cell.up("app1", "space-1", "app", json!([]));
    let a = app.ns.path();
    let ping = |host: &str| support::networker_fixture::ping(&app.ns, host);
    assert!(!ping(NET_A));

    // ICMP echo request only (type 8 code 0): ping works; an unrelated type does not open it.
    set_groups(
        &server,
        &[group(
            "icmp",
            json!([{"protocol": "icmp", "destination": NET_A, "type": 8, "code": 0},
                   {"protocol": "icmp", "destination": NET_B, "type": 13, "code": -1},
                   {"protocol": "udp", "destination": NET_A, "ports": "53", "log": true}]),
            &["space-1"],
            &[],
        )],
    );
    eventually("icmp 8/0", true, || ping(NET_A), &cell);
    assert!(!ping(NET_B), "type 13 does not allow echo");
    assert!(udp_probe(&a, &format!("{NET_A}:53")).is_ok());
    assert!(udp_probe(&a, &format!("{NET_B}:53")).is_err());
    // The logged rule names its group and index in the NFLOG prefix.
    let table = cell.asg_table();
    assert!(table.contains("log prefix \"ASG_OK icmp 2\""), "{table}");

    // Type any (-1): every ICMP type.
    set_groups(
        &server,
        &[group(
            "icmp",
            json!([{"protocol": "icmp", "destination": NET_B, "type": -1, "code": -1}]),
            &["space-1"],
            &[],
        )],
    );
    eventually("icmp any", true, || ping(NET_B), &cell);
    assert!(!ping(NET_A));
}

#[test]
fn with_syncing_disabled_the_agent_answers_405_and_the_networker_keeps_the_static_path() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    set_groups(
        &server,
        &[global(
            "open",
            json!([{"protocol": "all", "destination": "0.0.0.0/0"}]),
            true,
            true,
        )],
    );
    let mut cell = AsgCell::new(&pki, server.addr, false, |_| {});
    cell.net.internet_tcp(&[80]);
    assert_eq!(
        cell.http("/force-asgs-for-container?container=x"),
        (
            405,
            "ASG syncing has been disabled administratively".to_string()
        )
    );
    assert_eq!(cell.http("/force-orphaned-asgs-cleanup?container=x").0, 405);
    let rule = json!({"protocol": 1, "networks": [{"start": NET_A, "end": NET_A}], "ports": [{"start": 80, "end": 80}]});
    let app = cell.up("app1", "space-1", "app", json!([rule]));
    let a = app.ns.path();
    assert!(tcp(&a, NET_A, 80), "the static rule");
    assert!(
        !tcp(&a, NET_B, 80),
        "the group is not enforced: syncing is off"
    );
    assert!(cell.net.iptables_save().contains("netout--app1"));
    assert_eq!(cell.asg_table(), "", "no ASG table with syncing off");
    cell.net.down("app1").unwrap();
}

#[test]
fn force_endpoints_answer_as_the_original_and_a_failed_agent_fails_the_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    let mut cell = AsgCell::new(&pki, server.addr, true, |_| {});
    assert_eq!(cell.http("/force-asgs-for-container").0, 400);
    assert_eq!(
        cell.http("/force-asgs-for-container?container=").1,
        "no container specified"
    );
    let (status, body) = cell.http("/force-asgs-for-container?container=ghost");
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with("failed to update asgs for container ghost: "),
        "{body}"
    );
    let app = cell.up("app1", "space-1", "app", json!([]));
    assert_eq!(
        cell.http("/force-asgs-for-container?container=app1"),
        (200, "updated container app1".into())
    );
    cell.net.down("app1").unwrap();
    drop(app);
    assert_eq!(
        cell.http("/force-orphaned-asgs-cleanup?container=app1"),
        (200, "cleaned up ASGs for container app1".into())
    );

    // No agent listening while the networker expects one: the up fails and leaves nothing.
    cell.agent.take();
    let c = Container::start();
    let input = json!({"Pid": c.pid(), "Properties": {"space_id": "space-1", "container_workload": "app"}, "netin": [], "netout_rules": []});
    let err = cell.net.up("app2", &input).unwrap_err();
    assert!(err.contains("asg sync"), "{err}");
    assert_eq!(cell.net.store(), json!({}));
    assert!(
        cell.net.leftover_files().is_empty(),
        "{:?}",
        cell.net.leftover_files()
    );
}

/// `n` groups of 10 tcp rules each, globally enabled for running, each rule to a host of its
/// own in 10.`base`.0.0/16 (none of them the test's internet hosts).
fn many_groups(prefix: &str, base: u8, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let rules: Vec<Value> = (0..10)
                .map(|r| {
                    let k = i * 10 + r;
                    let host = format!("10.{base}.{}.{}", k / 250, (k % 250) + 1);
                    json!({"protocol": "tcp", "destination": host, "ports": format!("{}", 1000 + r * 7 + i % 5)})
                })
                .collect();
            global(&format!("{prefix}{i}"), json!(rules), true, false)
        })
        .collect()
}

/// `nft list table` output with each host class number (`0x…` as a host map's value, and the
/// keys of `host_classes`) replaced by the class chain it names: the agent numbers classes in
/// the order they came and went, so equal tables from different histories differ in numbers only.
fn by_class_name(listing: &str) -> String {
    let number_at = |i: usize| -> Option<&str> {
        let n = listing.get(i..i + 10)?;
        (n.starts_with("0x") && n[2..].bytes().all(|b| b.is_ascii_hexdigit())).then_some(n)
    };
    let mut chains = std::collections::HashMap::new();
    for (i, _) in listing.match_indices("0x") {
        if let (Some(n), Some(rest)) = (number_at(i), listing.get(i + 10..)) {
            if let Some(rest) = rest.strip_prefix(" : jump ") {
                let end = rest.find([',', ' ', '\n', '}']).unwrap_or(rest.len());
                chains.insert(n, &rest[..end]);
            }
        }
    }
    let mut out = String::with_capacity(listing.len());
    let mut classes: Vec<&str> = chains.values().copied().collect();
    classes.sort_unstable();
    let mut in_classes = false;
    for line in listing.split_inclusive('\n') {
        if line.trim_start().starts_with("map host_classes") {
            in_classes = true;
            out.push_str(&format!("map host_classes: {classes:?}\n"));
        }
        if in_classes {
            in_classes = line.trim() != "}";
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find(": 0x") {
            out.push_str(&rest[..at + 2]);
            let n = &rest[at + 2..(at + 12).min(rest.len())];
            out.push_str(chains.get(n).copied().unwrap_or(n));
            rest = &rest[(at + 12).min(rest.len())..];
        }
        out.push_str(rest);
    }
    out
}

#[test]
fn an_agent_killed_mid_apply_leaves_the_old_or_the_new_complete_table() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    let mut old = many_groups("old", 20, 1500);
    old.push(global(
        "a",
        json!([{"protocol": "tcp", "destination": NET_A, "ports": "80"}]),
        true,
        false,
    ));
    let mut new = many_groups("new", 21, 1500);
    new.push(global(
        "b",
        json!([{"protocol": "tcp", "destination": NET_B, "ports": "80"}]),
        true,
        false,
    ));
    set_groups(&server, &old);
    let mut cell = AsgCell::new(&pki, server.addr, true, |_| {});
    cell.net.internet_tcp(&[80]);
    let app = cell.up("app1", "space-1", "app", json!([]));
    let a = app.ns.path();
    let listing = |cell: &AsgCell| by_class_name(&without_counts(&cell.asg_table()));
    let settle = |cell: &AsgCell, want: &str| {
        wait_for(Duration::from_secs(20), true, || listing(cell) == want).is_ok()
    };
    eventually("old state", true, || tcp(&a, NET_A, 80), &cell);
    let l_old = listing(&cell);
    set_groups(&server, &new);
    let change = eventually("new state", true, || tcp(&a, NET_B, 80), &cell);
    std::thread::sleep(Duration::from_millis(300));
    let l_new = listing(&cell);
    assert_ne!(l_old, l_new);
    assert!(l_new.len() > 100_000, "a big table: {} bytes", l_new.len());

    let (mut saw_old, mut saw_new) = (0, 0);
    let rounds = 10u32;
    for round in 0..rounds {
        // From the old state, switch the server to the new one and kill the agent while it
        // fetches, compiles or applies (incremental on even rounds, a fresh start on odd ones).
        set_groups(&server, &old);
        assert!(
            settle(&cell, &l_old),
            "round {round}: back to the old state"
        );
        if round % 2 == 1 {
            cell.agent.take();
        }
        set_groups(&server, &new);
        if round % 2 == 1 {
            cell.start_agent();
        }
        // Kill points spread over the time a change takes (and a little past it).
        std::thread::sleep(change * 6 * round / (5 * (rounds - 1)));
        cell.agent.take();
        let now = listing(&cell);
        if now == l_old {
            saw_old += 1;
        } else if now == l_new {
            saw_new += 1;
        } else {
            panic!("round {round}: the table is neither the old nor the new state");
        }
        // Either way the container's traffic follows exactly one of them.
        assert_ne!(tcp(&a, NET_A, 80), tcp(&a, NET_B, 80), "round {round}");
        cell.start_agent();
    }
    eprintln!(
        "killed mid-change: old state kept {saw_old} times, new state complete {saw_new} times"
    );
}

/// A first apply (no table filtering yet) is two transactions: the table made dormant, then its
/// big maps filled and the table woken. An agent killed at any point of it leaves no filtering
/// table (absent or dormant: the container's new egress is refused, as before the start) or the
/// complete one, and the next start completes it.
#[test]
fn an_agent_killed_during_its_first_apply_leaves_nothing_filtering_or_the_complete_table() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    let mut groups = many_groups("g", 20, 1500);
    groups.push(global(
        "a",
        json!([{"protocol": "tcp", "destination": NET_A, "ports": "80"}]),
        true,
        false,
    ));
    set_groups(&server, &groups);
    let mut cell = AsgCell::new(&pki, server.addr, true, |_| {});
    cell.net.internet_tcp(&[80]);
    let app = cell.up("app1", "space-1", "app", json!([]));
    let a = app.ns.path();
    let listing = |cell: &AsgCell| by_class_name(&without_counts(&cell.asg_table()));
    eventually("first apply", true, || tcp(&a, NET_A, 80), &cell);
    std::thread::sleep(Duration::from_millis(300));
    let complete = listing(&cell);
    assert!(
        complete.len() > 100_000,
        "a big table: {} bytes",
        complete.len()
    );
    assert!(!complete.contains("dormant"));
    let delete_table = |cell: &AsgCell| {
        cell.net
            .cell
            .exec(&["nft", "delete", "table", "ip", "netman_asg"])
            .unwrap();
    };
    // How long a first apply takes from the agent's start.
    cell.agent.take();
    delete_table(&cell);
    cell.start_agent();
    let t = std::time::Instant::now();
    eventually("first apply again", true, || tcp(&a, NET_A, 80), &cell);
    let first = t.elapsed().max(Duration::from_millis(50));

    let (mut nothing, mut dormant, mut whole) = (0, 0, 0);
    let rounds = 8u32;
    for round in 0..rounds {
        cell.agent.take();
        delete_table(&cell);
        cell.start_agent();
        // Kill points spread over the time the first apply took (and a little past it).
        std::thread::sleep(first * 6 * round / (5 * (rounds - 1)));
        cell.agent.take();
        let table = cell.asg_table();
        if table.is_empty() {
            nothing += 1;
        } else if table.contains("flags dormant") {
            dormant += 1;
        } else {
            assert_eq!(
                listing(&cell),
                complete,
                "round {round}: a filtering table that is not the complete one"
            );
            whole += 1;
        }
        assert_eq!(
            tcp(&a, NET_A, 80),
            !table.is_empty() && !table.contains("flags dormant"),
            "round {round}: egress follows the table"
        );
        cell.start_agent();
        eventually(
            &format!("round {round}: completed"),
            true,
            || tcp(&a, NET_A, 80),
            &cell,
        );
        assert!(
            wait_for(Duration::from_secs(20), true, || listing(&cell) == complete).is_ok(),
            "round {round}: the next start completes the table"
        );
    }
    eprintln!(
        "killed during a first apply: no table {nothing}, dormant {dormant}, complete {whole}"
    );

    // The state between the two transactions, made on purpose (a kill lands in it rarely): a
    // dormant table filters nothing, so the guard refuses the container's new egress, and the
    // next start replaces it with the complete table.
    cell.agent.take();
    let mut dormant_args = vec!["nft"];
    dormant_args.extend(MAKE_DORMANT);
    cell.net.cell.exec(&dormant_args).unwrap();
    assert!(cell.asg_table().contains("flags dormant"));
    assert!(!tcp(&a, NET_A, 80), "a dormant table lets nothing out");
    cell.start_agent();
    eventually(
        "the dormant table replaced",
        true,
        || tcp(&a, NET_A, 80),
        &cell,
    );
    assert!(
        wait_for(Duration::from_secs(20), true, || listing(&cell) == complete).is_ok(),
        "the dormant table replaced by the complete one"
    );
}

#[test]
fn a_bind_and_an_unbind_reach_two_cells() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    let mut cells: Vec<AsgCell> = (0..2)
        .map(|_| AsgCell::new(&pki, server.addr, true, |_| {}))
        .collect();
    for c in &mut cells {
        c.net.internet_tcp(&[443]);
    }
    let apps: Vec<Container> = cells
        .iter()
        .map(|c| c.up("app1", "space-7", "app", json!([])))
        .collect();
    let bound = json!([{"protocol": "tcp", "destination": "198.51.100.0/24", "ports": "443"}]);
    set_groups(&server, &[group("g", bound.clone(), &["space-7"], &[])]);
    for (c, app) in cells.iter().zip(&apps) {
        eventually(
            "bind on every cell",
            true,
            || tcp(&app.ns.path(), NET_A, 443),
            c,
        );
    }
    set_groups(&server, &[group("g", bound, &["space-8"], &[])]);
    for (c, app) in cells.iter().zip(&apps) {
        eventually(
            "unbind on every cell",
            false,
            || tcp(&app.ns.path(), NET_A, 443),
            c,
        );
    }
}

/// The agent's count of security-group fetches (`vpa_asg_poll_duration_seconds_count{op="groups"}`,
/// every outcome).
fn fetches(cell: &AsgCell) -> u64 {
    poll_count(cell, "groups")
}

/// `vpa_asg_poll_duration_seconds_count{op}` of the cell's agent.
fn poll_count(cell: &AsgCell, op: &str) -> u64 {
    cell.metric_sum(
        "vpa_asg_poll_duration_seconds_count",
        &format!("op=\"{op}\""),
    )
}

/// The real policy server (its internal API over mutual TLS, SQLite), a way to write its groups
/// as its syncer does from another process (one replacing transaction, the version moved), and
/// its internal address.
fn real_server() -> (
    support::policy_server::PolicyServer,
    impl Fn(&[Value]),
    std::net::SocketAddr,
) {
    use netman::policy::asg::store::{AsgStore, SqlAsgStore, SyncMark};
    let server = support::policy_server::PolicyServer::start();
    let db: netman::db::DatabaseConfig =
        serde_json::from_value(server.config["database"].clone()).unwrap();
    let store = SqlAsgStore::open(&db).unwrap();
    let write = move |groups: &[Value]| {
        let groups: Vec<netman::api::security_groups::SecurityGroup> = groups
            .iter()
            .map(|g| serde_json::from_value(g.clone()).unwrap())
            .collect();
        store.replace(&groups, &SyncMark::default()).unwrap();
    };
    let internal = server
        .internal
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    (server, write, internal)
}

/// Without the watch (`policy_watch: false`) the agents check the version every second and
/// fetch only after it moved.
#[test]
fn with_the_real_policy_server_cells_fetch_only_after_a_change() {
    let (_server, write, internal) = real_server();
    let mut cells: Vec<AsgCell> = (0..2)
        .map(|_| {
            AsgCell::new(&_server.certs, internal, true, |c| {
                // Only the version check may trigger a fetch.
                c["asg_poll_interval_seconds"] = json!(3600);
                c["policy_watch"] = json!(false);
            })
        })
        .collect();
    for c in &mut cells {
        c.net.internet_tcp(&[5432]);
    }
    let apps: Vec<Container> = cells
        .iter()
        .map(|c| c.up("app1", "space-1", "app", json!([])))
        .collect();
    for app in &apps {
        assert!(!tcp(&app.ns.path(), NET_A, 5432), "nothing bound yet");
    }
    let db_group = group(
        "db",
        json!([{"protocol": "tcp", "destination": NET_A, "ports": "5432"}]),
        &["space-1"],
        &[],
    );
    write(std::slice::from_ref(&db_group));
    for (c, app) in cells.iter().zip(&apps) {
        eventually(
            "bound through the real server",
            true,
            || tcp(&app.ns.path(), NET_A, 5432),
            c,
        );
    }
    // Idle: version checks only, no fetch.
    let before: Vec<u64> = cells.iter().map(fetches).collect();
    assert!(before.iter().all(|n| *n >= 1), "{before:?}");
    std::thread::sleep(Duration::from_secs(3));
    let idle: Vec<u64> = cells.iter().map(fetches).collect();
    assert_eq!(before, idle, "no fetch without a change");
    // Unbound: refused on both cells, after one more fetch each.
    let mut unbound = db_group.clone();
    unbound["running_space_guids"] = json!([]);
    write(&[unbound]);
    for (c, app) in cells.iter().zip(&apps) {
        eventually(
            "unbound through the real server",
            false,
            || tcp(&app.ns.path(), NET_A, 5432),
            c,
        );
    }
    let after: Vec<u64> = cells.iter().map(fetches).collect();
    for (a, b) in after.iter().zip(&before) {
        assert!(*a > *b, "fetched after the change: {after:?} vs {before:?}");
    }
}

/// With the watch (the default) a change reaches the cells at once: their poll interval and
/// full sync are an hour, so only the held `security_groups_last_updated?wait=&after=` can bring
/// it. A bind through the admin API (the server wakes its own watches) and an unbind written to
/// the database by another process (seen by the server's version check) each reach both cells,
/// with one fetch each and no version polling.
#[test]
fn with_the_watch_a_change_reaches_the_cells_without_waiting_for_their_poll_interval() {
    use support::policy_server::ADMIN_TOKEN;
    let (server, write, internal) = real_server();
    let mut cells: Vec<AsgCell> = (0..2)
        .map(|_| {
            AsgCell::new(&server.certs, internal, true, |c| {
                c["poll_interval_seconds"] = json!(3600);
                c["asg_poll_interval_seconds"] = json!(3600);
                c["policy_watch_seconds"] = json!(300);
            })
        })
        .collect();
    for c in &mut cells {
        c.net.internet_tcp(&[443]);
    }
    let apps: Vec<Container> = cells
        .iter()
        .map(|c| c.up("app1", "space-1", "app", json!([])))
        .collect();
    for app in &apps {
        assert!(!tcp(&app.ns.path(), NET_A, 443), "nothing bound yet");
    }
    let before: Vec<u64> = cells.iter().map(fetches).collect();
    let checks_before: Vec<u64> = cells.iter().map(version_checks).collect();

    let api = "/networking/v1/external/security_groups";
    let rules = json!([{"protocol": "tcp", "destination": NET_A, "ports": "443"}]);
    let (status, body) = server.post(
        api,
        Some(ADMIN_TOKEN),
        &json!({"name": "web", "rules": rules}).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let guid = serde_json::from_str::<Value>(&body).unwrap()["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = server.post(
        &format!("{api}/{guid}/relationships/running_spaces"),
        Some(ADMIN_TOKEN),
        &json!({"data": [{"guid": "space-1"}]}).to_string(),
    );
    assert_eq!(status, 200, "bind: {body}");
    for (c, app) in cells.iter().zip(&apps) {
        eventually(
            "a bind through the admin API, through the watch",
            true,
            || tcp(&app.ns.path(), NET_A, 443),
            c,
        );
    }

    let mut unbound = group("web", rules, &[], &[]);
    unbound["guid"] = json!(guid);
    write(&[unbound]);
    for (c, app) in cells.iter().zip(&apps) {
        eventually(
            "an unbind by another process, through the watch",
            false,
            || tcp(&app.ns.path(), NET_A, 443),
            c,
        );
    }
    let after: Vec<u64> = cells.iter().map(fetches).collect();
    let checks_after: Vec<u64> = cells.iter().map(version_checks).collect();
    for (c, (a, b)) in cells.iter().zip(after.iter().zip(&before)) {
        // The bind and the unbind at least; the create, the bind and the unbind at most.
        assert!(
            *a >= *b + 2 && *a <= *b + 3,
            "fetches {after:?} vs {before:?}\n{}",
            c.agent_log()
        );
    }
    assert_eq!(
        checks_after, checks_before,
        "the loop asked no version meanwhile: the watch told it"
    );
}

/// While the agent holds the security-groups watch, the force calls of a container's `up` and
/// `down` ask the policy server nothing (the watch would have ended on a change): each container
/// still gets the groups in force before `up` returns and leaves the table before `down` returns.
#[test]
fn while_the_watch_holds_up_and_down_ask_the_policy_server_nothing() {
    let (server, write, internal) = real_server();
    write(&[global(
        "web",
        json!([{"protocol": "tcp", "destination": NET_A, "ports": "443"}]),
        true,
        false,
    )]);
    let mut cell = AsgCell::new(&server.certs, internal, true, |c| {
        c["asg_poll_interval_seconds"] = json!(3600);
    });
    cell.net.internet_tcp(&[443]);
    // The loop's first cycle (then its watch) and a first container's.
    let polled = wait_for(Duration::from_secs(10), true, || {
        poll_count(&cell, "cycle") >= 1
    });
    assert!(polled.is_ok(), "no ASG cycle: {}", cell.agent_log());
    let warm = cell.up("app0", "space-1", "app", json!([]));
    cell.net.down("app0").unwrap();
    drop(warm);
    let before = (version_checks(&cell), fetches(&cell));
    for i in 1..=3 {
        let handle = format!("app{i}");
        let (app, ip) = cell.up_with_ip(&handle, "space-1", "app", json!([]));
        let element = format!("{ip} : jump");
        assert!(cell.asg_table().contains(&element), "{}", cell.asg_table());
        assert!(
            tcp(&app.ns.path(), NET_A, 443),
            "the global group holds for {handle}"
        );
        cell.net.down(&handle).unwrap();
        assert!(!cell.asg_table().contains(&element), "{}", cell.asg_table());
    }
    assert_eq!(
        (version_checks(&cell), fetches(&cell)),
        before,
        "(version requests, fetches)\n{}",
        cell.agent_log()
    );
}

/// The agent's count of plain version requests (`vpa_asg_poll_duration_seconds_count{op="version"}`).
fn version_checks(cell: &AsgCell) -> u64 {
    poll_count(cell, "version")
}
