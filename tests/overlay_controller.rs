//! The lease controller binary over mutual TLS: API shapes, conflicts, concurrency, expiry and
//! reclaim, metrics, config checks.

mod support;

use netman::http::client::{agent, body_string, ClientTls};
use netman::netns::run_in;
use std::collections::HashSet;
use std::time::Duration;
use support::overlay::*;

fn tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> ClientTls {
    ClientTls {
        ca_cert_file: Some(ca.to_str().unwrap().into()),
        client_cert_file: Some(cert.to_str().unwrap().into()),
        client_key_file: Some(key.to_str().unwrap().into()),
        skip_verification: false,
    }
}

/// One call from inside the underlay namespace: (status, body) or a transport error.
fn call(
    lab: &Lab,
    tls: &ClientTls,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, String), String> {
    let tls = tls.clone();
    let url = format!("https://{CONTROLLER_IP}:4103{path}");
    let method = method.to_string();
    run_in(&lab.underlay.path(), move || {
        let a = agent(&tls, Duration::from_secs(5))?;
        let r = match (method.as_str(), body) {
            ("PUT", Some(b)) => a.put(&url).send(b.to_string().as_bytes()),
            ("PUT", None) => a.put(&url).send(&b"{not json"[..]),
            _ => a.get(&url).call(),
        };
        let mut r = r.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, body_string(&mut r, 1 << 22)?))
    })?
}

fn debug_get(lab: &Lab, path: &str) -> String {
    let url = format!("http://127.0.0.1:46455{path}");
    run_in(&lab.underlay.path(), move || {
        let a = agent(&ClientTls::default(), Duration::from_secs(5)).unwrap();
        let mut r = a.get(&url).call().unwrap();
        body_string(&mut r, 1 << 20).unwrap()
    })
    .unwrap()
}

fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in {text}"))
}

