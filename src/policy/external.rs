//! The external API (reference §2): `/networking/{v0,v1}/external/...`, uptime and health, with
//! authentication, scopes, CORS, the security headers and `X-VCAP-Request-ID` on every answer.

use super::auth::{Authenticator, Identity, SCOPE_ADMIN, SCOPE_WRITE};
use super::authz::{Denied, Guard};
use super::cc::CloudController;
use super::cleanup;
use super::sd::external::SdRoute;
use super::store::{PolicyFilter, Store};
use super::validate::{parse_policies, ApiVersion};
use crate::api::policy::{PoliciesResponse, Policy, PolicyV0, TagsResponse, WhoAmI};
use crate::http::{Handler, Request, Response};
use crate::metrics::HttpMetrics;
use std::sync::Arc;
use std::time::Instant;

/// Every route of the external API: (method, path template). The OpenAPI test compares this
/// table with `docs/openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/networking"),
    ("GET", "/health"),
    ("GET", "/networking/{version}/external/policies"),
    ("POST", "/networking/{version}/external/policies"),
    ("POST", "/networking/{version}/external/policies/delete"),
    ("POST", "/networking/{version}/external/policies/cleanup"),
    ("GET", "/networking/{version}/external/tags"),
    ("GET", "/networking/{version}/external/whoami"),
    ("GET", "/networking/{version}/external/security_groups"),
    ("POST", "/networking/{version}/external/security_groups"),
    ("GET", "/networking/{version}/external/security_groups/{guid}"),
    ("PATCH", "/networking/{version}/external/security_groups/{guid}"),
    ("DELETE", "/networking/{version}/external/security_groups/{guid}"),
    (
        "POST",
        "/networking/{version}/external/security_groups/{guid}/relationships/{lifecycle}_spaces",
    ),
    (
        "DELETE",
        "/networking/{version}/external/security_groups/{guid}/relationships/{lifecycle}_spaces/{space_guid}",
    ),
    ("GET", "/networking/{version}/external/internal_routes"),
    ("POST", "/networking/{version}/external/internal_routes"),
    (
        "POST",
        "/networking/{version}/external/internal_routes/delete",
    ),
    ("GET", "/networking/{version}/external/internal_domains"),
    ("POST", "/networking/{version}/external/internal_domains"),
    (
        "POST",
        "/networking/{version}/external/internal_domains/delete",
    ),
];

#[derive(Debug, Clone)]
pub struct ExternalSettings {
    pub max_policies_per_source: usize,
    pub enable_space_developer_self_service: bool,
    pub allowed_cors_domains: Vec<String>,
    pub tls_enabled: bool,
}

pub struct ExternalApi {
    pub store: Arc<dyn Store>,
    pub asgs: super::asg::admin::AsgAdmin,
    pub auth: Arc<dyn Authenticator>,
    pub cc: Option<Arc<dyn CloudController>>,
    pub settings: ExternalSettings,
    pub metrics: HttpMetrics,
    pub started: Instant,
    /// The listeners whose failure `/health` reports.
    pub listeners: Vec<crate::http::ListenerHealth>,
    /// Internal routes and domains (service discovery).
    pub sd: Arc<super::sd::Registry>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Uptime,
    Health,
    PoliciesIndex,
    CreatePolicies,
    DeletePolicies,
    Cleanup,
    TagsIndex,
    WhoAmI,
    SecurityGroups,
    Sd(SdRoute),
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Uptime => "Uptime",
            Route::Health => "Health",
            Route::PoliciesIndex => "PoliciesIndex",
            Route::CreatePolicies => "CreatePolicies",
            Route::DeletePolicies => "DeletePolicies",
            Route::Cleanup => "Cleanup",
            Route::TagsIndex => "TagsIndex",
            Route::WhoAmI => "WhoAmI",
            Route::SecurityGroups => "SecurityGroups",
            Route::Sd(r) => r.name(),
        }
    }

    /// Scopes that may call the route; `true` in the second place when the space-developer
    /// self-service flag lifts the scope check.
    fn scopes(self) -> (&'static [&'static str], bool) {
        const ADMIN: &[&str] = &[SCOPE_ADMIN];
        const WRITE: &[&str] = &[SCOPE_ADMIN, SCOPE_WRITE];
        match self {
            Route::PoliciesIndex | Route::CreatePolicies | Route::DeletePolicies => (WRITE, true),
            Route::Sd(r) => r.scopes(),
            _ => (ADMIN, false),
        }
    }
}

