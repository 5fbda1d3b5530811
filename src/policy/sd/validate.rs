//! Checks of what clients send about internal routes and domains: every field, before anything
//! is stored, with a message naming the field and the rule.

use crate::api::sd::{InternalRoute, RoutesRequest};
use crate::dns::table::normalize_name;
use crate::policy::validate::check_stored_string;

/// A hostname: one RFC 1123 label (letters, digits, inner hyphens, 1 to 63 characters), returned
/// lowercase.
pub fn host(host: &str) -> Result<String, String> {
    if host.contains('.') {
        return Err(format!(
            "invalid hostname {host:?}: one label only, without dots"
        ));
    }
    normalize_name(host).map_err(|e| format!("invalid hostname {host:?}: {e}"))
}

/// An internal domain: RFC 1123 labels separated by dots, at most 253 characters, at least two
/// labels (a single label such as `internal` would capture a whole top-level domain). Returned
/// lowercase, without a trailing dot.
pub fn domain(domain: &str) -> Result<String, String> {
    let d = normalize_name(domain).map_err(|e| format!("invalid domain {domain:?}: {e}"))?;
    if !d.contains('.') {
        return Err(format!(
            "invalid domain {domain:?}: at least two labels (e.g. apps.internal)"
        ));
    }
    if d.rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "invalid domain {domain:?}: the last label must not be all digits"
        ));
    }
    Ok(d)
}

pub fn app_guid(guid: &str) -> Result<(), String> {
    if guid.is_empty() {
        return Err("missing app_guid".into());
    }
    check_stored_string("app_guid", guid)?;
    if guid.chars().any(char::is_control) {
        return Err("invalid app_guid, must not contain control characters".into());
    }
    Ok(())
}

/// The routes of a map or unmap request, normalised (lowercase names); the whole request is
/// refused on the first bad route.
pub fn routes(body: &[u8]) -> Result<Vec<InternalRoute>, String> {
    let req: RoutesRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    if req.routes.is_empty() {
        return Err("missing routes".into());
    }
    if req.routes.len() > MAX_ROUTES_PER_REQUEST {
        return Err(format!(
            "too many routes: at most {MAX_ROUTES_PER_REQUEST} per request"
        ));
    }
    let mut out = Vec::with_capacity(req.routes.len());
    for (i, r) in req.routes.iter().enumerate() {
        let checked = (|| {
            app_guid(&r.app_guid)?;
            let host = host(&r.host)?;
            let domain = domain(&r.domain)?;
            let route = InternalRoute::new(&r.app_guid, &host, &domain);
            if route.name().len() > 253 {
                return Err(format!(
                    "name {:?} is longer than 253 characters",
                    route.name()
                ));
            }
            Ok(route)
        })()
        .map_err(|e: String| format!("routes[{i}]: {e}"))?;
        out.push(checked);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The domains of an add or remove request, normalised.
pub fn domains(body: &[u8]) -> Result<Vec<String>, String> {
    let req: crate::api::sd::DomainsBody =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    if req.domains.is_empty() {
        return Err("missing domains".into());
    }
    if req.domains.len() > MAX_ROUTES_PER_REQUEST {
        return Err(format!(
            "too many domains: at most {MAX_ROUTES_PER_REQUEST} per request"
        ));
    }
    let mut out = req
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| domain(d).map_err(|e| format!("domains[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

pub const MAX_ROUTES_PER_REQUEST: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_single_rfc1123_labels() {
        assert_eq!(host("Backend-2").unwrap(), "backend-2");
        for bad in ["", "a.b", "-a", "a-", "a_b", "ü", &"a".repeat(64), "a b"] {
            assert!(host(bad).is_err(), "{bad:?} accepted");
        }
        assert!(host(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn domains_need_two_labels_and_a_non_numeric_last_one() {
        assert_eq!(domain("Apps.Internal.").unwrap(), "apps.internal");
        for bad in [
            "internal",
            "",
            "apps..internal",
            "apps.123",
            "a_b.internal",
            ".apps",
        ] {
            assert!(domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bad_route_refuses_the_request_and_names_it() {
        let body = br#"{"routes":[{"app_guid":"a","host":"ok","domain":"apps.internal"},
                                   {"app_guid":"a","host":"no_pe","domain":"apps.internal"}]}"#;
        let e = routes(body).unwrap_err();
        assert!(e.starts_with("routes[1]: invalid hostname"), "{e}");
        assert!(routes(br#"{"routes":[]}"#).unwrap_err().contains("missing"));
        assert!(
            routes(br#"{"routes":[{"app_guid":"","host":"a","domain":"apps.internal"}]}"#)
                .unwrap_err()
                .contains("missing app_guid")
        );
        assert!(routes(
            br#"{"routes":[{"app_guid":"a","host":"a","domain":"apps.internal","x":1}]}"#
        )
        .unwrap_err()
        .contains("unknown field"));
    }
}
