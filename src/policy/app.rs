//! Wiring of a running policy server: the external listener (plain or TLS), the internal listener
//! (mutual TLS only), the loopback debug listener (metrics, health, log level), and the periodic
//! stale-policy cleanup.

use super::auth::Authenticator;
use super::cc::CloudController;
use super::external::{ExternalApi, ExternalSettings};
use super::internal::InternalApi;
use super::metered_store::MeteredStore;
use super::store::Store;
use crate::http::{Server, ServerOptions};
use crate::metrics::{DebugHandler, HttpMetrics, OpMetrics, Uptime};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a policy server needs, already loaded and checked.
pub struct Settings {
    pub external_addr: String,
    /// Certificate and key of the external listener; plain HTTP when `None`.
    pub external_tls: Option<(PathBuf, PathBuf)>,
    pub internal_addr: String,
    /// (CA that signs agent certificates, server certificate, server key).
    pub internal_tls: (PathBuf, PathBuf, PathBuf),
    pub debug_addr: String,
    pub external: ExternalSettings,
    pub cleanup_interval: Option<Duration>,
    pub http_workers: usize,
}

pub struct Components {
    pub store: Arc<dyn Store>,
    pub auth: Arc<dyn Authenticator>,
    pub cc: Option<Arc<dyn CloudController>>,
}

pub struct RunningServer {
    pub external: Server,
    pub internal: Server,
    pub debug: Server,
    stop: Arc<AtomicBool>,
    cleanup: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.cleanup.take() {
            let _ = t.join();
        }
        self.external.shutdown();
        self.internal.shutdown();
        self.debug.shutdown();
    }
}

pub fn start(settings: Settings, components: Components) -> Result<RunningServer, String> {
    let mut registry = Registry::default();
    let store_ops = OpMetrics::register(
        &mut registry,
        "policy_server_store_operation_duration_seconds",
        "Policy store call latency, by operation and outcome",
    );
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(components.store, store_ops));
    let external_metrics = HttpMetrics::register(&mut registry, "policy_server_external");
    let internal_metrics = HttpMetrics::register(&mut registry, "policy_server_internal");
    let uptime = Uptime::register(&mut registry, "policy_server");
    let total_policies: Gauge = Gauge::default();
    registry.register(
        "policy_server_total_policies",
        "Policies in the store",
        total_policies.clone(),
    );

    let options = |tls| ServerOptions {
        workers: settings.http_workers,
        tls,
        ..ServerOptions::default()
    };

    let external_tls = match &settings.external_tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key, None)?),
        None => None,
    };
    let (ca, cert, key) = &settings.internal_tls;
    let internal_tls = crate::tls::server_config(cert, key, Some(ca))?;

    let external = Server::start(
        &settings.external_addr,
        options(external_tls),
        ExternalApi {
            store: Arc::clone(&store),
            auth: components.auth,
            cc: components.cc.clone(),
            settings: settings.external.clone(),
            metrics: external_metrics,
            started: Instant::now(),
        },
    )
    .map_err(|e| format!("external API: {e}"))?;
    let internal = Server::start(
        &settings.internal_addr,
        options(Some(internal_tls)),
        InternalApi {
            store: Arc::clone(&store),
            metrics: internal_metrics,
        },
    )
    .map_err(|e| format!("internal API: {e}"))?;

    let health_store = Arc::clone(&store);
    let count_store = Arc::clone(&store);
    let debug = Server::start(
        &settings.debug_addr,
        ServerOptions {
            workers: 4,
            ..ServerOptions::default()
        },
        DebugHandler::new(
            Arc::new(registry),
            move || {
                health_store
                    .check()
                    .map_err(|e| format!("check database failed: {e}"))
            },
            move || {
                uptime.refresh();
                if let Ok(n) = count_store.count() {
                    total_policies.set(n as i64);
                }
            },
        ),
    )
    .map_err(|e| format!("debug server: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let cleanup = match (settings.cleanup_interval, components.cc) {
        (Some(interval), Some(cc)) => Some(super::cleanup::spawn_periodic(
            Arc::clone(&store),
            cc,
            interval,
            Arc::clone(&stop),
        )),
        _ => None,
    };

    Ok(RunningServer {
        external,
        internal,
        debug,
        stop,
        cleanup,
    })
}