/// What a path resolves to: a route, the methods the path allows, and the API version.
enum Resolved {
    Found(Route, Option<ApiVersion>),
    WrongMethod(&'static str),
    BadVersion(String),
    NotFound,
}

fn resolve(method: &str, path: &str) -> Resolved {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    match path {
        "/" | "/networking" => {
            return match method {
                "GET" | "HEAD" => Resolved::Found(Route::Uptime, None),
                _ => Resolved::WrongMethod("GET"),
            }
        }
        "/health" => {
            return match method {
                "GET" | "HEAD" => Resolved::Found(Route::Health, None),
                _ => Resolved::WrongMethod("GET"),
            }
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/networking/") else {
        return Resolved::NotFound;
    };
    let Some((version, tail)) = rest.split_once("/external/") else {
        return Resolved::NotFound;
    };
    if tail == "security_groups" || tail.starts_with("security_groups/") {
        return match (method, ApiVersion::parse(version)) {
            ("OPTIONS", _) => Resolved::WrongMethod("GET, POST, PATCH, DELETE"),
            (_, Some(v)) => Resolved::Found(Route::SecurityGroups, Some(v)),
            (_, None) => Resolved::BadVersion(version.to_string()),
        };
    }
    let (route_get, route_post, allowed): (Option<Route>, Option<Route>, &'static str) = match tail
    {
        "policies" => (
            Some(Route::PoliciesIndex),
            Some(Route::CreatePolicies),
            "GET, POST",
        ),
        "policies/delete" => (None, Some(Route::DeletePolicies), "POST"),
        "policies/cleanup" => (None, Some(Route::Cleanup), "POST"),
        "tags" => (Some(Route::TagsIndex), None, "GET"),
        "whoami" => (Some(Route::WhoAmI), None, "GET"),
        _ => match SdRoute::resolve(tail) {
            Some((get, post, allowed)) => (get.map(Route::Sd), post.map(Route::Sd), allowed),
            None => return Resolved::NotFound,
        },
    };
    if method == "OPTIONS" {
        return Resolved::WrongMethod(allowed);
    }
    let Some(v) = ApiVersion::parse(version) else {
        return Resolved::BadVersion(version.to_string());
    };
    let route = match method {
        "GET" | "HEAD" => route_get,
        "POST" => route_post,
        _ => None,
    };
    match route {
        Some(r) => Resolved::Found(r, Some(v)),
        None => Resolved::WrongMethod(allowed),
    }
}

impl Handler for ExternalApi {
    fn decorate_refusal(&self, req: &Request, resp: &mut Response) {
        self.decorate(req, resp);
    }

    fn handle(&self, req: &Request) -> Response {
        let started = Instant::now();
        let (route_name, mut resp) = match resolve(&req.method, &req.path) {
            Resolved::Found(route, version) => (route.name(), self.serve(route, version, req)),
            Resolved::WrongMethod(allowed) if req.method == "OPTIONS" => (
                "Preflight",
                Response::new(200)
                    .with_header("access-control-allow-methods", allowed)
                    .with_header("access-control-allow-headers", "authorization"),
            ),
            Resolved::WrongMethod(allowed) => (
                "MethodNotAllowed",
                Response::error(405, "method not allowed").with_header("allow", allowed),
            ),
            Resolved::BadVersion(v) => (
                "UnsupportedVersion",
                Response::error(406, &format!("api version '{v}' not supported")),
            ),
            Resolved::NotFound => ("NotFound", Response::error(404, "not found")),
        };
        self.decorate(req, &mut resp);
        let elapsed = started.elapsed();
        self.metrics.observe(route_name, resp.status, elapsed);
        log::debug!(
            "external {} {} -> {} in {:.1} ms request_id={}",
            req.method,
            req.path,
            resp.status,
            elapsed.as_secs_f64() * 1000.0,
            resp.header("x-vcap-request-id").unwrap_or("")
        );
        resp
    }
}

impl ExternalApi {
    fn serve(&self, route: Route, version: Option<ApiVersion>, req: &Request) -> Response {
        match route {
            Route::Uptime => {
                return Response::text(
                    200,
                    format!(
                        "Network policy server, up for {}\n",
                        go_duration(self.started.elapsed())
                    ),
                )
            }
            Route::Health => {
                if let Some(e) = self.listeners.iter().find_map(|l| l.check().err()) {
                    log::error!("health: {e}");
                    return Response::error(500, &e);
                }
                return match self.store.check() {
                    Ok(()) => Response::new(200),
                    Err(e) => {
                        log::error!("health: {e}");
                        Response::error(500, "check database failed")
                    }
                };
            }
            _ => {}
        }
        let who = match self.authenticate(route, req) {
            Ok(who) => who,
            Err(resp) => return resp,
        };
        let version = version.unwrap_or(ApiVersion::V1);
        match route {
            Route::PoliciesIndex => self.index(&who, version, req),
            Route::CreatePolicies => self.create(&who, version, req),
            Route::DeletePolicies => self.delete(&who, version, req),
            Route::Cleanup => match cleanup::run(&*self.store, self.cc.as_deref()) {
                Ok(deleted) => policies_response(ApiVersion::V1, deleted),
                Err(e) => {
                    log::error!("cleanup: {e}");
                    Response::error(500, "policies cleanup failed")
                }
            },
            Route::TagsIndex => match self.store.tags() {
                Ok(tags) => Response::json(200, &TagsResponse { tags }),
                Err(e) => {
                    log::error!("tags: {e}");
                    Response::error(500, "database read failed")
                }
            },
            Route::WhoAmI => {
                let subject = if who.user_name.is_empty() {
                    who.subject.clone()
                } else {
                    who.user_name.clone()
                };
                Response::json(200, &WhoAmI { subject })
            }
            Route::SecurityGroups => {
                let rest = req
                    .path
                    .split_once("/external/security_groups")
                    .map_or("", |(_, rest)| rest);
                let segment = match version {
                    ApiVersion::V0 => "v0",
                    ApiVersion::V1 => "v1",
                };
                self.asgs.serve(segment, rest, req)
            }
            Route::Sd(r) => super::sd::external::serve(&self.sd, &self.guard(), r, &who, req),
            Route::Uptime | Route::Health => unreachable!("answered above"),
        }
    }

    fn authenticate(&self, route: Route, req: &Request) -> Result<Identity, Response> {
        let Some(header) = req.header("authorization") else {
            return Err(Response::error(401, "missing authorization header")
                .with_header("www-authenticate", "Bearer"));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or(header);
        let who = self.auth.authenticate(token).map_err(|e| {
            log::debug!("token rejected: {e}");
            Response::error(401, "failed to verify token with uaa")
        })?;
        let (allowed, self_service) = route.scopes();
        let skip = self_service && self.settings.enable_space_developer_self_service;
        if !skip && !who.has_any_scope(allowed) {
            return Err(Response::error(
                403,
                &format!(
                    "provided scopes [{}] do not include allowed scopes [{}]",
                    who.scopes.join(" "),
                    allowed.join(" ")
                ),
            ));
        }
        Ok(who)
    }

    fn guard(&self) -> Guard<'_> {
        Guard {
            cc: self.cc.as_deref(),
            store: &*self.store,
            max_policies_per_source: self.settings.max_policies_per_source,
        }
    }

    fn index(&self, who: &Identity, version: ApiVersion, req: &Request) -> Response {
        let filter = filter_from_query(req);
        let policies = match self.store.list(&filter) {
            Ok(p) => p,
            Err(e) => {
                log::error!("list policies: {e}");
                return Response::error(500, "database read failed");
            }
        };
        match self.guard().filter_visible(who, policies) {
            Ok(visible) => policies_response(version, visible),
            Err(denied) => denied_response(denied),
        }
    }

    fn create(&self, who: &Identity, version: ApiVersion, req: &Request) -> Response {
        let policies = match parse_policies(version, &req.body) {
            Ok(p) => p,
            Err(msg) => return Response::error(400, &msg),
        };
        let guard = self.guard();
        if let Err(denied) = guard
            .check_access(who, &policies)
            .and_then(|()| guard.check_quota(who, &policies))
        {
            return denied_response(denied);
        }
        match self.store.create(&policies) {
            Ok(()) => Response::json(200, &serde_json::json!({})),
            Err(e) => {
                log::error!("create policies: {e}");
                Response::error(500, "database create failed")
            }
        }
    }

    fn delete(&self, who: &Identity, version: ApiVersion, req: &Request) -> Response {
        let policies = match parse_policies(version, &req.body) {
            Ok(p) => p,
            Err(msg) => return Response::error(400, &msg),
        };
        if let Err(denied) = self.guard().check_access(who, &policies) {
            return denied_response(denied);
        }
        match self.store.delete(&policies) {
            Ok(()) => Response::json(200, &serde_json::json!({})),
            Err(e) => {
                log::error!("delete policies: {e}");
                Response::error(500, "database delete failed")
            }
        }
    }

    /// Headers every external answer carries (reference §2.6).
    fn decorate(&self, req: &Request, resp: &mut Response) {
        resp.set_header("x-xss-protection", "1; mode=block");
        resp.set_header("x-content-type-options", "nosniff");
        resp.set_header("x-frame-options", "deny");
        resp.set_header("content-security-policy", "frame-ancestors 'none'");
        if self.settings.tls_enabled {
            resp.set_header("strict-transport-security", "max-age=31536000");
        }
        let fresh = uuid::Uuid::new_v4().to_string();
        let request_id = match req.header("x-vcap-request-id") {
            Some(incoming) if !incoming.is_empty() => format!("{incoming}::{fresh}"),
            _ => fresh,
        };
        resp.set_header("x-vcap-request-id", request_id);
        if let Some(origin) = req.header("origin") {
            if let Some(allowed) = self
                .settings
                .allowed_cors_domains
                .iter()
                .find(|d| d.as_str() == "*" || d.as_str() == origin)
            {
                resp.set_header("access-control-allow-origin", allowed.clone());
            }
        }
    }
}

/// The filter of `GET policies`: only the first occurrence of each parameter counts, values
/// split on commas.
pub fn filter_from_query(req: &Request) -> PolicyFilter {
    let split = |v: &str| v.split(',').map(str::to_string).collect::<Vec<_>>();
    if let Some(ids) = req.query_param("id") {
        return PolicyFilter::Either(split(ids));
    }
    match (req.query_param("source_id"), req.query_param("dest_id")) {
        (Some(s), Some(d)) => PolicyFilter::SourceAndDestination(split(s), split(d)),
        (Some(s), None) => PolicyFilter::Source(split(s)),
        (None, Some(d)) => PolicyFilter::Destination(split(d)),
        (None, None) => PolicyFilter::All,
    }
}

fn policies_response(version: ApiVersion, policies: Vec<Policy>) -> Response {
    let untagged = policies.iter().map(Policy::untagged);
    match version {
        ApiVersion::V1 => {
            let policies: Vec<Policy> = untagged.collect();
            Response::json(
                200,
                &PoliciesResponse {
                    total_policies: policies.len(),
                    policies,
                },
            )
        }
        ApiVersion::V0 => {
            let policies: Vec<PolicyV0> = untagged.filter_map(|p| p.to_v0()).collect();
            Response::json(
                200,
                &PoliciesResponse {
                    total_policies: policies.len(),
                    policies,
                },
            )
        }
    }
}

fn denied_response(denied: Denied) -> Response {
    match denied {
        Denied::NotAccessible => {
            Response::error(403, "one or more applications cannot be found or accessed")
        }
        Denied::QuotaExceeded => Response::error(403, "policy quota exceeded"),
        Denied::Failed { message, detail } => {
            log::error!("{message}: {detail}");
            Response::error(500, message)
        }
    }
}

/// A duration the way Go prints one (`1h2m3.5s`), as the original's uptime text shows.
pub fn go_duration(d: std::time::Duration) -> String {
    let total = d.as_secs_f64();
    let hours = (total / 3600.0).floor();
    let minutes = ((total - hours * 3600.0) / 60.0).floor();
    let seconds = total - hours * 3600.0 - minutes * 60.0;
    let secs = format!("{seconds:.6}");
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    match (hours as u64, minutes as u64) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(62)), "1m2s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn routes_resolve() {
        assert!(matches!(
            resolve("GET", "/networking/v1/external/policies"),
            Resolved::Found(Route::PoliciesIndex, Some(ApiVersion::V1))
        ));
        assert!(matches!(
            resolve("POST", "/networking/v0/external/policies/delete"),
            Resolved::Found(Route::DeletePolicies, Some(ApiVersion::V0))
        ));
        assert!(matches!(
            resolve("GET", "/networking/v2/external/policies"),
            Resolved::BadVersion(v) if v == "v2"
        ));
        assert!(matches!(
            resolve("DELETE", "/networking/v1/external/tags"),
            Resolved::WrongMethod("GET")
        ));
        assert!(matches!(resolve("GET", "/nope"), Resolved::NotFound));
    }

    #[test]
    fn filter_uses_first_occurrence() {
        let r = Request::new("GET", "/p?id=a,b&id=c");
        assert_eq!(
            filter_from_query(&r),
            PolicyFilter::Either(vec!["a".into(), "b".into()])
        );
        let r = Request::new("GET", "/p?dest_id=d&source_id=s");
        assert_eq!(
            filter_from_query(&r),
            PolicyFilter::SourceAndDestination(vec!["s".into()], vec!["d".into()])
        );
    }
}
