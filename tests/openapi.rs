//! Keeps `docs/openapi.json` true: its routes and methods are exactly the ones the server serves,
//! and what the running server answers matches the documented schemas.

mod support;
use support::policy_server;

use policy_server::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn doc() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// The subset of JSON Schema the document uses: type, required, properties,
/// additionalProperties=false, items, enum, oneOf, minimum, maximum, $ref.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|s| check(doc, s, value, at).is_ok())
            .count();
        return if matching >= 1 {
            Ok(())
        } else {
            Err(format!("{at}: matches no oneOf option: {value}"))
        };
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            other => {
                return Err(format!(
                    "{at}: schema type {other} not supported by the test"
                ))
            }
        };
        if !ok {
            return Err(format!("{at}: expected {t}, got {value}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
        if value.as_i64().is_some_and(|v| v < min) {
            return Err(format!("{at}: {value} < {min}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_i64) {
        if value.as_i64().is_some_and(|v| v > max) {
            return Err(format!("{at}: {value} > {max}"));
        }
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = req.as_str().unwrap();
            if !obj.contains_key(key) {
                return Err(format!("{at}: missing required {key}"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, v, &format!("{at}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&json!(false)) => {
                    return Err(format!("{at}: undocumented property {k}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            check(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn documented_routes(doc: &Value, api: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["x-api"] == api {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn documented_routes_are_exactly_the_served_ones() {
    let doc = doc();
    let served = |routes: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        routes
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect()
    };
    assert_eq!(
        documented_routes(&doc, "external"),
        served(netman::policy::external::ROUTES)
    );
    assert_eq!(
        documented_routes(&doc, "internal"),
        served(netman::policy::internal::ROUTES)
    );
}

fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method.to_lowercase()];
    let resp = &op["responses"][status.to_string()];
    assert!(
        !resp.is_null(),
        "{method} {path} answered {status}, which is not documented"
    );
    &resp["content"]["application/json"]["schema"]
}

#[test]
fn answers_match_the_documented_schemas() {
    const ROUTE: &str =
        r#"{"routes":[{"app_guid":"a","host":"backend","domain":"apps.internal"}]}"#;
    let doc = doc();
    let s = PolicyServer::start();
    let body = v1_body(&[("a", "b", "tcp", 8080, 8080), ("a", "c", "udp", 1, 9)]);
    // (method, documented path, concrete path, token, body)
    type Call<'a> = (&'a str, &'a str, String, Option<&'a str>, Option<String>);
    let calls: Vec<Call> = vec![
        (
            "POST",
            "/networking/{version}/external/policies",
            "/networking/v1/external/policies".into(),
            Some(ADMIN_TOKEN),
            Some(body.clone()),
        ),
        (
            "GET",
            "/networking/{version}/external/policies",
            "/networking/v1/external/policies".into(),
            Some(ADMIN_TOKEN),
            None,
        ),
        (
            "GET",
            "/networking/{version}/external/policies",
            "/networking/v0/external/policies?id=a".into(),
            Some(ADMIN_TOKEN),
            None,
        ),
        (
            "GET",
            "/networking/{version}/external/policies",
            "/networking/v1/external/policies".into(),
            None,
            None,
        ),
        (
            "POST",
            "/networking/{version}/external/policies",
            "/networking/v1/external/policies".into(),
            Some(ADMIN_TOKEN),
            Some("{}".into()),
        ),
        (
            "GET",
            "/networking/{version}/external/policies",
            "/networking/v7/external/policies".into(),
            Some(ADMIN_TOKEN),
            None,
        ),
        (
            "GET",
            "/networking/{version}/external/tags",
            "/networking/v1/external/tags".into(),
            Some(ADMIN_TOKEN),
            None,
        ),
        (
            "GET",
            "/networking/{version}/external/whoami",
            "/networking/v0/external/whoami".into(),
            Some(ADMIN_TOKEN),
            None,
        ),
        (
            "GET",
            "/networking/{version}/external/tags",
            "/networking/v1/external/tags".into(),
            Some(READ_TOKEN),
            None,
        ),
        (
            "POST",
            "/networking/{version}/external/policies/delete",
            "/networking/v1/external/policies/delete".into(),
            Some(ADMIN_TOKEN),
            Some(v1_body(&[("a", "c", "udp", 1, 9)])),
        ),
        (
            "POST",
            "/networking/{version}/external/policies/cleanup",
            "/networking/v1/external/policies/cleanup".into(),
            Some(ADMIN_TOKEN),
            None,
        ),
        (
            "POST",
            "/networking/{version}/external/security_groups",
            "/networking/v1/external/security_groups".into(),
            Some(ADMIN_TOKEN),
            Some(
                r#"{"name":"dns","rules":[{"protocol":"udp","destination":"0.0.0.0/0","ports":"53"},{"protocol":"icmp","destination":"10.0.0.1","type":-1,"code":-1}],"globally_enabled":{"running":true}}"#.into(),
            ),
        ),
        (
            "POST",
            "/networking/{version}/external/security_groups",
            "/networking/v1/external/security_groups".into(),
            Some(ADMIN_TOKEN),
            Some(r#"{"name":"bad","rules":[{"protocol":"tcp","destination":"1.1.1.1"}]}"#.into()),
        ),
        (
            "GET",
            "/networking/{version}/external/security_groups",
            "/networking/v1/external/security_groups".into(),
            Some(ADMIN_TOKEN),
            None,
        ),
        (
            "POST",
            "/networking/{version}/external/internal_routes",
            "/networking/v1/external/internal_routes".into(),
            Some(ADMIN_TOKEN),
            Some(ROUTE.into()),
        ),
        (
            "POST",
            "/networking/{version}/external/internal_routes",
            "/networking/v1/external/internal_routes".into(),
            Some(ADMIN_TOKEN),
            Some(ROUTE.replace("backend", "no_pe")),
        ),
        (
            "GET",
            "/networking/{version}/external/internal_routes",
            "/networking/v1/external/internal_routes".into(),
            Some(ADMIN_TOKEN),
            None,
        ),
        (
            "POST",
            "/networking/{version}/external/internal_domains",
            "/networking/v1/external/internal_domains".into(),
            Some(ADMIN_TOKEN),
            Some(r#"{"domains":["other.internal"]}"#.into()),
        ),
        (
            "GET",
            "/networking/{version}/external/internal_domains",
            "/networking/v1/external/internal_domains".into(),
            Some(WRITE_TOKEN),
            None,
        ),
        (
            "POST",
            "/networking/{version}/external/internal_domains/delete",
            "/networking/v1/external/internal_domains/delete".into(),
            Some(ADMIN_TOKEN),
            Some(r#"{"domains":["apps.internal"]}"#.into()),
        ),
        (
            "POST",
            "/networking/{version}/external/internal_domains/delete",
            "/networking/v1/external/internal_domains/delete".into(),
            Some(WRITE_TOKEN),
            Some(r#"{"domains":["other.internal"]}"#.into()),
        ),
        (
            "POST",
            "/networking/{version}/external/internal_routes/delete",
            "/networking/v1/external/internal_routes/delete".into(),
            Some(ADMIN_TOKEN),
            Some(ROUTE.replace("backend", "gone")),
        ),
        ("GET", "/health", "/health".into(), None, None),
    ];
    for (method, doc_path, path, token, body) in calls {
        let (status, answer) = match method {
            "GET" => s.get(&path, token),
            _ => s.post(&path, token, body.as_deref().unwrap_or("")),
        };
        let schema = response_schema(&doc, method, doc_path, status);
        if !schema.is_null() {
            let value: Value = serde_json::from_str(&answer)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {answer}"));
            check(&doc, schema, &value, &format!("{method} {path} {status}"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let (status, answer) = s.internal_get("/networking/v1/internal/policies?id=a");
    let schema = response_schema(
        &doc,
        "GET",
        "/networking/{version}/internal/policies",
        status,
    );
    check(
        &doc,
        schema,
        &serde_json::from_str(&answer).unwrap(),
        "internal policies",
    )
    .unwrap();
    let (status, answer) = s.internal_get("/networking/v1/internal/security_groups?space_guids=s");
    let schema = response_schema(
        &doc,
        "GET",
        "/networking/{version}/internal/security_groups",
        status,
    );
    let groups: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(groups["security_groups"].as_array().map(Vec::len), Some(1));
    check(&doc, schema, &groups, "internal security groups").unwrap();
    let mut r = s
        .internal_client()
        .put(format!("{}/networking/v1/internal/tags", s.internal))
        .send(br#"{"id":"router-1","type":"router"}"#.as_slice())
        .unwrap();
    let status = r.status().as_u16();
    let answer = netman::http::client::body_string(&mut r, 1 << 20).unwrap();
    let schema = response_schema(&doc, "PUT", "/networking/v1/internal/tags", status);
    check(
        &doc,
        schema,
        &serde_json::from_str(&answer).unwrap(),
        "put tags",
    )
    .unwrap();

    let cell = "/networking/v1/internal/service_discovery/cells/{cell_id}";
    for body in [
        r#"{"instances":[{"app_guid":"a","index":0,"ip":"10.255.0.2"}]}"#,
        r#"{"instances":[{"app_guid":"a","index":-1,"ip":"10.255.0.2"}]}"#,
    ] {
        let mut r = s
            .internal_client()
            .put(format!(
                "{}/networking/v1/internal/service_discovery/cells/cell-1",
                s.internal
            ))
            .send(body.as_bytes())
            .unwrap();
        let status = r.status().as_u16();
        let answer = netman::http::client::body_string(&mut r, 1 << 20).unwrap();
        let schema = response_schema(&doc, "PUT", cell, status);
        check(
            &doc,
            schema,
            &serde_json::from_str(&answer).unwrap(),
            "cell",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let table = "/networking/v1/internal/service_discovery/table";
    let (status, answer) = s.internal_get(table);
    assert_eq!(status, 200, "{answer}");
    check(
        &doc,
        response_schema(&doc, "GET", table, status),
        &serde_json::from_str(&answer).unwrap(),
        "table",
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_validator_catches_mismatches() {
    // The schema check itself must be able to fail, or the test above proves nothing.
    let doc = doc();
    let tags = json!({"$ref": "#/components/schemas/TagsResponse"});
    assert!(check(
        &doc,
        &tags,
        &json!({"tags": [{"id": "a", "tag": "01", "type": "app"}]}),
        "t"
    )
    .is_ok());
    assert!(check(
        &doc,
        &tags,
        &json!({"tags": [{"id": "a", "tag": 1, "type": "app"}]}),
        "t"
    )
    .is_err());
    assert!(check(&doc, &tags, &json!({}), "t").is_err());
    let list = json!({"$ref": "#/components/schemas/PoliciesResponseV1"});
    let tagged = json!({"total_policies": 1, "policies": [{"source": {"id": "a", "tag": "0001"}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": 1, "end": 1}}}]});
    assert!(
        check(&doc, &list, &tagged, "t").is_err(),
        "tags are not part of the external shape"
    );
}
