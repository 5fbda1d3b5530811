//! Parsing and validation of create/delete request bodies, with the original's messages in the
//! original's order (reference §2.3). Both API versions map to v1 policies for the store.

use crate::api::policy::{PoliciesRequest, Policy, PolicyV0};

/// The longest id (source, destination, tag id or type) the schema stores: `VARCHAR(255)`, which
/// PostgreSQL and MySQL count in characters (SQLite would store any length).
pub const MAX_ID_CHARS: usize = 255;

/// The API version of an external route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V0,
    V1,
}

impl ApiVersion {
    pub fn parse(segment: &str) -> Option<ApiVersion> {
        match segment {
            "v0" => Some(ApiVersion::V0),
            "v1" => Some(ApiVersion::V1),
            _ => None,
        }
    }
}

/// Parses and validates a request body; the error is the full client-facing message.
pub fn parse_policies(version: ApiVersion, body: &[u8]) -> Result<Vec<Policy>, String> {
    // serde would accept a JSON array for a struct (as a sequence of fields); the API takes
    // only an object.
    // Go decodes a `null` body into the zero request, which then misses its policies.
    let body: &[u8] = if body.trim_ascii() == b"null" {
        b"{}"
    } else {
        body
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("mapper: unmarshal json: the body must be a JSON object".into());
    }
    match version {
        ApiVersion::V1 => {
            let req: PoliciesRequest<Policy> =
                serde_json::from_slice(body).map_err(|e| format!("mapper: unmarshal json: {e}"))?;
            validate_v1(&req.policies).map_err(|m| format!("mapper: validate policies: {m}"))?;
            Ok(req.policies.iter().map(Policy::untagged).collect())
        }
        ApiVersion::V0 => {
            let req: PoliciesRequest<PolicyV0> =
                serde_json::from_slice(body).map_err(|e| format!("mapper: unmarshal json: {e}"))?;
            validate_v0(&req.policies).map_err(|m| format!("mapper: validate policies: {m}"))?;
            Ok(req.policies.iter().map(|p| p.to_v1().untagged()).collect())
        }
    }
}

/// A stored string field: at most [`MAX_ID_CHARS`] characters and no NUL (PostgreSQL cannot
/// store one), so every backend stores exactly what was accepted.
pub fn check_stored_string(field: &str, value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_ID_CHARS {
        return Err(format!(
            "invalid {field}, must be at most {MAX_ID_CHARS} characters"
        ));
    }
    if value.contains('\0') {
        return Err(format!("invalid {field}, must not contain NUL characters"));
    }
    Ok(())
}

/// The original's tag check: Go decodes an absent, `null` or `""` tag alike as the empty string,
/// and only a non-empty one is refused.
fn has_tag(tag: &Option<String>) -> bool {
    tag.as_deref().is_some_and(|t| !t.is_empty())
}

fn validate_common(source: &str, dest: &str, protocol: &str) -> Result<(), String> {
    if source.is_empty() {
        return Err("missing source id".into());
    }
    if dest.is_empty() {
        return Err("missing destination id".into());
    }
    check_stored_string("source id", source)?;
    check_stored_string("destination id", dest)?;
    if protocol != "tcp" && protocol != "udp" {
        return Err("invalid destination protocol, specify either udp or tcp".into());
    }
    Ok(())
}

pub fn validate_v1(policies: &[Policy]) -> Result<(), String> {
    if policies.is_empty() {
        return Err("missing policies".into());
    }
    for p in policies {
        let d = &p.destination;
        validate_common(&p.source.id, &d.id, &d.protocol)?;
        let (start, end) = (d.ports.start, d.ports.end);
        if start > end {
            return Err(format!(
                "invalid port range {start}-{end}, start must be less than or equal to end"
            ));
        }
        if start < 0 {
            return Err(format!(
                "invalid start port {start}, must be in range 1-65535"
            ));
        }
        if start == 0 {
            return Err("missing start port".into());
        }
        if end > 65535 {
            return Err(format!("invalid end port {end}, must be in range 1-65535"));
        }
        if has_tag(&p.source.tag) || has_tag(&d.tag) {
            return Err("tags may not be specified".into());
        }
    }
    Ok(())
}

