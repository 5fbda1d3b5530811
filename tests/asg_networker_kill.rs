//! Issue 18 item 2 where issue 14's agent owns egress: `kill -9` of the networker at random
//! points of `up` and of `down` never leaves a container with an address that reaches what a
//! complete container of its space is refused (a cell service, a host no group allows), and a
//! second `down` leaves the cell and the agent's table as they were. Runs with each CNI plugin
//! chain (netman's overlay, whose DEL retires the veth pair, and bridge + host-local).

mod support;
use serde_json::json;
use support::asg_cell::*;
use support::kill_loop::*;
use support::networker_fixture::{tcp_server, Container, Plugin, NET_A, NET_B, PLUGINS};
use support::original_wire::{rsa_pki, FakeOriginalServer, RsaPki};

const ROUNDS: usize = 24;

#[test]
fn kill_9_of_the_networker_with_the_agent_owning_egress_never_leaves_a_half_open_container() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    for &plugin in PLUGINS {
        kill_loop(plugin, &pki, &server);
    }
}

/// The test above on a cell with the given CNI plugin chain.
fn kill_loop(plugin: Plugin, pki: &RsaPki, server: &FakeOriginalServer) {
    let mut cell = AsgCell::with_plugin(plugin, pki, server.addr, true, |_| {});
    cell.net.internet_tcp(&[8005]);
    set_groups(
        server,
        &[group(
            "web",
            json!([{"protocol": "tcp", "destination": NET_A, "ports": "8005"}]),
            &["space-1"],
            &[],
        )],
    );
    let service_port = 2399;
    let _service = tcp_server(&cell.net.cell.path(), ([0, 0, 0, 0], service_port).into());
    let service = format!("{}:{service_port}", plugin.gateway());

    // A complete container of the space: the group's host only; no cell service, no other host.
    let complete = cell.up("complete", "space-1", "app", json!([]));
    let c = complete.ns.path();
    let on_the_cell = support::networker_fixture::tcp_probe(&cell.net.cell.path(), &service);
    assert!(
        on_the_cell.is_ok(),
        "{plugin:?}: the cell service answers on the cell itself (its gateway address is up now), so a refusal below means the guard: {on_the_cell:?}"
    );
    eventually("the group applies", true, || tcp(&c, NET_A, 8005), &cell);
    assert!(!tcp(&c, NET_B, 8005));
    assert!(support::networker_fixture::tcp_probe(&c, &service).is_err());
    let before = (cell.net.iptables_save(), blocks(&cell.asg_table()));

    let mut rng = Rng::seeded();
    let mut half_made = 0;
    for round in 0..ROUNDS {
        let k = Container::start();
        let handle = format!("kill-{round}");
        let input = json!({
            "Pid": k.pid(),
            "Properties": {"app_id": "app-1", "space_id": "space-1", "policy_group_id": "app-1",
                           "container_workload": "app"},
            "netin": [],
            "netout_rules": [],
        });
        let mut child = cell.net.spawn(
            &["--action", "up", "--handle", &handle],
            &input.to_string(),
            &[("NETMAN_TEST_RUN", &handle)],
        );
        let delay = kill_during_up(&mut child, &handle, &k.ns.path(), round, 40_000, &mut rng);
        if has_ipv4(&k.ns) {
            let finished = cell.net.store().get(&handle).is_some();
            half_made += usize::from(!finished);
            let kp = k.ns.path();
            assert!(
                support::networker_fixture::tcp_probe(&kp, &service).is_err(),
                "{plugin:?} round {round} (killed at {delay}, up finished: {finished}): the cell service\n{}",
                cell.net.iptables_save()
            );
            assert!(
                !tcp(&kp, NET_B, 8005),
                "{plugin:?} round {round} (killed at {delay}, up finished: {finished}): a host no \
                 group allows\n{}",
                cell.asg_table()
            );
        }
        cell.net.down(&handle).unwrap();
    }
    eprintln!("{plugin:?}: {half_made} of {ROUNDS} kills left a container with an address before up finished");
    assert!(
        half_made >= 3,
        "the kills must land between the address and the end of up"
    );

    // `down` killed at a random point: a container that kept its address is still denied.
    let mut still_addressed = 0;
    for round in 0..ROUNDS / 3 {
        let handle = format!("killdown-{round}");
        let k = cell.up(&handle, "space-1", "app", json!([]));
        let delay = kill_down(&cell.net, &handle, 20_000, &mut rng);
        if has_ipv4(&k.ns) {
            still_addressed += 1;
            let kp = k.ns.path();
            assert!(
                support::networker_fixture::tcp_probe(&kp, &service).is_err()
                    && !tcp(&kp, NET_B, 8005),
                "{plugin:?} down round {round} (killed after {delay} us): the container got out"
            );
        }
        cell.net.down(&handle).unwrap();
    }
    eprintln!(
        "{plugin:?}: {still_addressed} of {} killed downs left the address",
        ROUNDS / 3
    );
    assert_eq!(
        (cell.net.iptables_save(), blocks(&cell.asg_table())),
        before,
        "{plugin:?}: a second down leaves the cell's rules and the agent's table as they were"
    );
}

/// The table's sets, maps and chains, sorted: a chain re-created by an apply is listed elsewhere.
/// The table's blocks, sorted, without what traffic changes (counter values, counted elements):
/// the loop's probes are counted.
fn blocks(table: &str) -> Vec<String> {
    let table = without_counts(table);
    let mut blocks: Vec<String> = table.split("\n\n").map(|b| b.trim().to_string()).collect();
    blocks.sort();
    blocks
}
