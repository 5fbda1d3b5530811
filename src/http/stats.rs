//! What a listener reports about itself: Prometheus metrics (open and parked connections, refusals,
//! closes, caught panics) and a health value that turns bad when the listener cannot serve.

use crate::metrics::Registrar;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Connection-level metrics of one listener. The default value counts without being registered.
#[derive(Clone, Default)]
pub struct ServerMetrics {
    pub open_connections: Gauge,
    pub parked_requests: Gauge,
    pub busy_connections: Gauge,
    /// Answers the server gave on its own (400, 408, 413, 431, 501, 503, 505), by status.
    pub refusals: Family<StatusLabel, Counter>,
    /// Connections the server closed, by reason (idle, head_timeout, handshake_timeout,
    /// handshake_failed, evicted, limit, write_timeout).
    pub closed: Family<ReasonLabel, Counter>,
    /// Panics caught in the parser, a handler or a worker, each answered 500.
    pub panics: Counter,
}

impl ServerMetrics {
    pub fn register(registry: &mut Registry, prefix: &str) -> ServerMetrics {
        let mut r = Registrar::new(registry, prefix);
        ServerMetrics {
            open_connections: r.metric("http_open_connections", "Open client connections"),
            parked_requests: r.metric(
                "http_parked_requests",
                "Requests waiting for a change (watches), holding no worker",
            ),
            busy_connections: r.metric("http_busy_connections", "Connections held by a worker"),
            refusals: r.metric(
                "http_refusals",
                "Requests the server refused before any handler, by status",
            ),
            closed: r.metric(
                "http_closed_connections",
                "Connections closed by the server, by reason",
            ),
            panics: r.metric(
                "http_panics",
                "Panics caught while parsing or handling a request (each answered 500)",
            ),
        }
    }

    pub(crate) fn refused(&self, status: u16) {
        self.refusals
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    pub(crate) fn closed(&self, reason: &str) {
        self.closed
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// How long a failing `accept` keeps the listener unhealthy after its last failure.
const ACCEPT_ERROR_WINDOW: Duration = Duration::from_secs(5);

/// Whether a listener can serve. Cloned into whoever reports health (a `/health` route); the
/// server it is given to keeps it current.
#[derive(Clone, Default)]
pub struct ListenerHealth(Arc<HealthState>);

#[derive(Default)]
struct HealthState {
    started: AtomicBool,
    poller_alive: AtomicBool,
    workers_alive: AtomicUsize,
    accept_error: Mutex<Option<(Instant, String)>>,
    name: Mutex<String>,
}

impl ListenerHealth {
    pub fn new() -> ListenerHealth {
        ListenerHealth::default()
    }

    /// `Err` with the reason when the listener cannot serve requests.
    pub fn check(&self) -> Result<(), String> {
        let s = &self.0;
        let name = s.name.lock().map(|n| n.clone()).unwrap_or_default();
        if !s.started.load(Ordering::SeqCst) {
            return Err(format!("listener {name} is not running"));
        }
        if !s.poller_alive.load(Ordering::SeqCst) {
            return Err(format!("listener {name}: its connection poller stopped"));
        }
        if s.workers_alive.load(Ordering::SeqCst) == 0 {
            return Err(format!("listener {name}: no worker thread left"));
        }
        if let Ok(guard) = s.accept_error.lock() {
            if let Some((at, e)) = &*guard {
                if at.elapsed() < ACCEPT_ERROR_WINDOW {
                    return Err(format!("listener {name} cannot accept connections: {e}"));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn started(&self, name: String) {
        if let Ok(mut n) = self.0.name.lock() {
            *n = name;
        }
        self.0.poller_alive.store(true, Ordering::SeqCst);
        self.0.started.store(true, Ordering::SeqCst);
    }

    pub(crate) fn poller_stopped(&self) {
        self.0.poller_alive.store(false, Ordering::SeqCst);
    }

    pub(crate) fn worker_started(&self) -> WorkerAlive {
        self.0.workers_alive.fetch_add(1, Ordering::SeqCst);
        WorkerAlive(self.clone())
    }

    pub(crate) fn accept_failed(&self, error: String) {
        if let Ok(mut e) = self.0.accept_error.lock() {
            *e = Some((Instant::now(), error));
        }
    }
}

/// Counts a worker thread as alive until it ends, however it ends.
pub(crate) struct WorkerAlive(ListenerHealth);

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        self.0 .0.workers_alive.fetch_sub(1, Ordering::SeqCst);
    }
}
