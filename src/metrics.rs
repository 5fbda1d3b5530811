//! Prometheus metrics: the one way a daemon declares them ([`Registrar`]: every name under the
//! daemon's prefix, registered where the metric is made), and the shared kinds (HTTP request
//! metrics, operation timings, uptime). The debug server that serves them is
//! [`crate::daemon::debug`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Registers a daemon's metrics, each named `<prefix>_<name>`: one line a metric where the
/// metric is made, e.g. `leases: r.metric("number_leases", "Leases listed by the controller")`.
pub struct Registrar<'a> {
    registry: &'a mut Registry,
    prefix: &'a str,
}

impl<'a> Registrar<'a> {
    pub fn new(registry: &'a mut Registry, prefix: &'a str) -> Registrar<'a> {
        Registrar { registry, prefix }
    }

    fn name(&self, name: &str) -> String {
        [self.prefix, name]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("_")
    }

    /// A new metric of the type the caller wants (gauge, counter, family), registered.
    pub fn metric<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        self.register(name, help, M::default())
    }

    /// Registers `metric` and gives it back.
    pub fn register<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        let full = self.name(name);
        self.registry.register(full, help, metric.clone());
        metric
    }

    /// Timings of named operations: a histogram family `<prefix>_<name>` by op and outcome.
    pub fn ops(&mut self, name: &str, help: &str) -> OpMetrics {
        OpMetrics {
            latency: self.register(
                name,
                help,
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
        }
    }

    /// Request counts and latencies of one HTTP server: `<prefix>[_<server>]_http_requests` and
    /// `..._http_request_duration_seconds`, by route and status.
    pub fn http(&mut self, server: &str) -> HttpMetrics {
        let scope = self.name(server);
        let mut r = Registrar::new(self.registry, &scope);
        HttpMetrics {
            requests: r.metric("http_requests", "HTTP requests served, by route and status"),
            latency: r.register(
                "http_request_duration_seconds",
                "HTTP request latency, by route and status",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
        }
    }

    /// `<prefix>_uptime_seconds` and `<prefix>_worker_panics`, refreshed whenever metrics are
    /// scraped.
    pub fn uptime(&mut self) -> Arc<Uptime> {
        let gauge = self.metric("uptime_seconds", "Seconds since the process started");
        let panics = self.metric(
            "worker_panics",
            "Panics caught in background loops since the process started (each loop went on)",
        );
        Arc::new(Uptime {
            started: Instant::now(),
            gauge,
            panics,
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
    pub outcome: String,
}

pub fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Request counts and latencies per route, for any HTTP server.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let labels = RouteLabels {
            route: route.to_string(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// Timings and error counts of named operations (store calls, iptables applies, netlink converges).
#[derive(Clone)]
pub struct OpMetrics {
    latency: Family<OpLabels, Histogram, fn() -> Histogram>,
}

impl OpMetrics {
    /// Runs `f`, recording its duration under `op` with outcome `success` or `error`.
    pub fn time<T, E>(&self, op: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let started = Instant::now();
        let result = f();
        let labels = OpLabels {
            op: op.to_string(),
            outcome: if result.is_ok() { "success" } else { "error" }.to_string(),
        };
        self.latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

/// Process uptime, refreshed whenever metrics are scraped.
pub struct Uptime {
    started: Instant,
    gauge: Gauge<f64, AtomicU64>,
    panics: Gauge,
}

impl Uptime {
    pub fn refresh(&self) {
        self.gauge.set(self.started.elapsed().as_secs_f64());
        self.panics
            .set(crate::daemon::worker_panics().min(i64::MAX as u64) as i64);
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        log::error!("encoding metrics: {e}");
    }
    out
}
