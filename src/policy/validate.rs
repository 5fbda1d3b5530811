//! Parsing and validation of create/delete request bodies, with the original's messages in the
//! original's order (reference §2.3). Both API versions map to v1 policies for the store.

use crate::api::policy::{PoliciesRequest, Policy, PolicyV0};

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
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("mapper: unmarshal json: the body must be a JSON object".into());
    }
    match version {
        ApiVersion::V1 => {
            let req: PoliciesRequest<Policy> =
                serde_json::from_slice(body).map_err(|e| format!("mapper: unmarshal json: {e}"))?;
            validate_v1(&req.policies).map_err(|m| format!("mapper: validate policies: {m}"))?;
            Ok(req.policies)
        }
        ApiVersion::V0 => {
            let req: PoliciesRequest<PolicyV0> =
                serde_json::from_slice(body).map_err(|e| format!("mapper: unmarshal json: {e}"))?;
            validate_v0(&req.policies).map_err(|m| format!("mapper: validate policies: {m}"))?;
            Ok(req.policies.iter().map(PolicyV0::to_v1).collect())
        }
    }
}

fn validate_common(source: &str, dest: &str, protocol: &str) -> Result<(), String> {
    if source.is_empty() {
        return Err("missing source id".into());
    }
    if dest.is_empty() {
        return Err("missing destination id".into());
    }
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
        if p.source.tag.is_some() || d.tag.is_some() {
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
        if p.source.tag.is_some() || d.tag.is_some() {
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
}
