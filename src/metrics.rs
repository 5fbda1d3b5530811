//! Prometheus metrics and the loopback debug server every long-running netman binary exposes:
//! `GET /metrics`, `GET|PUT|POST /log-level`, `GET /health`.

use crate::http::{Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    pub fn register(registry: &mut Registry, prefix: &str) -> HttpMetrics {
        let m = HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(
            format!("{prefix}_http_requests"),
            "HTTP requests served, by route and status",
            m.requests.clone(),
        );
        registry.register(
            format!("{prefix}_http_request_duration_seconds"),
            "HTTP request latency, by route and status",
            m.latency.clone(),
        );
        m
    }

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
    pub fn register(registry: &mut Registry, name: &str, help: &str) -> OpMetrics {
        let m = OpMetrics {
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(name, help, m.latency.clone());
        m
    }

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
}

impl Uptime {
    pub fn register(registry: &mut Registry, prefix: &str) -> Arc<Uptime> {
        let u = Arc::new(Uptime {
            started: Instant::now(),
            gauge: Gauge::default(),
        });
        registry.register(
            format!("{prefix}_uptime_seconds"),
            "Seconds since the process started",
            u.gauge.clone(),
        );
        u
    }

    pub fn refresh(&self) {
        self.gauge.set(self.started.elapsed().as_secs_f64());
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

type HealthCheck = dyn Fn() -> Result<(), String> + Send + Sync;
type Refresh = dyn Fn() + Send + Sync;

/// The handler of the loopback debug port.
pub struct DebugHandler {
    registry: Arc<Registry>,
    health: Box<HealthCheck>,
    refresh: Box<Refresh>,
}

impl DebugHandler {
    pub fn new(
        registry: Arc<Registry>,
        health: impl Fn() -> Result<(), String> + Send + Sync + 'static,
        refresh: impl Fn() + Send + Sync + 'static,
    ) -> DebugHandler {
        DebugHandler {
            registry,
            health: Box::new(health),
            refresh: Box::new(refresh),
        }
    }

    /// Serves the debug routes; `None` for paths it does not own.
    pub fn route(&self, req: &Request) -> Option<Response> {
        Some(match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => {
                (self.refresh)();
                Response::new(200)
                    .with_header("content-type", CONTENT_TYPE)
                    .with_body(encode(&self.registry).into_bytes())
            }
            ("GET", "/health") => match (self.health)() {
                Ok(()) => Response::json(200, &serde_json::json!({"healthy": true})),
                Err(e) => Response::error(500, &e),
            },
            ("GET", "/log-level") => {
                Response::text(200, log::max_level().to_string().to_lowercase())
            }
            ("PUT" | "POST", "/log-level") => {
                let text = String::from_utf8_lossy(&req.body);
                match crate::logging::parse_level(&text) {
                    Ok(level) => {
                        log::set_max_level(level);
                        log::warn!("log level set to {level}");
                        Response::new(204)
                    }
                    Err(e) => Response::error(400, &e),
                }
            }
            _ => return None,
        })
    }
}

impl crate::http::Handler for DebugHandler {
    fn handle(&self, req: &Request) -> Response {
        self.route(req)
            .unwrap_or_else(|| Response::error(404, "not found"))
    }
}
