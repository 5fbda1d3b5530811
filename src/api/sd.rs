//! Service discovery: internal routes and internal domains (external API and CLI), a cell's
//! registrations and the resolver table (internal API). The table itself is
//! [`crate::dns::InternalRoutes`], the shape the cell resolver validates and snapshots.

use serde::{Deserialize, Serialize};

pub use crate::dns::table::{Instance, InternalRoutes, DEFAULT_DOMAIN};

/// `<host>.<domain>` resolves to the running instances of `app_guid` (a name may be mapped to
/// several apps; it then resolves to the instances of all of them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalRoute {
    pub app_guid: String,
    pub host: String,
    pub domain: String,
}

impl InternalRoute {
    pub fn new(app_guid: &str, host: &str, domain: &str) -> InternalRoute {
        InternalRoute {
            app_guid: app_guid.to_string(),
            host: host.to_string(),
            domain: domain.to_string(),
        }
    }

    /// The name containers ask for.
    pub fn name(&self) -> String {
        format!("{}.{}", self.host, self.domain)
    }
}

/// Body of `POST internal_routes` (map) and `POST internal_routes/delete` (unmap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesRequest {
    pub routes: Vec<InternalRoute>,
}

/// Answer of `GET internal_routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesResponse {
    pub total_routes: usize,
    pub routes: Vec<InternalRoute>,
}

/// Body of `POST internal_domains` (add) and `POST internal_domains/delete` (remove), and the
/// answer of `GET internal_domains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainsBody {
    pub domains: Vec<String>,
}

/// Body of `PUT /networking/v1/internal/service_discovery/cells/<cell_id>`: every app instance
/// running on the cell now. It replaces what the cell reported before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellRegistration {
    pub instances: Vec<Instance>,
}

/// The table's version on every answer of the table endpoint; a watch passes it back as
/// `after=`.
pub const VERSION_HEADER: &str = "x-netman-sd-version";

/// Paths of the internal API's service discovery endpoints.
pub const CELLS_PATH: &str = "/networking/v1/internal/service_discovery/cells";
pub const TABLE_PATH: &str = "/networking/v1/internal/service_discovery/table";