#[test]
fn lease_api_over_mtls() {
    let lab = Lab::new(LabOptions {
        cells: 0,
        lease_expiration_seconds: 15,
        ..Default::default()
    });
    let c = &lab.certs;
    let good = tls(&c.client.0, &c.client.1, &c.ca);
    // Without a client certificate, or with one from another CA, the handshake fails.
    let no_cert = ClientTls {
        ca_cert_file: Some(c.ca.to_str().unwrap().into()),
        ..Default::default()
    };
    assert!(call(&lab, &no_cert, "GET", "/leases", None).is_err());
    assert!(call(
        &lab,
        &tls(&c.other_client.0, &c.other_client.1, &c.ca),
        "GET",
        "/leases",
        None
    )
    .is_err());

    let (s, body) = call(
        &lab,
        &good,
        "PUT",
        "/leases/acquire",
        Some(serde_json::json!({"underlay_ip": "10.0.0.1"})),
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
    let lease: serde_json::Value = serde_json::from_str(&body).unwrap();
    let subnet: ipnet::Ipv4Net = lease["overlay_subnet"].as_str().unwrap().parse().unwrap();
    assert_eq!(subnet.prefix_len(), 24);
    let o = subnet.network().octets();
    assert_eq!(
        lease["overlay_hardware_addr"],
        format!("ee:ee:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    );
    assert_eq!(lease["underlay_ip"], "10.0.0.1");
    // Same cell again: same lease.
    let (_, again) = call(
        &lab,
        &good,
        "PUT",
        "/leases/acquire",
        Some(serde_json::json!({"underlay_ip": "10.0.0.1"})),
    )
    .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).unwrap(),
        lease
    );
    // Renew: ok; a mismatching lease is 409; garbage is 400; IPv6 acquire is 500.
    assert_eq!(
        call(&lab, &good, "PUT", "/leases/renew", Some(lease.clone())).unwrap(),
        (200, "{}".into())
    );
    let mut wrong = lease.clone();
    wrong["overlay_subnet"] = "10.255.0.0/24".into();
    wrong["overlay_hardware_addr"] = "ee:ee:0a:ff:00:00".into();
    assert_eq!(
        call(&lab, &good, "PUT", "/leases/renew", Some(wrong))
            .unwrap()
            .0,
        409
    );
    assert_eq!(
        call(&lab, &good, "PUT", "/leases/renew", None).unwrap().0,
        400
    );
    assert_eq!(
        call(
            &lab,
            &good,
            "PUT",
            "/leases/acquire",
            Some(serde_json::json!({"underlay_ip": "fe80::1"}))
        )
        .unwrap()
        .0,
        500
    );

    // Concurrent acquisitions from many cells are unique.
    let handles: Vec<_> = (2..42)
        .map(|i| {
            let good = good.clone();
            let lab_ns = lab.underlay.path();
            std::thread::spawn(move || {
                let url = format!("https://{CONTROLLER_IP}:4103/leases/acquire");
                run_in(&lab_ns, move || {
                    let a = agent(&good, Duration::from_secs(10)).unwrap();
                    let body =
                        serde_json::json!({"underlay_ip": format!("10.0.0.{i}")}).to_string();
                    let mut r = a.put(&url).send(body.as_bytes()).unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    let v: serde_json::Value =
                        serde_json::from_str(&body_string(&mut r, 1 << 16).unwrap()).unwrap();
                    v["overlay_subnet"].as_str().unwrap().to_string()
                })
                .unwrap()
            })
        })
        .collect();
    let mut subnets: HashSet<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    subnets.insert(subnet.to_string());
    assert_eq!(subnets.len(), 41);
    assert!(!subnets.contains("10.255.0.0/24"));
    let (s, list) = call(&lab, &good, "GET", "/leases", None).unwrap();
    assert_eq!(s, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["leases"].as_array().unwrap().len(), 41);

    // Fill the pool (255 blocks), then the next is a 409.
    for i in 42..=255 {
        let (s, b) = call(
            &lab,
            &good,
            "PUT",
            "/leases/acquire",
            Some(serde_json::json!({"underlay_ip": format!("10.0.1.{i}")})),
        )
        .unwrap();
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = call(
        &lab,
        &good,
        "PUT",
        "/leases/acquire",
        Some(serde_json::json!({"underlay_ip": "10.0.2.1"})),
    )
    .unwrap();
    assert_eq!((s, b.as_str()), (409, r#"{"error":"no lease available"}"#));
    let m = debug_get(&lab, "/metrics");
    assert_eq!(metric(&m, "overlay_controller_total_leases"), 255);
    assert_eq!(metric(&m, "overlay_controller_free_leases"), 0);
    assert!(debug_get(&lab, "/health").contains("true"));

    // Release frees one; release of an unknown cell is fine.
    assert_eq!(
        call(
            &lab,
            &good,
            "PUT",
            "/leases/release",
            Some(serde_json::json!({"underlay_ip": "10.0.0.1"}))
        )
        .unwrap(),
        (200, "{}".into())
    );
    assert_eq!(
        call(
            &lab,
            &good,
            "PUT",
            "/leases/release",
            Some(serde_json::json!({"underlay_ip": "10.9.9.9"}))
        )
        .unwrap()
        .0,
        200
    );
    assert_eq!(
        metric(
            &debug_get(&lab, "/metrics"),
            "overlay_controller_free_leases"
        ),
        1
    );

    // After expiry nothing is listed, and a full pool hands out a reclaimed subnet.
    std::thread::sleep(Duration::from_secs(16));
    let (_, list) = call(&lab, &good, "GET", "/leases", None).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list).unwrap()["leases"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (s, _) = call(
        &lab,
        &good,
        "PUT",
        "/leases/acquire",
        Some(serde_json::json!({"underlay_ip": "10.0.3.1"})),
    )
    .unwrap();
    assert_eq!(s, 200);
    let (s, b) = call(
        &lab,
        &good,
        "PUT",
        "/leases/acquire",
        Some(serde_json::json!({"underlay_ip": "10.0.3.2"})),
    )
    .unwrap();
    assert_eq!(s, 200, "expired lease reclaimed: {b}");
    let m = debug_get(&lab, "/metrics");
    assert_eq!(metric(&m, "overlay_controller_total_leases"), 255);
}

#[test]
fn bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), &OVERLAY);
    let cfg = dir.path().join("c.json");
    let write = |extra: serde_json::Value| {
        let mut v = serde_json::json!({
            "ca_cert_file": c.ca, "server_cert_file": c.server.0, "server_key_file": c.server.1,
            "database": {"type": "sqlite", "connection_string": dir.path().join("db")},
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        std::fs::write(&cfg, v.to_string()).unwrap();
    };
    let check = || {
        let out = std::process::Command::new(CONTROLLER)
            .args(["--config", cfg.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    write(serde_json::json!({}));
    assert_eq!(check().0, Some(0), "{}", check().1);
    write(serde_json::json!({"subnet_prefix_length": 31}));
    let (code, text) = check();
    assert_eq!(code, Some(2));
    assert!(text.contains("subnet_prefix_length"), "{text}");
    write(serde_json::json!({"network": "10.255.0.1/16"}));
    assert!(check().1.contains("'network'"));
    write(serde_json::json!({"netwrok": "10.255.0.0/16"}));
    assert!(check().1.contains("netwrok"));
    // The database section is the project's one (policy server keys): the old `path` is refused,
    // a postgres section needs its host, and so on.
    write(serde_json::json!({"database": {"type": "sqlite", "path": "/tmp/x.db"}}));
    let (code, text) = check();
    assert_eq!(code, Some(2));
    assert!(text.contains("path"), "{text}");
    write(serde_json::json!({"database": {"type": "postgres", "user": "u", "database_name": "d"}}));
    let (code, text) = check();
    assert_eq!(code, Some(2));
    assert!(text.contains("database.host"), "{text}");
    write(
        serde_json::json!({"database": {"type": "mysql", "host": "db", "user": "u",
        "password": "hunter2", "database_name": "leases", "port": 3307}}),
    );
    assert_eq!(check().0, Some(0), "{}", check().1);
    // The daemon checks its config the same way.
    let dcfg = dir.path().join("d.json");
    std::fs::write(
        &dcfg,
        serde_json::json!({
            "underlay_ip": "10.0.0.1", "controller_url": "http://x:4103",
            "ca_cert_file": c.ca, "client_cert_file": c.client.0, "client_key_file": c.client.1,
        })
        .to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(DAEMON)
        .args(["--config", dcfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("controller_url"));
}
