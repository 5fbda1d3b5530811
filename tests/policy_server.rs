//! The real policy-server binary on SQLite with static-token auth and real certificates: every
//! route and filter, validation, scopes, mTLS, tags, headers, limits, concurrency, crash safety.

mod support;
use support::policy_server;

use policy_server::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

const V1: &str = "/networking/v1/external/policies";
const V0: &str = "/networking/v0/external/policies";

fn own(list: &[(&str, &str, &str, i64, i64)]) -> Vec<(String, String, String, i64, i64)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(a, b, c, d, e)| (a.to_string(), b.to_string(), c.to_string(), *d, *e))
        .collect();
    v.sort();
    v
}

#[test]
fn create_list_filter_delete_v1_and_v0() {
    let s = PolicyServer::start();
    let all = [
        ("a", "b", "tcp", 8080, 8080),
        ("a", "c", "udp", 5000, 5010),
        ("c", "b", "tcp", 9000, 9000),
    ];
    let (status, body) = s.post(V1, Some(ADMIN_TOKEN), &v1_body(&all));
    assert_eq!((status, body.as_str()), (200, "{}"));
    // Creating again is idempotent.
    assert_eq!(s.post(V1, Some(ADMIN_TOKEN), &v1_body(&all)).0, 200);

    let (status, body) = s.get(V1, Some(ADMIN_TOKEN));
    assert_eq!(status, 200);
    assert_eq!(policy_rows(&body), own(&all));
    assert!(!body.contains("tag"), "external list shows no tags: {body}");

    let q = |query: &str| policy_rows(&s.get(&format!("{V1}?{query}"), Some(ADMIN_TOKEN)).1);
    assert_eq!(q("id=a"), own(&all[..2]));
    assert_eq!(q("id=b"), own(&[all[0], all[2]]));
    assert_eq!(q("id=x,c"), own(&all[1..]));
    assert_eq!(q("source_id=c"), own(&all[2..]));
    assert_eq!(q("dest_id=b"), own(&[all[0], all[2]]));
    assert_eq!(q("source_id=a&dest_id=c"), own(&all[1..2]));
    assert_eq!(q("source_id=a,c&dest_id=b"), own(&[all[0], all[2]]));
    assert_eq!(q("id=a&id=c"), own(&all[..2]), "only the first id= counts");
    assert_eq!(q("id=nobody"), vec![]);

    // v0 shows single ports only, and counts only what it shows.
    let v0 = parse(&s.get(V0, Some(ADMIN_TOKEN)).1);
    assert_eq!(v0["total_policies"], 2);
    assert!(v0["policies"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["destination"]["port"].is_i64() && p["destination"].get("ports").is_none()));

    // v0 create and delete map to single-port ranges.
    let v0_body = json!({"policies":[{"source":{"id":"v"},"destination":{"id":"w","protocol":"tcp","port":443}}]});
    assert_eq!(s.post(V0, Some(ADMIN_TOKEN), &v0_body.to_string()).0, 200);
    assert_eq!(q("id=v"), own(&[("v", "w", "tcp", 443, 443)]));
    assert_eq!(
        s.post(
            &format!("{V0}/delete"),
            Some(ADMIN_TOKEN),
            &v0_body.to_string()
        )
        .0,
        200
    );
    assert_eq!(q("id=v"), vec![]);

    // Delete, including a policy that does not exist (skipped, still 200).
    let (status, body) = s.post(
        &format!("{V1}/delete"),
        Some(ADMIN_TOKEN),
        &v1_body(&[all[0], ("no", "such", "tcp", 1, 1)]),
    );
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(q(""), own(&all[1..]));
}

