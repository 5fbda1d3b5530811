//! What the daemon tells the CNI plugin (and drain scripts) on its local port.

use crate::http::{Request, Response};
use serde::{Deserialize, Serialize};

/// What the plugin asks the daemon for (`GET /`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub overlay_subnet: String,
    pub mtu: u32,
}

/// Answers any path with the network info (as the original did: `/` for the plugin, `/ping`
/// for drain scripts).
pub struct InfoHandler {
    pub info: NetworkInfo,
}

impl crate::http::Handler for InfoHandler {
    fn handle(&self, _req: &Request) -> Response {
        Response::json(200, &self.info)
    }
}
