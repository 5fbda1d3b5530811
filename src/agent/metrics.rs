//! The agent's Prometheus metrics.

use crate::metrics::{OpMetrics, Registrar, Uptime};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SetLabels {
    pub set: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone)]
pub struct AgentMetrics {
    /// Time to apply to the kernel, op = full | incremental | logging.
    pub enforce: OpMetrics,
    /// Time of the server calls and the whole cycle, op = last_updated | policies | cycle.
    pub poll: OpMetrics,
    pub elements: Family<SetLabels, Gauge>,
    pub last_success: Gauge<f64, AtomicU64>,
    pub errors: Family<ErrorLabels, Counter>,
    pub uptime: Arc<Uptime>,
}

/// Error kinds counted in `vpa_errors_total`.
pub const POLICY_SERVER: &str = "policy_server";
pub const STORE: &str = "container_store";
pub const DATAPLANE: &str = "dataplane";

impl AgentMetrics {
    pub fn register(registry: &mut Registry) -> AgentMetrics {
        let mut r = Registrar::new(registry, "vpa");
        AgentMetrics {
            enforce: r.ops(
                "enforce_duration_seconds",
                "Time to apply a plan to the agent's nftables table, by op (full, incremental, logging)",
            ),
            poll: r.ops(
                "poll_duration_seconds",
                "Time of policy server calls and whole cycles, by op (last_updated, policies, cycle)",
            ),
            elements: r.metric(
                "nft_elements",
                "Elements installed in the agent's nftables sets, by set",
            ),
            last_success: r.metric(
                "last_success_timestamp_seconds",
                "Unix time of the last cycle that enforced the current policies",
            ),
            errors: r.metric(
                "errors",
                "Errors by kind (policy_server, container_store, dataplane)",
            ),
            uptime: r.uptime(),
        }
    }

    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    pub fn set_elements(&self, set: &str, n: usize) {
        self.elements
            .get_or_create(&SetLabels { set: set.into() })
            .set(n as i64);
    }

    pub fn success_now(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_success.set(now);
    }
}
