//! The security-group routes of the internal API (mutual TLS, the cells):
//! `GET /networking/:v/internal/security_groups?space_guids=a,b&limit=N&from=ID`, byte for byte
//! the original's (a non-integer `from` or `limit` is a 500, as there), and
//! `GET /networking/:v/internal/security_groups_last_updated`, the version as a bare integer; with
//! `?wait=<seconds>&after=<version>` it is the watch (parked until the version moves), as
//! `policies_last_updated` is for policies.

use super::cache::{select, AsgCache};
use crate::http::{Request, Response};
use crate::policy::watch::VersionWatch;

pub struct AsgInternal {
    pub cache: AsgCache,
    pub watch: VersionWatch,
}

/// A `from`/`limit` parameter: absent or empty is 0; anything else not an integer is the
/// original's 500.
fn int_param(req: &Request, name: &str) -> Result<i64, Response> {
    match req.query_param(name) {
        None | Some("") => Ok(0),
        Some(v) => v.parse::<i64>().map_err(|e| {
            log::debug!("internal security groups: {name}={v:?}: {e}");
            Response::error(500, &format!("parsing {name}: {e}"))
        }),
    }
}

impl AsgInternal {
    pub fn list(&self, req: &Request) -> Response {
        let (from, limit) = match (int_param(req, "from"), int_param(req, "limit")) {
            (Ok(f), Ok(l)) => (f, l),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let spaces: Vec<&str> = req
            .query_param("space_guids")
            .map(|s| s.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        match self.cache.snapshot() {
            Ok(snapshot) => Response::json(200, &select(&snapshot, &spaces, from, limit)),
            Err(e) => {
                log::error!("internal security groups: {e}");
                Response::error(500, "database read failed")
            }
        }
    }

    pub fn last_updated(&self) -> Response {
        match self.cache.store().version() {
            Ok(v) => Response::text(200, v.to_string()),
            Err(e) => {
                log::error!("security groups last updated: {e}");
                Response::error(500, "database read failed")
            }
        }
    }
}
