//! The controller's metrics: the lease API's requests and the pool's gauges, read from the store
//! on every scrape.

use super::leases::Controller;
use crate::metrics::{HttpMetrics, Registrar};
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone)]
pub struct ControllerMetrics {
    pub http: HttpMetrics,
    total: Gauge,
    free: Gauge,
    stale: Gauge,
}

impl ControllerMetrics {
    pub fn register(r: &mut Registrar) -> ControllerMetrics {
        ControllerMetrics {
            http: r.http(""),
            total: r.metric("total_leases", "Leases stored"),
            free: r.metric("free_leases", "Subnets of the network not leased"),
            stale: r.metric(
                "stale_leases",
                "Leases not renewed within the staleness threshold",
            ),
        }
    }

    pub fn refresh(&self, controller: &Controller) {
        match controller.stats() {
            Ok(s) => {
                self.total.set(s.total as i64);
                self.free.set(s.free as i64);
                self.stale.set(s.stale as i64);
            }
            Err(e) => log::warn!("lease metrics: {e}"),
        }
    }
}
