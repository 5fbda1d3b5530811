//! Service discovery on the internal (mutual TLS) API:
//!
//! - `PUT /networking/v1/internal/service_discovery/cells/<cell_id>` with
//!   `{"instances": [{"app_guid", "index", "ip"}]}`: everything the cell runs now, replacing what
//!   it reported before (a stopped instance is gone with the next report).
//! - `GET /networking/v1/internal/service_discovery/table[?after=<version>&wait=<seconds>]`: the
//!   resolver table ([`crate::dns::InternalRoutes`]) with its version in [`VERSION_HEADER`]; with
//!   `after` equal to the current version the request is parked until the table changes (then
//!   200 and the new table) or `wait` passes (then 304, no body).

use super::registry::Registry;
use super::validate;
use crate::api::sd::{CellRegistration, CELLS_PATH, TABLE_PATH, VERSION_HEADER};
use crate::http::{Parked, Reply, Request, Response, Wake};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Instances one cell may report.
pub const MAX_INSTANCES_PER_CELL: usize = 10_000;
/// The longest a table watch is held.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The answer for a service discovery request (with the route name for metrics), or `None` when
/// the path is not one of them.
pub fn reply(registry: &Arc<Registry>, req: &Request) -> Option<(&'static str, Reply)> {
    let path = req.path.as_str();
    if path == TABLE_PATH {
        return Some(match req.method.as_str() {
            "GET" => ("ServiceDiscoveryTable", table(registry, req)),
            _ => (
                "MethodNotAllowed",
                now(Response::error(405, "method not allowed")),
            ),
        });
    }
    let cell = path.strip_prefix(CELLS_PATH)?.strip_prefix('/')?;
    Some(match req.method.as_str() {
        "PUT" => (
            "ServiceDiscoveryCell",
            now(register(registry, cell, &req.body)),
        ),
        _ => (
            "MethodNotAllowed",
            now(Response::error(405, "method not allowed")),
        ),
    })
}

fn now(resp: Response) -> Reply {
    Reply::Now(resp)
}

pub fn check_cell_id(cell: &str) -> Result<(), String> {
    if cell.is_empty() || cell.len() > 255 {
        return Err("cell id must be 1 to 255 characters".into());
    }
    if !cell
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(format!(
            "cell id {cell:?} may hold only letters, digits and - _ . :"
        ));
    }
    Ok(())
}

fn register(registry: &Registry, cell: &str, body: &[u8]) -> Response {
    if let Err(e) = check_cell_id(cell) {
        return Response::error(400, &e);
    }
    let reg: CellRegistration = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Response::error(400, &format!("invalid request body: {e}")),
    };
    if reg.instances.len() > MAX_INSTANCES_PER_CELL {
        return Response::error(
            400,
            &format!("at most {MAX_INSTANCES_PER_CELL} instances per cell"),
        );
    }
    let mut ips = HashSet::new();
    for (i, inst) in reg.instances.iter().enumerate() {
        if let Err(e) = validate::app_guid(&inst.app_guid) {
            return Response::error(400, &format!("instances[{i}]: {e}"));
        }
        if !ips.insert(inst.ip) {
            return Response::error(
                400,
                &format!("instances[{i}]: ip {} reported twice", inst.ip),
            );
        }
    }
    match registry
        .store()
        .replace_cell(cell, &reg.instances, crate::clock::unix_millis())
    {
        Ok(version) => Response::json(200, &serde_json::json!({ "version": version })),
        Err(e) => {
            log::error!("service discovery: registering cell {cell:?}: {e}");
            Response::error(500, "database write failed")
        }
    }
}

fn table(registry: &Arc<Registry>, req: &Request) -> Reply {
    let wait = match req.query_param("wait").map(str::parse::<u64>) {
        None => Duration::ZERO,
        Some(Ok(s)) => Duration::from_secs(s).min(MAX_WAIT),
        Some(Err(_)) => {
            return now(Response::error(
                400,
                "wait must be a whole number of seconds",
            ))
        }
    };
    let after = match req.query_param("after").map(str::parse::<i64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return now(Response::error(400, "after must be a table version")),
    };
    let Some(current) = registry.current() else {
        return now(Response::error(
            503,
            "the service discovery table is not loaded yet",
        ));
    };
    if after != Some(current.version) || wait.is_zero() {
        return now(answer(&current));
    }
    let watched = Arc::clone(registry);
    Reply::Park(Parked {
        until: Instant::now() + wait,
        signal: registry.signal(),
        respond: Box::new(move |wake| {
            let current = watched.current()?;
            if Some(current.version) != after {
                return Some(answer(&current));
            }
            match wake {
                Wake::Expired => Some(
                    Response::new(304).with_header(VERSION_HEADER, current.version.to_string()),
                ),
                Wake::Signalled => None,
            }
        }),
    })
}

fn answer(t: &super::registry::Rendered) -> Response {
    Response::new(200)
        .with_header("content-type", "application/json")
        .with_header(VERSION_HEADER, t.version.to_string())
        .with_body(t.body.to_vec())
}
