//! The per-cell DNS resolver of service discovery. Containers ask it for every name: names under
//! an internal domain (`backend.apps.internal`, `0.backend.apps.internal`) are answered from the
//! table of internal routes (A records, TTL 0, shuffled per query; NXDOMAIN for unknown names;
//! other types empty), every other name is forwarded to the cell's upstream resolvers.
//!
//! - [`table`]: internal routes, validated and indexed; swapped atomically under running queries.
//! - [`snapshot`]: the last table kept on disk, so a restarted resolver answers at once.
//! - [`query`]: one packet in, one decision out (answer, error, forward or drop); no I/O.
//! - [`forward`]: the upstream resolvers, over UDP and TCP.
//! - [`server`]: the synchronous UDP/TCP server loops.
//! - [`metrics`]: counters the daemon registers.
//! - [`daemon`]: `netman-dns`, the daemon on every cell around all of these.

pub mod daemon;
pub mod forward;
pub mod metrics;
pub mod query;
pub mod server;
pub mod snapshot;
pub mod table;

pub use forward::Forwarder;
pub use metrics::{DnsMetrics, Transport};
pub use server::{Handler, Running, ServerConfig};
pub use table::{InternalRoutes, SharedTable, Table};

use hickory_proto::op::ResponseCode;
use query::{Decision, Forward, Reply};
use std::sync::Arc;

/// The resolver: the shared table for internal names, the forwarder for the rest.
pub struct Resolver {
    table: Arc<SharedTable>,
    forwarder: Forwarder,
}

impl Resolver {
    pub fn new(table: Arc<SharedTable>, forwarder: Forwarder) -> Resolver {
        Resolver { table, forwarder }
    }

    pub fn table(&self) -> &Arc<SharedTable> {
        &self.table
    }
}

impl Handler for Resolver {
    fn decide(&self, packet: &[u8], transport: Transport) -> Decision {
        query::decide(&self.table.load(), packet, transport)
    }

    fn forward(&self, query: &Forward, transport: Transport) -> Reply {
        match self.forwarder.forward(query, transport) {
            Some(answer) => query.relay(answer, transport),
            None => query.error(ResponseCode::ServFail),
        }
    }
}
