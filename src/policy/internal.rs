//! The internal API (reference §3), served only over mutual TLS to the cell agents: policies with
//! tags (optionally `id=` filtered), `policies_last_updated` in nanoseconds, `PUT tags`, and the
//! security groups with their version and watch (answered by [`super::asg::internal`]).
//!
//! `policies_last_updated?wait=<seconds>&after=<version>` is the watch: answered at once when the
//! version differs from `after`, else parked (holding no worker) until it changes or `wait`
//! passes, and then answered with the version as the plain endpoint would. Its answers carry
//! [`WATCH_HEADER`], by which an agent tells this server from one that ignores the parameters.

use super::store::{PolicyFilter, Store};
use super::validate::check_stored_string;
use super::watch::VersionWatch;
use crate::api::policy::TagRequest;
use crate::http::{Handler, Parked, Reply, Request, Response, Wake};
use crate::metrics::HttpMetrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::api::policy::{WATCH_HEADER, WATCH_UNAFFECTED};
use std::collections::HashSet;
/// The longest a watch may be held; a larger `wait` is cut to this.
pub const MAX_WATCH_WAIT: Duration = Duration::from_secs(300);

/// Every route of the internal API: (method, path template), compared with `docs/openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/networking/{version}/internal/policies"),
    (
        "GET",
        "/networking/{version}/internal/policies_last_updated",
    ),
    ("PUT", "/networking/v1/internal/tags"),
    ("GET", "/networking/{version}/internal/security_groups"),
    (
        "GET",
        "/networking/{version}/internal/security_groups_last_updated",
    ),
    (
        "PUT",
        "/networking/v1/internal/service_discovery/cells/{cell_id}",
    ),
    ("GET", "/networking/v1/internal/service_discovery/table"),
];

pub struct InternalApi {
    pub store: Arc<dyn Store>,
    pub asgs: Arc<super::asg::internal::AsgInternal>,
    pub metrics: HttpMetrics,
    pub watch: VersionWatch,
    /// Cell registrations and the resolver table (service discovery).
    pub sd: Arc<super::sd::Registry>,
}

impl Handler for InternalApi {
    fn handle(&self, req: &Request) -> Response {
        let started = Instant::now();
        let (route, resp) = self.route(req);
        finish(&self.metrics, req, route, resp, started)
    }

    fn reply(&self, req: &Request) -> Reply {
        if let Some(reply) = self.service_discovery(req) {
            return reply;
        }
        let asking = req.query_param("wait").is_some() || req.query_param("after").is_some();
        let (watch, route, by_ids) = if req.method != "GET" || !asking {
            return Reply::Now(self.handle(req));
        } else if req.path.ends_with("/internal/policies_last_updated") {
            (&self.watch, "InternalPoliciesWatch", true)
        } else if req.path.ends_with("/internal/security_groups_last_updated") {
            (&self.asgs.watch, "InternalSecurityGroupsWatch", false)
        } else {
            return Reply::Now(self.handle(req));
        };
        let started = Instant::now();
        match self.watch_request(watch, route, by_ids, req) {
            Ok(reply) => reply,
            Err(resp) => Reply::Now(finish(
                &self.metrics,
                req,
                route,
                resp.with_header(WATCH_HEADER, "1"),
                started,
            )),
        }
    }

    fn decorate_refusal(&self, _req: &Request, resp: &mut Response) {
        resp.set_header("strict-transport-security", "max-age=31536000");
    }
}

