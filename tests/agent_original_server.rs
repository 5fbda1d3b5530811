//! Mixed fleets during a switch (issue 19), the other direction: netman's vxlan-policy-agent on
//! a cell whose policy server is still the original (a fake speaking its internal API:
//! `tests/support/original_wire.rs`, RSA certificates of a cf deployment, TLS 1.2 with the Go
//! server's one cipher suite, no route but the original's three). The agent polls
//! `policies_last_updated`, fetches the policies of its apps and enforces them: cells can be
//! switched one at a time, in either order.

mod support;
use lab::{tcp_connect, wait_for, AgentCerts, Conn, Lab, TcpServer};
use original_wire::{rsa_pki, FakeOriginalServer};
use std::time::Duration;
use support::{agent_lab as lab, original_wire};

#[test]
fn netman_agents_enforce_what_an_original_policy_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let server = FakeOriginalServer::start(&pki);
    let certs = AgentCerts {
        ca: pki.ca.clone(),
        cert: pki.client.0.clone(),
        key: pki.client.1.clone(),
    };
    let mut lab = Lab::new(2);
    lab.cell(1).add_container("a", "app-A");
    lab.cell(2).add_container("b", "app-B");
    for i in 1..=2 {
        let cell = lab.cell(i);
        cell.relay_to(server.addr);
        cell.start_agent(&certs, |c| {
            c["poll_interval_seconds"] = serde_json::json!(1);
        });
    }
    for cell in &lab.cells {
        cell.wait_agent_up();
    }
    let (a, b) = (lab.container("a"), lab.container("b"));
    let _listener = TcpServer::start(b, 8080);

    // Nothing allowed yet: default deny.
    assert_ne!(tcp_connect(a, b.ip, 8080), Conn::Ok);

    server
        .state
        .lock()
        .unwrap()
        .set_policies(&[("app-A", "app-B", "tcp", 8080, 8080)]);
    wait_for(Duration::from_secs(30), Conn::Ok, || {
        tcp_connect(a, b.ip, 8080)
    })
    .unwrap_or_else(|got| panic!("the policy was not enforced: {got:?}"));

    server.state.lock().unwrap().set_policies(&[]);
    wait_for(Duration::from_secs(30), Conn::Refused, || {
        tcp_connect(a, b.ip, 8080)
    })
    .unwrap_or_else(|got| panic!("the removal was not enforced: {got:?}"));

    // The agent asked the original's routes; anything else it tried (none today; a watch
    // later) met Go's 404, and polling carried on.
    let requests = server.requests();
    let original = |r: &str| {
        r == "GET /networking/v1/internal/policies_last_updated"
            || r.starts_with("GET /networking/v1/internal/policies?id=")
            || r == "GET /networking/v1/internal/policies"
            || r == "PUT /networking/v1/internal/tags"
    };
    let polls = requests
        .iter()
        .filter(|r| r.as_str() == "GET /networking/v1/internal/policies_last_updated")
        .count();
    assert!(polls >= 2, "the agent polls: {requests:?}");
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /networking/v1/internal/policies?id=")),
        "{requests:?}"
    );
    let others: Vec<&String> = requests.iter().filter(|r| !original(r)).collect();
    eprintln!("requests outside the original's routes (answered 404): {others:?}");
    for cell in &lab.cells {
        let log = cell.agent_log();
        assert!(!log.contains("panicked"), "{log}");
    }
}