pub fn validate_v0(policies: &[PolicyV0]) -> Result<(), String> {
    if policies.is_empty() {
        return Err("missing policies".into());
    }
    for p in policies {
        let d = &p.destination;
        validate_common(&p.source.id, &d.id, &d.protocol)?;
        if d.port < 0 {
            return Err(format!("invalid port {}, must be in range 1-65535", d.port));
        }
        if d.port == 0 {
            return Err("missing port".into());
        }
        // The original's v0 has no upper bound; netman stores only valid ports.
        if d.port > 65535 {
            return Err(format!("invalid port {}, must be in range 1-65535", d.port));
        }
        if has_tag(&p.source.tag) || has_tag(&d.tag) {
            return Err("tags may not be specified".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(body: &str) -> Result<Vec<Policy>, String> {
        parse_policies(ApiVersion::V1, body.as_bytes())
    }

    #[test]
    fn v1_messages_in_order() {
        let cases = [
            (r#"{"policies":[]}"#, "missing policies"),
            (r#"{}"#, "missing policies"),
            (
                r#"{"policies":[{"source":{"id":""},"destination":{"id":"","protocol":"x","ports":{"start":0,"end":0}}}]}"#,
                "missing source id",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"","protocol":"x","ports":{"start":0,"end":0}}}]}"#,
                "missing destination id",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"icmp","ports":{"start":0,"end":0}}}]}"#,
                "invalid destination protocol, specify either udp or tcp",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":90,"end":80}}}]}"#,
                "invalid port range 90-80, start must be less than or equal to end",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":-1,"end":80}}}]}"#,
                "invalid start port -1, must be in range 1-65535",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp"}}]}"#,
                "missing start port",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":65536}}}]}"#,
                "invalid end port 65536, must be in range 1-65535",
            ),
            (
                r#"{"policies":[{"source":{"id":"a","tag":"01"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":2}}}]}"#,
                "tags may not be specified",
            ),
        ];
        for (body, msg) in cases {
            assert_eq!(
                v1(body).unwrap_err(),
                format!("mapper: validate policies: {msg}"),
                "{body}"
            );
        }
    }

    #[test]
    fn v0_body_on_v1_and_v1_body_on_v0() {
        let v0_body = r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","port":8080}}]}"#;
        assert_eq!(
            v1(v0_body).unwrap_err(),
            "mapper: validate policies: missing start port"
        );
        let v1_body = r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":2}}}]}"#;
        assert_eq!(
            parse_policies(ApiVersion::V0, v1_body.as_bytes()).unwrap_err(),
            "mapper: validate policies: missing port"
        );
        let ok = parse_policies(ApiVersion::V0, v0_body.as_bytes()).unwrap();
        assert_eq!(ok[0], Policy::new("a", "b", "tcp", 8080, 8080));
    }

    #[test]
    fn syntax_errors_are_unmarshal_errors() {
        for body in [
            "",
            "{",
            "[]",
            r#"{"policies":"x"}"#,
            r#"{"policies":[{"source":1}]}"#,
        ] {
            assert!(
                v1(body)
                    .unwrap_err()
                    .starts_with("mapper: unmarshal json: "),
                "{body}"
            );
        }
    }

    /// Issue 18, item 7: Go decodes `null` as the zero value, so the original answered these with
    /// its validation messages, not with an unmarshal error.
    #[test]
    fn null_reads_as_go_zero_values() {
        let dest = r#""destination":{"id":"b","protocol":"tcp","ports":{"start":1,"end":2}}"#;
        let cases = [
            ("null".to_string(), "missing policies"),
            (r#"{"policies":null}"#.to_string(), "missing policies"),
            (r#"{"policies":[null]}"#.to_string(), "missing source id"),
            (format!(r#"{{"policies":[{{"source":null,{dest}}}]}}"#), "missing source id"),
            (
                format!(r#"{{"policies":[{{"source":{{"id":null}},{dest}}}]}}"#),
                "missing source id",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":null}]}"#.to_string(),
                "missing destination id",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":null,"ports":{"start":1,"end":2}}}]}"#.to_string(),
                "invalid destination protocol, specify either udp or tcp",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":null}}]}"#.to_string(),
                "missing start port",
            ),
            (
                r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":null,"end":2}}}]}"#.to_string(),
                "missing start port",
            ),
        ];
        for (body, msg) in &cases {
            assert_eq!(
                v1(body).unwrap_err(),
                format!("mapper: validate policies: {msg}"),
                "{body}"
            );
        }
        assert_eq!(
            parse_policies(ApiVersion::V0, br#"{"policies":null}"#).unwrap_err(),
            "mapper: validate policies: missing policies"
        );
        assert_eq!(
            parse_policies(
                ApiVersion::V0,
                br#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","port":null}}]}"#
            )
            .unwrap_err(),
            "mapper: validate policies: missing port"
        );
    }

    /// `"tag": ""` (and `null`) is no tag, as in the original; a non-empty tag is still refused.
    #[test]
    fn empty_tags_are_accepted_and_dropped() {
        let body = r#"{"policies":[{"source":{"id":"a","tag":""},"destination":{"id":"b","tag":null,"protocol":"tcp","ports":{"start":1,"end":2}}}]}"#;
        assert_eq!(v1(body).unwrap(), vec![Policy::new("a", "b", "tcp", 1, 2)]);
        let v0 = r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","tag":"","protocol":"tcp","port":5}}]}"#;
        assert_eq!(
            parse_policies(ApiVersion::V0, v0.as_bytes()).unwrap(),
            vec![Policy::new("a", "b", "tcp", 5, 5)]
        );
        let tagged = r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","tag":"0001","protocol":"tcp","ports":{"start":1,"end":2}}}]}"#;
        assert_eq!(
            v1(tagged).unwrap_err(),
            "mapper: validate policies: tags may not be specified"
        );
    }

    /// Issue 18, item 5: ids longer than the schema's VARCHAR(255) (in characters) are refused.
    #[test]
    fn ids_are_bounded_by_the_schema() {
        let body = |src: &str, dst: &str| {
            serde_json::json!({"policies": [{"source": {"id": src},
                "destination": {"id": dst, "protocol": "tcp", "ports": {"start": 1, "end": 1}}}]})
            .to_string()
        };
        let longest = "é".repeat(MAX_ID_CHARS);
        assert!(v1(&body(&longest, &longest)).is_ok());
        let long = "a".repeat(MAX_ID_CHARS + 1);
        assert_eq!(
            v1(&body(&long, "b")).unwrap_err(),
            "mapper: validate policies: invalid source id, must be at most 255 characters"
        );
        assert_eq!(
            v1(&body("a", &"x".repeat(100_000))).unwrap_err(),
            "mapper: validate policies: invalid destination id, must be at most 255 characters"
        );
        assert_eq!(
            v1(&body("a\0b", "b")).unwrap_err(),
            "mapper: validate policies: invalid source id, must not contain NUL characters"
        );
        let v0 = serde_json::json!({"policies": [{"source": {"id": long},
            "destination": {"id": "b", "protocol": "tcp", "port": 1}}]});
        assert!(parse_policies(ApiVersion::V0, v0.to_string().as_bytes())
            .unwrap_err()
            .contains("invalid source id"));
    }
}
