//! The daemon's metrics: renewals, convergences, the controller's lease count.

use crate::metrics::{OpMetrics, Registrar};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone)]
pub struct DaemonMetrics {
    pub renew_success: Counter,
    pub renew_failure: Counter,
    pub converge_success: Counter,
    pub converge_failure: Counter,
    pub leases: Gauge,
    pub converge_time: OpMetrics,
}

impl DaemonMetrics {
    pub fn register(r: &mut Registrar) -> DaemonMetrics {
        DaemonMetrics {
            renew_success: r.metric("renew_success", "Lease renewals that succeeded"),
            renew_failure: r.metric("renew_failure", "Lease renewals that failed"),
            converge_success: r.metric("converge_success", "Convergences that succeeded"),
            converge_failure: r.metric("converge_failure", "Convergences that failed"),
            leases: r.metric("number_leases", "Leases listed by the controller"),
            converge_time: r.ops(
                "operation_duration_seconds",
                "Duration of daemon operations",
            ),
        }
    }
}
