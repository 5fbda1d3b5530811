//! Internal routes and internal domains on the external API, under the same authentication as
//! policies:
//!
//! - `GET internal_routes`: the routes (an admin sees all; a space developer those of apps in
//!   their spaces); `POST internal_routes` maps, `POST internal_routes/delete` unmaps, each
//!   `{"routes": [{"app_guid", "host", "domain"}]}`, all or nothing: an admin, or a space
//!   developer of every app named (through the Cloud Controller).
//! - `GET internal_domains`; `POST internal_domains` adds and `POST internal_domains/delete`
//!   removes `{"domains": [...]}`: admins only. Resolvers learn a new domain with the next table,
//!   within a second; no redeploy.

use super::registry::Registry;
use super::store::SdError;
use super::validate;
use crate::api::sd::{DomainsBody, InternalRoute, RoutesResponse};
use crate::http::{Request, Response};
use crate::policy::auth::{Identity, SCOPE_ADMIN, SCOPE_WRITE};
use crate::policy::authz::{Denied, Guard};
use std::collections::BTreeSet;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SdRoute {
    RoutesIndex,
    MapRoutes,
    UnmapRoutes,
    DomainsIndex,
    AddDomains,
    RemoveDomains,
}

impl SdRoute {
    /// (GET route, POST route, allowed methods) of a path tail under `/external/`.
    pub fn resolve(tail: &str) -> Option<(Option<SdRoute>, Option<SdRoute>, &'static str)> {
        Some(match tail {
            "internal_routes" => (
                Some(SdRoute::RoutesIndex),
                Some(SdRoute::MapRoutes),
                "GET, POST",
            ),
            "internal_routes/delete" => (None, Some(SdRoute::UnmapRoutes), "POST"),
            "internal_domains" => (
                Some(SdRoute::DomainsIndex),
                Some(SdRoute::AddDomains),
                "GET, POST",
            ),
            "internal_domains/delete" => (None, Some(SdRoute::RemoveDomains), "POST"),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SdRoute::RoutesIndex => "InternalRoutesIndex",
            SdRoute::MapRoutes => "MapInternalRoutes",
            SdRoute::UnmapRoutes => "UnmapInternalRoutes",
            SdRoute::DomainsIndex => "InternalDomainsIndex",
            SdRoute::AddDomains => "AddInternalDomains",
            SdRoute::RemoveDomains => "RemoveInternalDomains",
        }
    }

    /// As policies: routes are for writers (and space developers under self-service); domains
    /// are platform configuration, changed by admins only.
    pub fn scopes(self) -> (&'static [&'static str], bool) {
        const ADMIN: &[&str] = &[SCOPE_ADMIN];
        const WRITE: &[&str] = &[SCOPE_ADMIN, SCOPE_WRITE];
        match self {
            SdRoute::RoutesIndex | SdRoute::MapRoutes | SdRoute::UnmapRoutes => (WRITE, true),
            SdRoute::DomainsIndex => (WRITE, true),
            SdRoute::AddDomains | SdRoute::RemoveDomains => (ADMIN, false),
        }
    }
}

pub fn serve(
    registry: &Registry,
    guard: &Guard<'_>,
    route: SdRoute,
    who: &Identity,
    req: &Request,
) -> Response {
    let store = registry.store();
    match route {
        SdRoute::RoutesIndex => match store.routes() {
            Ok(routes) => match visible(guard, who, routes) {
                Ok(routes) => Response::json(
                    200,
                    &RoutesResponse {
                        total_routes: routes.len(),
                        routes,
                    },
                ),
                Err(d) => denied(d),
            },
            Err(e) => failed("list internal routes", e),
        },
        SdRoute::MapRoutes | SdRoute::UnmapRoutes => {
            let routes = match validate::routes(&req.body) {
                Ok(r) => r,
                Err(e) => return Response::error(400, &e),
            };
            let apps: Vec<String> = routes
                .iter()
                .map(|r| r.app_guid.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if let Err(d) = guard.check_apps(who, &apps) {
                return denied(d);
            }
            let result = if route == SdRoute::MapRoutes {
                store.map(&routes)
            } else {
                store.unmap(&routes)
            };
            written(result, "internal routes")
        }
        SdRoute::DomainsIndex => match store.domains() {
            Ok(domains) => Response::json(200, &DomainsBody { domains }),
            Err(e) => failed("list internal domains", e),
        },
        SdRoute::AddDomains | SdRoute::RemoveDomains => {
            let domains = match validate::domains(&req.body) {
                Ok(d) => d,
                Err(e) => return Response::error(400, &e),
            };
            let result = if route == SdRoute::AddDomains {
                store.add_domains(&domains)
            } else {
                store.remove_domains(&domains)
            };
            written(result, "internal domains")
        }
    }
}

/// Routes whose app is in one of the caller's spaces (all of them for an admin).
fn visible(
    guard: &Guard<'_>,
    who: &Identity,
    routes: Vec<InternalRoute>,
) -> Result<Vec<InternalRoute>, Denied> {
    let apps: Vec<String> = routes
        .iter()
        .map(|r| r.app_guid.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let seen = guard.visible_apps(who, &apps)?;
    Ok(routes
        .into_iter()
        .filter(|r| seen.contains(&r.app_guid))
        .collect())
}

fn written(result: Result<i64, SdError>, what: &str) -> Response {
    match result {
        Ok(_) => Response::json(200, &serde_json::json!({})),
        Err(e @ SdError::DomainInUse { .. }) => Response::error(409, &e.to_string()),
        Err(e) if e.is_refusal() => Response::error(400, &e.to_string()),
        Err(e) => {
            log::error!("{what}: {e}");
            Response::error(500, "database write failed")
        }
    }
}

fn failed(what: &str, e: SdError) -> Response {
    log::error!("{what}: {e}");
    Response::error(500, "database read failed")
}

fn denied(d: Denied) -> Response {
    match d {
        Denied::NotAccessible | Denied::QuotaExceeded => {
            Response::error(403, "one or more applications cannot be found or accessed")
        }
        Denied::Failed { message, detail } => {
            log::error!("{message}: {detail}");
            Response::error(500, message)
        }
    }
}
