//! The internal API (reference §3), served only over mutual TLS to the cell agents: policies with
//! tags (optionally `id=` filtered), `policies_last_updated` in nanoseconds, and `PUT tags`.

use super::store::{PolicyFilter, Store, StoreError};
use super::validate::check_stored_string;
use crate::api::policy::{PoliciesResponse, TagRequest};
use crate::http::{Handler, Request, Response};
use crate::metrics::HttpMetrics;
use std::sync::Arc;
use std::time::Instant;

/// Every route of the internal API: (method, path template), compared with `docs/openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/networking/{version}/internal/policies"),
    (
        "GET",
        "/networking/{version}/internal/policies_last_updated",
    ),
    ("PUT", "/networking/v1/internal/tags"),
];

pub struct InternalApi {
    pub store: Arc<dyn Store>,
    pub metrics: HttpMetrics,
}

impl Handler for InternalApi {
    fn handle(&self, req: &Request) -> Response {
        let started = Instant::now();
        let (route, resp) = self.route(req);
        let mut resp = resp;
        resp.set_header("strict-transport-security", "max-age=31536000");
        let elapsed = started.elapsed();
        self.metrics.observe(route, resp.status, elapsed);
        let client = req
            .peer_certificates
            .as_ref()
            .and_then(|c| c.first())
            .and_then(crate::tls::common_name)
            .unwrap_or_default();
        log::debug!(
            "internal {} {} -> {} in {:.1} ms client={client}",
            req.method,
            req.path,
            resp.status,
            elapsed.as_secs_f64() * 1000.0
        );
        resp
    }
}

impl InternalApi {
    fn route(&self, req: &Request) -> (&'static str, Response) {
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("GET", ["networking", _, "internal", "policies"]) => {
                ("InternalPolicies", self.policies(req))
            }
            ("GET", ["networking", _, "internal", "policies_last_updated"]) => (
                "InternalPoliciesLastUpdated",
                match self.store.last_updated() {
                    Ok(ns) => Response::text(200, ns.to_string()),
                    Err(e) => failed("policies last updated", e, "database read failed"),
                },
            ),
            ("PUT", ["networking", "v1", "internal", "tags"]) => ("CreateTags", self.put_tag(req)),
            (_, ["networking", _, "internal", "policies" | "policies_last_updated"])
            | (_, ["networking", "v1", "internal", "tags"]) => (
                "MethodNotAllowed",
                Response::error(405, "method not allowed"),
            ),
            _ => ("NotFound", Response::error(404, "not found")),
        }
    }

    fn policies(&self, req: &Request) -> Response {
        let filter = match req.query_param("id") {
            Some(ids) => PolicyFilter::Either(ids.split(',').map(str::to_string).collect()),
            None => PolicyFilter::All,
        };
        match self.store.list(&filter) {
            Ok(policies) => Response::json(
                200,
                &PoliciesResponse {
                    total_policies: policies.len(),
                    policies,
                },
            ),
            Err(e) => failed("internal policies", e, "database read failed"),
        }
    }

    fn put_tag(&self, req: &Request) -> Response {
        let body: TagRequest = match serde_json::from_slice(&req.body) {
            Ok(b) => b,
            Err(e) => return Response::error(400, &format!("unmarshal json: {e}")),
        };
        if body.id.is_empty() || body.kind.is_empty() {
            return Response::error(400, "id and type are required");
        }
        if let Err(e) = check_stored_string("id", &body.id)
            .and_then(|()| check_stored_string("type", &body.kind))
        {
            return Response::error(400, &e);
        }
        match self.store.create_tag(&body.id, &body.kind) {
            Ok(tag) => Response::json(200, &tag),
            Err(e) => failed("create tag", e, "database create failed"),
        }
    }
}

fn failed(what: &str, e: StoreError, message: &str) -> Response {
    log::error!("{what}: {e}");
    Response::error(500, message)
}
