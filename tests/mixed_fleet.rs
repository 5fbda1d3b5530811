//! Mixed fleets during a switch (issue 19): cells still running the original Go
//! vxlan-policy-agent talk to netman's policy server. The client here speaks exactly as that agent
//! does (`tests/support/original_wire.rs`): TLS 1.2 with its cipher suites and curve, an RSA
//! client certificate from a BOSH-style PKI, and Go's HTTP/1.1 requests on one kept-alive
//! connection, decoding the answers the way Go's encoding/json does.

mod support;
use original_wire::{go_agent_tls, go_field, rsa_pki, GoAgent};
use policy_server::{v1_body, PolicyServer, ADMIN_TOKEN};
use serde_json::json;
use support::{original_wire, policy_server};

/// A netman policy server whose internal API uses the RSA certificates of a cf deployment.
fn server_with_rsa_pki() -> (PolicyServer, original_wire::RsaPki, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = rsa_pki(dir.path());
    let (ca, cert, key) = (pki.ca.clone(), pki.server.0.clone(), pki.server.1.clone());
    let server = PolicyServer::start_with(move |config, _| {
        config["ca_cert_file"] = json!(ca);
        config["server_cert_file"] = json!(cert);
        config["server_key_file"] = json!(key);
    });
    (server, pki, dir)
}

fn internal_addr(server: &PolicyServer) -> String {
    server.internal.trim_start_matches("https://").to_string()
}