#[test]
fn validation_messages_over_http_change_nothing() {
    let s = PolicyServer::start();
    let cases = [
        (
            V1,
            r#"{"policies":[]}"#,
            "mapper: validate policies: missing policies",
        ),
        (
            V1,
            r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","port":8080}}]}"#,
            "mapper: validate policies: missing start port",
        ),
        (
            V0,
            r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":1}}}]}"#,
            "mapper: validate policies: missing port",
        ),
        (
            V1,
            r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"icmp","ports":{"start":1,"end":1}}}]}"#,
            "mapper: validate policies: invalid destination protocol, specify either udp or tcp",
        ),
        (
            V1,
            r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":1}}},{"source":{"id":""},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":1}}}]}"#,
            "mapper: validate policies: missing source id",
        ),
    ];
    for (path, body, message) in cases {
        for p in [path.to_string(), format!("{path}/delete")] {
            let (status, answer) = s.post(&p, Some(ADMIN_TOKEN), body);
            assert_eq!(status, 400, "{p} {body}");
            assert_eq!(parse(&answer), json!({ "error": message }));
        }
    }
    let (status, answer) = s.post(V1, Some(ADMIN_TOKEN), "{not json");
    assert_eq!(status, 400);
    assert!(parse(&answer)["error"]
        .as_str()
        .unwrap()
        .starts_with("mapper: unmarshal json: "));
    assert_eq!(policy_rows(&s.get(V1, Some(ADMIN_TOKEN)).1), vec![]);
    assert_eq!(
        parse(&s.get("/networking/v1/external/tags", Some(ADMIN_TOKEN)).1)["tags"],
        json!([])
    );
}

#[test]
fn authentication_and_scopes() {
    let s = PolicyServer::start();
    let routes: [(&str, &str); 6] = [
        ("GET", V1),
        ("POST", V1),
        ("POST", "/networking/v1/external/policies/delete"),
        ("POST", "/networking/v1/external/policies/cleanup"),
        ("GET", "/networking/v1/external/tags"),
        ("GET", "/networking/v1/external/whoami"),
    ];
    let call = |method: &str, path: &str, token: Option<&str>| match method {
        "GET" => s.get(path, token),
        _ => s.post(path, token, &v1_body(&[("a", "b", "tcp", 1, 1)])),
    };
    for (method, path) in routes {
        let (status, body) = call(method, path, None);
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(
            parse(&body),
            json!({"error": "missing authorization header"})
        );
        let (status, body) = call(method, path, Some("bogus"));
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(
            parse(&body),
            json!({"error": "failed to verify token with uaa"})
        );
        let (status, body) = call(method, path, Some(READ_TOKEN));
        assert_eq!(status, 403, "{method} {path}");
        assert!(parse(&body)["error"]
            .as_str()
            .unwrap()
            .starts_with("provided scopes [openid] do not include allowed scopes [network.admin"));
    }
    // network.write may list but not see tags, whoami or cleanup.
    assert_eq!(s.get(V1, Some(WRITE_TOKEN)).0, 200);
    assert_eq!(
        s.get("/networking/v1/external/tags", Some(WRITE_TOKEN)).0,
        403
    );
    let (status, body) = s.get("/networking/v1/external/whoami", Some(ADMIN_TOKEN));
    assert_eq!((status, parse(&body)), (200, json!({"subject": "admin"})));
    // Without a Cloud Controller a non-admin cannot be shown to own the apps.
    let (status, body) = s.post(V1, Some(WRITE_TOKEN), &v1_body(&[("a", "b", "tcp", 1, 1)]));
    assert_eq!(status, 403);
    assert_eq!(
        parse(&body),
        json!({"error": "one or more applications cannot be found or accessed"})
    );
}