/// Headers, metrics and the log line every internal answer gets.
fn finish(
    metrics: &HttpMetrics,
    req: &Request,
    route: &str,
    mut resp: Response,
    started: Instant,
) -> Response {
    resp.set_header("strict-transport-security", "max-age=31536000");
    let elapsed = started.elapsed();
    metrics.observe(route, resp.status, elapsed);
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

/// The version, marked as the watch's; `unaffected` when it moved only by changes that touched
/// none of the watch's ids (the agent then takes it without fetching).
fn version_answer(version: i64, unaffected: bool) -> Response {
    let mark = if unaffected { WATCH_UNAFFECTED } else { "1" };
    Response::text(200, version.to_string()).with_header(WATCH_HEADER, mark)
}

impl InternalApi {
    fn service_discovery(&self, req: &Request) -> Option<Reply> {
        let started = Instant::now();
        let (route, reply) = super::sd::internal::reply(&self.sd, req)?;
        Some(match reply {
            Reply::Now(resp) => Reply::Now(finish(&self.metrics, req, route, resp, started)),
            parked => parked,
        })
    }

    /// `Err` carries an answer to give at once (the version differs, a bad parameter, a failure).
    fn watch_request(
        &self,
        watch: &VersionWatch,
        route: &'static str,
        by_ids: bool,
        req: &Request,
    ) -> Result<Reply, Response> {
        let wait = match req.query_param("wait") {
            None => Duration::ZERO,
            Some(w) => match w.parse::<u64>() {
                Ok(s) => Duration::from_secs(s).min(MAX_WATCH_WAIT),
                Err(_) => {
                    return Err(Response::error(
                        400,
                        "wait must be a whole number of seconds",
                    ))
                }
            },
        };
        let after = match req.query_param("after").map(str::parse::<i64>) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => {
                return Err(Response::error(
                    400,
                    "after must be a version as the plain endpoint returns it",
                ))
            }
        };
        let ids: Option<Arc<HashSet<String>>> =
            req.query_param("id").filter(|_| by_ids).map(|list| {
                Arc::new(
                    list.split(',')
                        .filter(|id| !id.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            });
        // Register first: a change between the read below and parking then wakes the request.
        let watcher = watch.watcher();
        let current = watch
            .refresh()
            .map_err(|e| failed(route, e, "database read failed"))?;
        let Some(after) = after.filter(|_| !wait.is_zero()) else {
            return Err(version_answer(current, false));
        };
        let baseline = if after == current {
            watch.baseline()
        } else {
            // Behind: answered now unless every change since `after` is known and none of them
            // touched the watch's ids.
            let Some(ids) = &ids else {
                return Err(version_answer(current, false));
            };
            match watch.baseline_of(after, current) {
                Some(since) if !watch.look(since, Some(ids)).affected => watch.baseline(),
                _ => return Err(version_answer(current, false)),
            }
        };
        let watch = watch.clone();
        let metrics = self.metrics.clone();
        let shell = Request {
            body: Vec::new(),
            query: Vec::new(),
            headers: Vec::new(),
            ..req.clone()
        };
        let started = Instant::now();
        Ok(Reply::Park(Parked {
            until: Instant::now() + wait,
            signal: watch.signal(),
            respond: Box::new(move |wake| {
                let _registered = &watcher;
                let look = watch.look(baseline, ids.as_deref());
                let version = look.version.or(watch.current()).unwrap_or(after);
                let answer = if look.affected && (ids.is_some() || version != after) {
                    version_answer(version, false)
                } else if wake == Wake::Expired {
                    // Nothing that concerns this watch; the version may have moved for others.
                    version_answer(version, version != after)
                } else {
                    return None;
                };
                Some(finish(&metrics, &shell, route, answer, started))
            }),
        }))
    }

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
            ("GET", ["networking", _, "internal", "security_groups"]) => {
                ("InternalSecurityGroups", self.asgs.list(req))
            }
            ("GET", ["networking", _, "internal", "security_groups_last_updated"]) => (
                "InternalSecurityGroupsLastUpdated",
                self.asgs.last_updated(),
            ),
            (_, ["networking", _, "internal", "policies" | "policies_last_updated"])
            | (
                _,
                ["networking", _, "internal", "security_groups" | "security_groups_last_updated"],
            )
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
        match self.store.list_rendered(&filter) {
            Ok(body) => Response::new(200)
                .with_header("content-type", "application/json")
                .with_body(body),
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

fn failed(what: &str, e: impl std::fmt::Display, message: &str) -> Response {
    log::error!("{what}: {e}");
    Response::error(500, message)
}