/// The policies of an answer as the Go agent decodes them: (source id, source tag, destination
/// id, destination tag, protocol, start, end), sorted.
fn go_policies(
    body: &serde_json::Value,
) -> Vec<(String, String, String, String, String, i64, i64)> {
    let s = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap().to_string();
    let mut out: Vec<_> = go_field(body, "policies")
        .and_then(|p| p.as_array())
        .expect("policies")
        .iter()
        .map(|p| {
            let src = go_field(p, "source").unwrap();
            let dst = go_field(p, "destination").unwrap();
            let ports = go_field(dst, "ports").unwrap();
            (
                s(go_field(src, "id")),
                s(go_field(src, "tag")),
                s(go_field(dst, "id")),
                s(go_field(dst, "tag")),
                s(go_field(dst, "protocol")),
                go_field(ports, "start").unwrap().as_i64().unwrap(),
                go_field(ports, "end").unwrap().as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_original_agents_requests_are_served_by_netman() {
    let (server, pki, _dir) = server_with_rsa_pki();
    let (status, body) = server.post(
        "/networking/v1/external/policies",
        Some(ADMIN_TOKEN),
        &v1_body(&[
            ("app-a", "app-b", "tcp", 8080, 8080),
            ("app-c", "app-a", "udp", 53, 60),
            ("app-d", "app-e", "tcp", 443, 443),
        ]),
    );
    assert_eq!(status, 200, "{body}");

    let tls = go_agent_tls(&pki.ca, &pki.client.0, &pki.client.1);
    let mut agent = GoAgent::connect(&internal_addr(&server), tls.clone());

    // Start-up: every policy must be readable, or the original agent exits.
    let all = agent.request("GET", "/networking/v1/internal/policies", None);
    assert_eq!(all.status, 200, "{}", all.text());
    let (version, suite) = agent.negotiated();
    assert_eq!(version, "TLSv1_2");
    assert!(suite.contains("ECDHE_RSA_WITH_AES_"), "{suite}");
    let all = go_policies(&all.json());
    assert_eq!(all.len(), 3);
    // The same listing netman's own agents get.
    let netman_agent = netman::http::client::agent(
        &netman::http::client::ClientTls {
            ca_cert_file: Some(pki.ca.to_string_lossy().into()),
            client_cert_file: Some(pki.client.0.to_string_lossy().into()),
            client_key_file: Some(pki.client.1.to_string_lossy().into()),
            skip_verification: false,
        },
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let mut own = netman_agent
        .get(format!(
            "{}/networking/v1/internal/policies",
            server.internal
        ))
        .call()
        .unwrap();
    let own = netman::http::client::body_string(&mut own, 1 << 20).unwrap();
    assert_eq!(go_policies(&serde_json::from_str(&own).unwrap()), all);
    for p in &all {
        assert_eq!(p.1.len(), 4, "tags are four hex digits: {p:?}");
    }

    // The poll: a bare integer of nanoseconds, read into a Go int.
    let last = agent.request("GET", "/networking/v1/internal/policies_last_updated", None);
    assert_eq!(last.status, 200);
    let first: i64 = last.text().trim().parse().expect("a bare integer");
    assert!(first > 1_500_000_000_000_000_000, "nanoseconds: {first}");

    // The full cycle asks for the cell's apps and spaces; policies of either end are returned.
    let some = agent.request(
        "GET",
        "/networking/v1/internal/policies?id=app-a,space-guid-1,app-x",
        None,
    );
    assert_eq!(some.status, 200);
    let some = go_policies(&some.json());
    assert_eq!(
        some.iter()
            .map(|p| (p.0.as_str(), p.2.as_str()))
            .collect::<Vec<_>>(),
        vec![("app-a", "app-b"), ("app-c", "app-a")]
    );
    assert_eq!(some[1].4, "udp");
    assert_eq!((some[1].5, some[1].6), (53, 60));

    // The ingress router's tag, with the capitalised field names Go's json.Marshal writes for
    // the agent's TagRequest struct; a second request gets the same tag.
    let body = br#"{"ID":"INGRESS_ROUTER","Type":"router"}"#;
    let tag = agent.request("PUT", "/networking/v1/internal/tags", Some(body));
    assert_eq!(tag.status, 200, "{}", tag.text());
    let tag = tag.json();
    let router_tag = go_field(&tag, "Tag").unwrap().as_str().unwrap().to_string();
    assert_eq!(go_field(&tag, "ID").unwrap(), "INGRESS_ROUTER");
    assert_eq!(go_field(&tag, "Type").unwrap(), "router");
    assert_eq!(router_tag.len(), 4);
    let again = agent.request("PUT", "/networking/v1/internal/tags", Some(body));
    assert_eq!(go_field(&again.json(), "Tag").unwrap(), router_tag.as_str());
    assert!(all.iter().all(|p| p.1 != router_tag && p.3 != router_tag));

    // A change moves the value the agent polls; it then refetches.
    let (status, _) = server.post(
        "/networking/v1/external/policies",
        Some(ADMIN_TOKEN),
        &v1_body(&[("app-b", "app-a", "tcp", 9000, 9100)]),
    );
    assert_eq!(status, 200);
    let last = agent.request("GET", "/networking/v1/internal/policies_last_updated", None);
    let second: i64 = last.text().trim().parse().unwrap();
    assert!(second > first);

    // The older json_client sent an empty Authorization header with every request.
    agent.empty_authorization = true;
    let with_header = agent.request("GET", "/networking/v1/internal/policies?id=app-b", None);
    assert_eq!(with_header.status, 200, "{}", with_header.text());
    assert_eq!(go_policies(&with_header.json()).len(), 2);

    // A second cell on its own connection, as every cell has one.
    let mut other = GoAgent::connect(&internal_addr(&server), tls);
    let r = other.request("GET", "/networking/v1/internal/policies_last_updated", None);
    assert_eq!(r.text().trim().parse::<i64>().unwrap(), second);
}

#[test]
fn an_agent_without_the_deployments_client_certificate_is_refused() {
    let (server, pki, dir) = server_with_rsa_pki();
    // A certificate from another CA, in the same RSA form.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = rsa_pki(&other_dir);
    let tls = go_agent_tls(&pki.ca, &other.client.0, &other.client.1);
    let tcp = std::net::TcpStream::connect(internal_addr(&server)).unwrap();
    let conn = rustls::ClientConnection::new(
        tls,
        rustls::pki_types::ServerName::try_from(original_wire::SERVER_NAME).unwrap(),
    )
    .unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    use std::io::{Read, Write};
    let _ = stream.write_all(b"GET /networking/v1/internal/policies HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let read = stream.read_to_end(&mut buf);
    assert!(
        read.is_err() || !String::from_utf8_lossy(&buf).contains("200 OK"),
        "a foreign client certificate got an answer"
    );
}