#[test]
fn unknown_versions_headers_cors_and_uptime() {
    let s = PolicyServer::start_with(|c, _| {
        c["allowed_cors_domains"] = json!(["https://ui.example"]);
    });
    let (status, body) = s.get("/networking/v2/external/policies", None);
    assert_eq!(status, 406);
    assert_eq!(
        parse(&body),
        json!({"error": "api version 'v2' not supported"})
    );

    let (status, body) = s.get("/", None);
    assert_eq!(status, 200);
    assert!(body.starts_with("Network policy server, up for "), "{body}");
    assert_eq!(s.get("/networking", None).0, 200);
    assert_eq!(s.get("/health", None).0, 200);

    let resp = s
        .client()
        .get(format!("{}{V1}", s.external))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("x-vcap-request-id", "abc")
        .header("origin", "https://ui.example")
        .call()
        .unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(h("x-xss-protection"), "1; mode=block");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("x-frame-options"), "deny");
    assert_eq!(h("content-security-policy"), "frame-ancestors 'none'");
    assert_eq!(h("strict-transport-security"), "", "no HSTS without TLS");
    assert!(h("x-vcap-request-id").starts_with("abc::"));
    assert_eq!(h("access-control-allow-origin"), "https://ui.example");

    let pre = s
        .client()
        .options(format!("{}{V1}", s.external))
        .header("origin", "https://evil.example")
        .call()
        .unwrap();
    assert_eq!(pre.status(), 200);
    assert_eq!(
        pre.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap(),
        "GET, POST"
    );
    assert!(pre.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn external_tls_adds_hsts() {
    let s = PolicyServer::start_with(|c, dir| {
        c["enable_tls"] = json!(true);
        c["external_cert_file"] = json!(dir.join("server.crt"));
        c["external_key_file"] = json!(dir.join("server.key"));
    });
    assert!(s.external.starts_with("https://"));
    let resp = s.client().get(format!("{}/", s.external)).call().unwrap();
    assert_eq!(
        resp.headers()["strict-transport-security"]
            .to_str()
            .unwrap(),
        "max-age=31536000"
    );
}

#[test]
fn internal_api_requires_client_certificates_and_returns_tags() {
    let s = PolicyServer::start();
    let before: i64 = s
        .internal_get("/networking/v1/internal/policies_last_updated")
        .1
        .parse()
        .unwrap();
    s.post(
        V1,
        Some(ADMIN_TOKEN),
        &v1_body(&[("a", "b", "tcp", 8080, 8090), ("c", "d", "udp", 53, 53)]),
    );
    let (status, body) = s.internal_get("/networking/v1/internal/policies?id=b");
    assert_eq!(status, 200);
    let v = parse(&body);
    assert_eq!(v["total_policies"], 1);
    assert_eq!(
        v["policies"][0],
        json!({"source":{"id":"a","tag":"0001"},"destination":{"id":"b","tag":"0002","protocol":"tcp","ports":{"start":8080,"end":8090}}})
    );
    assert_eq!(
        parse(&s.internal_get("/networking/v0/internal/policies").1)["total_policies"],
        2
    );
    let after: i64 = s
        .internal_get("/networking/v1/internal/policies_last_updated")
        .1
        .parse()
        .unwrap();
    assert!(after > before, "{after} > {before}");

    // PUT tags: same (id, type) returns the same tag, another type is refused.
    let put = |body: &str| {
        let mut r = s
            .internal_client()
            .put(format!("{}/networking/v1/internal/tags", s.internal))
            .send(body.as_bytes())
            .unwrap();
        (
            r.status().as_u16(),
            netman::http::client::body_string(&mut r, 1 << 20).unwrap(),
        )
    };
    let (status, body) = put(r#"{"ID":"INGRESS_ROUTER","Type":"router"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        parse(&body),
        json!({"id":"INGRESS_ROUTER","tag":"0005","type":"router"})
    );
    assert_eq!(
        parse(&put(r#"{"id":"INGRESS_ROUTER","type":"router"}"#).1)["tag"],
        "0005"
    );
    let (status, body) = put(r#"{"id":"INGRESS_ROUTER","type":"app"}"#);
    assert_eq!(
        (status, parse(&body)),
        (500, json!({"error":"database create failed"}))
    );
    // The schema's VARCHAR(255) bounds id and type (issue 18, item 5); nothing is allocated.
    let before = s.get("/networking/v1/external/tags", Some(ADMIN_TOKEN)).1;
    for (body, error) in [
        (
            json!({"id": "r".repeat(256), "type": "router"}),
            "invalid id, must be at most 255 characters",
        ),
        (
            json!({"id": "router-2", "type": "t".repeat(256)}),
            "invalid type, must be at most 255 characters",
        ),
        (
            json!({"id": "router\u{0}2", "type": "router"}),
            "invalid id, must not contain NUL characters",
        ),
    ] {
        let (status, answer) = put(&body.to_string());
        assert_eq!((status, parse(&answer)), (400, json!({ "error": error })));
    }
    assert_eq!(
        s.get("/networking/v1/external/tags", Some(ADMIN_TOKEN)).1,
        before
    );

    // No client certificate, or one from another CA: refused at the handshake.
    let no_cert = netman::http::client::agent(
        &netman::http::client::ClientTls {
            ca_cert_file: Some(s.certs.ca.to_string_lossy().into()),
            ..Default::default()
        },
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let url = format!("{}/networking/v1/internal/policies", s.internal);
    assert!(no_cert.get(&url).call().is_err());
    assert!(s
        .internal_client_with(&s.certs.other_client)
        .get(&url)
        .call()
        .is_err());
}

fn tags_of(s: &PolicyServer) -> HashMap<String, String> {
    parse(&s.get("/networking/v1/external/tags", Some(ADMIN_TOKEN)).1)["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["type"], "app");
            (
                t["id"].as_str().unwrap().to_string(),
                t["tag"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Issue 18, item 7, over HTTP: `null` reads as Go's zero value (the original's validation
/// messages, not unmarshal errors) and `"tag": ""` is accepted as no tag.
#[test]
fn nulls_and_empty_tags_are_answered_as_the_original() {
    let s = PolicyServer::start();
    let dst = json!({"id": "b", "protocol": "tcp", "ports": {"start": 1, "end": 2}});
    for (body, message) in [
        (json!({"policies": null}), "missing policies"),
        (
            json!({"policies": [{"source": null, "destination": dst}]}),
            "missing source id",
        ),
        (
            json!({"policies": [{"source": {"id": null}, "destination": dst}]}),
            "missing source id",
        ),
        (
            json!({"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": null, "ports": {"start": 1, "end": 2}}}]}),
            "invalid destination protocol, specify either udp or tcp",
        ),
        (
            json!({"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "ports": null}}]}),
            "missing start port",
        ),
    ] {
        for path in [V1.to_string(), format!("{V1}/delete")] {
            let (status, answer) = s.post(&path, Some(ADMIN_TOKEN), &body.to_string());
            assert_eq!(
                (status, parse(&answer)),
                (
                    400,
                    json!({ "error": format!("mapper: validate policies: {message}") })
                ),
                "{body}"
            );
        }
    }
    let tagged = json!({"policies": [{"source": {"id": "a", "tag": ""},
        "destination": {"id": "b", "tag": "", "protocol": "tcp", "ports": {"start": 1, "end": 2}}}]});
    let (status, answer) = s.post(V1, Some(ADMIN_TOKEN), &tagged.to_string());
    assert_eq!(status, 200, "{answer}");
    let (_, listed) = s.get(V1, Some(ADMIN_TOKEN));
    assert_eq!(
        policy_rows(&listed),
        vec![("a".into(), "b".into(), "tcp".into(), 1, 2)]
    );
}

/// Issue 18, item 1, through the API of the real binary (default config): allow A→B, remove it
/// (A's and B's tags released), allow C→D: C and D get fresh tags, not A's or B's, so a cell still
/// marking A with its old tag does not let A pass as C.
#[test]
fn released_tags_are_not_reused_within_the_quarantine() {
    let s = PolicyServer::start();
    s.post(V1, Some(ADMIN_TOKEN), &v1_body(&[("a", "b", "tcp", 1, 1)]));
    s.post(V1, Some(ADMIN_TOKEN), &v1_body(&[("c", "d", "tcp", 1, 1)]));
    let t = tags_of(&s);
    assert_eq!(
        (
            t["a"].as_str(),
            t["b"].as_str(),
            t["c"].as_str(),
            t["d"].as_str()
        ),
        ("0001", "0002", "0003", "0004")
    );
    s.post(
        &format!("{V1}/delete"),
        Some(ADMIN_TOKEN),
        &v1_body(&[("a", "b", "tcp", 1, 1)]),
    );
    let t = tags_of(&s);
    assert!(!t.contains_key("a") && !t.contains_key("b"));
    s.post(V1, Some(ADMIN_TOKEN), &v1_body(&[("e", "f", "tcp", 1, 1)]));
    let t = tags_of(&s);
    assert_eq!((t["e"].as_str(), t["f"].as_str()), ("0005", "0006"));
}

/// `tag_quarantine_seconds: 0` is the original's behaviour: a released tag may be handed out at
/// once (after the never-used ones: least recently released first).
#[test]
fn tag_quarantine_can_be_turned_off() {
    let s = PolicyServer::start_with(|c, _| {
        c["tag_length"] = json!(1);
        c["tag_quarantine_seconds"] = json!(0);
    });
    s.post(V1, Some(ADMIN_TOKEN), &v1_body(&[("a", "b", "tcp", 1, 1)]));
    s.post(
        &format!("{V1}/delete"),
        Some(ADMIN_TOKEN),
        &v1_body(&[("a", "b", "tcp", 1, 1)]),
    );
    let ids: Vec<String> = (0..253).map(|i| format!("app-{i}")).collect();
    // The 253 never-used tags 03..FF first (the last id pairs with the first).
    let body = json!({"policies": ids.chunks(2).map(|c| json!({
        "source": {"id": c[0]},
        "destination": {"id": c.get(1).unwrap_or(&ids[0]), "protocol": "tcp", "ports": {"start": 1, "end": 1}}
    })).collect::<Vec<_>>()});
    assert_eq!(s.post(V1, Some(ADMIN_TOKEN), &body.to_string()).0, 200);
    s.post(V1, Some(ADMIN_TOKEN), &v1_body(&[("x", "y", "tcp", 1, 1)]));
    let t = tags_of(&s);
    assert_eq!((t["x"].as_str(), t["y"].as_str()), ("01", "02"), "{t:?}");
}

#[test]
fn concurrent_clients_leave_a_consistent_store_with_unique_tags() {
    let s = std::sync::Arc::new(PolicyServer::start());
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                let keep = format!("app-{i}");
                let dest = format!("app-{}", (i + 1) % 100);
                let temp = format!("tmp-{i}");
                let body = v1_body(&[(&keep, &dest, "tcp", 8080, 8080)]);
                let temp_body = v1_body(&[(&keep, &temp, "udp", 1, 2)]);
                for _ in 0..3 {
                    assert_eq!(s.post(V1, Some(ADMIN_TOKEN), &body).0, 200);
                    assert_eq!(s.post(V1, Some(ADMIN_TOKEN), &temp_body).0, 200);
                    assert_eq!(
                        s.post(&format!("{V1}/delete"), Some(ADMIN_TOKEN), &temp_body)
                            .0,
                        200
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let list = policy_rows(&s.get(V1, Some(ADMIN_TOKEN)).1);
    assert_eq!(list.len(), 100);
    let tags = parse(&s.get("/networking/v1/external/tags", Some(ADMIN_TOKEN)).1);
    let tags = tags["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 100, "only the 100 kept apps hold tags");
    let unique: HashSet<&str> = tags.iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), 100);
}

#[test]
fn sigkill_during_load_loses_no_acknowledged_policy() {
    let mut s = PolicyServer::start();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = format!("{}{V1}", s.external);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (ack, stop, url) = (acknowledged.clone(), stop.clone(), url.clone());
            let client = s.client();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let src = format!("w{w}-{i}");
                    let body = v1_body(&[(&src, "dest", "tcp", 80, 80)]);
                    let ok = client
                        .post(&url)
                        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                        .send(body.as_bytes())
                        .map(|r| r.status() == 200)
                        .unwrap_or(false);
                    if ok {
                        ack.lock().unwrap().push(src);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.kill();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 10,
        "load was too light: {}",
        acknowledged.len()
    );
    s.spawn();
    let stored: HashSet<String> = policy_rows(&s.get(V1, Some(ADMIN_TOKEN)).1)
        .into_iter()
        .map(|p| p.0)
        .collect();
    for src in &acknowledged {
        assert!(stored.contains(src), "acknowledged policy {src} lost");
    }
}

#[test]
fn oversized_body_is_refused() {
    let s = PolicyServer::start();
    let mut body = v1_body(&[("a", "b", "tcp", 1, 1)]);
    let pad = 10 * 1024 * 1024 + 1 - body.len();
    body.push_str(&" ".repeat(pad));
    assert_eq!(body.len(), 10 * 1024 * 1024 + 1);
    let resp = s
        .client()
        .post(format!("{}{V1}", s.external))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send(body.as_bytes());
    match resp {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => panic!("expected a 413 answer, got {e}"),
    }
    // Exactly 10 MB is accepted.
    body.pop();
    assert_eq!(s.post(V1, Some(ADMIN_TOKEN), &body).0, 200);
}

#[test]
fn debug_server_metrics_health_and_log_level() {
    let s = PolicyServer::start();
    s.post(V1, Some(ADMIN_TOKEN), &v1_body(&[("a", "b", "tcp", 1, 1)]));
    let client = s.client();
    let mut m = client.get(format!("{}/metrics", s.debug)).call().unwrap();
    let text = netman::http::client::body_string(&mut m, 1 << 22).unwrap();
    for name in [
        "policy_server_external_http_requests_total{route=\"CreatePolicies\",status=\"200\"} 1",
        "policy_server_external_http_request_duration_seconds_bucket",
        "policy_server_store_operation_duration_seconds_count{op=\"Create\",outcome=\"success\"} 1",
        "policy_server_total_policies 1",
        "policy_server_uptime_seconds",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    let r = client
        .put(format!("{}/log-level", s.debug))
        .send("debug".as_bytes())
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut r = client.get(format!("{}/log-level", s.debug)).call().unwrap();
    assert_eq!(
        netman::http::client::body_string(&mut r, 100).unwrap(),
        "debug"
    );
    let r = client
        .put(format!("{}/log-level", s.debug))
        .send("loud".as_bytes())
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn bad_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), &POLICY_SERVER);
    let base = json!({
        "ca_cert_file": certs.ca, "server_cert_file": certs.server.0, "server_key_file": certs.server.1,
        "database": {"type": "sqlite", "connection_string": dir.path().join("db")},
        "auth": {"mode": "tokens", "tokens_file": write_tokens_file(dir.path())},
        "listen_host": "127.0.0.1",
    });
    let check = |patch: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        patch(&mut c);
        let p = dir.path().join("c.json");
        std::fs::write(&p, c.to_string()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_policy-server"))
            .args(["--check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = check(&|_| {});
    assert!(ok, "{out}");
    type Patch<'a> = (&'a str, &'a dyn Fn(&mut Value));
    let failures: [Patch; 6] = [
        ("lisen_port", &|c| c["lisen_port"] = json!(1)),
        ("tag_length", &|c| c["tag_length"] = json!(3)),
        ("tag_quarantine_seconds", &|c| {
            c["tag_quarantine_seconds"] = json!(40_000_000)
        }),
        ("debug_server_host", &|c| {
            c["debug_server_host"] = json!("0.0.0.0")
        }),
        ("ca_cert_file", &|c| {
            c["ca_cert_file"] = json!("/nonexistent")
        }),
        ("listen_port", &|c| c["listen_port"] = json!(0)),
    ];
    for (key, patch) in failures {
        let (ok, out) = check(patch);
        assert!(!ok, "{key} accepted");
        assert!(out.contains(key), "{key} not named: {out}");
    }
}

/// Issue 18, item 6: a server waiting for its database at start-up (here a SQLite file in a
/// directory that is not there yet, retried for up to 120 s) stops promptly on SIGTERM.
#[test]
fn sigterm_is_honoured_while_start_up_waits_for_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), &POLICY_SERVER);
    let config = json!({
        "listen_host": "127.0.0.1",
        "listen_port": free_port(),
        "internal_listen_host": "127.0.0.1",
        "internal_listen_port": free_port(),
        "debug_server_port": free_port(),
        "ca_cert_file": certs.ca,
        "server_cert_file": certs.server.0,
        "server_key_file": certs.server.1,
        "database": {"type": "sqlite", "connect_timeout_seconds": 120,
            "connection_string": dir.path().join("not-mounted-yet/policies.db")},
        "auth": {"mode": "tokens", "tokens_file": write_tokens_file(dir.path())},
    });
    let config_path = dir.path().join("policy-server.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .arg("--config")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "exited before SIGTERM");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let signalled = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > std::time::Duration::from_secs(5) {
            let _ = child.kill();
            panic!("still waiting for the database 5 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn sigterm_stops_cleanly() {
    let mut s = PolicyServer::start();
    assert!(s.terminate().success());
}

mod malformed {
    use super::*;
    use proptest::prelude::*;

    fn shapes() -> impl Strategy<Value = String> {
        let valid = v1_body(&[("a", "b", "tcp", 1, 2)]);
        prop_oneof![
            // Arbitrary bytes and text.
            proptest::collection::vec(any::<u8>(), 0..200)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            // A valid body cut short.
            (0..valid.len()).prop_map(move |n| valid[..n].to_string()),
            // Wrong types in every position.
            prop_oneof![
                Just(json!({"policies": "x"})),
                Just(json!({"policies": [1]})),
                Just(json!({"policies": [{"source": "a"}]})),
                Just(json!({"policies": [{"source": {"id": 1}}]})),
                Just(json!({"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": "1", "end": 2}}}]})),
                Just(json!({"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": 1.5, "end": 2}}}]})),
                Just(json!([])),
                Just(json!(null)),
            ]
            .prop_map(|v| v.to_string()),
            // Valid JSON with invalid values.
            (any::<i64>(), any::<i64>(), "[a-z]{0,5}").prop_filter_map(
                "must be invalid",
                |(start, end, proto)| {
                    let valid = (proto == "tcp" || proto == "udp")
                        && (1..=65535).contains(&start)
                        && (start..=65535).contains(&end);
                    (!valid).then(|| {
                        json!({"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": proto, "ports": {"start": start, "end": end}}}]}).to_string()
                    })
                }
            ),
        ]
    }

    #[test]
    fn malformed_bodies_get_400_and_change_nothing() {
        let s = PolicyServer::start();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 200,
            ..ProptestConfig::default()
        });
        runner
            .run(&shapes(), |body| {
                for path in [V1.to_string(), format!("{V1}/delete")] {
                    let (status, answer) = s.post(&path, Some(ADMIN_TOKEN), &body);
                    prop_assert_eq!(status, 400, "{} {}", body, answer);
                    let message = parse(&answer)["error"].as_str().unwrap().to_string();
                    prop_assert!(message.starts_with("mapper: "), "{}", message);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(policy_rows(&s.get(V1, Some(ADMIN_TOKEN)).1), vec![]);
        let tags = parse(&s.get("/networking/v1/external/tags", Some(ADMIN_TOKEN)).1);
        assert_eq!(tags["tags"], json!([]));
    }
}
