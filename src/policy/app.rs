//! Wiring of a running policy server: the external listener (plain or TLS), the internal listener
//! (mutual TLS only), the loopback debug listener (metrics, health, log level), and the periodic
//! stale-policy cleanup. [`start_from_config`] opens what the config names and starts;
//! [`start`] takes the parts already made (tests, embedding).

use super::asg::admin::AsgAdmin;
use super::asg::cc_source::{HttpAsgSource, SourceConfig};
use super::asg::internal::AsgInternal;
use super::asg::notify::{AsgVersion, NotifyingAsgStore};
use super::asg::syncer::{SyncMetrics, SyncSource};
use super::asg::{AsgCache, AsgStore, SqlAsgStore};
use super::auth::{self, Authenticator};
use super::cc::{self, CloudController};
use super::config::PolicyServerConfig;
use super::external::{ExternalApi, ExternalSettings};
use super::internal::InternalApi;
use super::metered_store::MeteredStore;
use super::store::Store;
use super::watch::{NotifyingStore, VersionWatch, CHECK_INTERVAL};
use crate::daemon::debug::{self, DebugHandler};
use crate::http::client::ClientTls;
use crate::http::{ListenerHealth, Server, ServerMetrics, ServerOptions};
use crate::metrics::{Registrar, Uptime};
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
    pub http: HttpSettings,
    pub sd_cell_expiry: Duration,
}

/// Connection limits of the external and internal listeners, and who may use the internal API.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Open connections per listener (the oldest idle one is closed beyond it).
    pub max_connections: usize,
    /// When not empty, only client certificates naming one of these (CN or SAN) and carrying the
    /// clientAuth usage may use the internal API; otherwise any certificate of the CA may.
    pub allowed_internal_clients: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_connections: ServerOptions::default().max_connections,
            allowed_internal_clients: Vec::new(),
        }
    }
}

pub struct Components {
    pub store: Arc<dyn Store>,
    pub asgs: Arc<dyn AsgStore>,
    /// The Cloud Controller to copy security groups from, when `asg_syncer` is configured.
    pub asg_source: Option<SyncSource>,
    pub auth: Arc<dyn Authenticator>,
    pub cc: Option<Arc<dyn CloudController>>,
    pub sd: Arc<super::sd::SdStore>,
}

pub struct RunningServer {
    pub external: Server,
    pub internal: Server,
    pub debug: Server,
    pub watch: VersionWatch,
    pub asg_watch: VersionWatch,
    sd: crate::daemon::Worker,
    stop: Arc<AtomicBool>,
    cleanup: Option<std::thread::JoinHandle<()>>,
    syncer: Option<(crate::daemon::Worker, Arc<dyn AsgStore>, String)>,
}

impl RunningServer {
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.cleanup.take() {
            let _ = t.join();
        }
        if let Some((worker, store, holder)) = self.syncer.take() {
            worker.stop();
            // Another server on the database takes over at its next cycle.
            if let Err(e) = store.release_sync_lease(&holder) {
                log::warn!("releasing the security-group syncer lease: {e}");
            }
        }
        self.external.shutdown();
        self.internal.shutdown();
        self.debug.shutdown();
        self.watch.stop();
        self.asg_watch.stop();
        self.sd.stop();
    }
}

/// The debug port: `/health` checks both listeners and the database; a scrape counts the
/// policies.
fn debug_handler(
    registry: Registry,
    store: &Arc<dyn Store>,
    listeners: [ListenerHealth; 2],
    uptime: Arc<Uptime>,
    total_policies: Gauge,
    quarantined_tags: Gauge,
) -> DebugHandler {
    let health_store = Arc::clone(store);
    let count_store = Arc::clone(store);
    DebugHandler::new(
        Arc::new(registry),
        move || {
            for listener in &listeners {
                listener.check()?;
            }
            health_store
                .check()
                .map_err(|e| format!("check database failed: {e}"))
        },
        move || {
            uptime.refresh();
            if let Ok(n) = count_store.count() {
                total_policies.set(n as i64);
            }
            if let Ok(n) = count_store.quarantined_tags() {
                quarantined_tags.set(n as i64);
            }
        },
    )
}

impl crate::daemon::Running for RunningServer {
    fn describe(&self) -> String {
        format!(
            "external {}, internal {}, debug {}",
            self.external.local_addr(),
            self.internal.local_addr(),
            self.debug.local_addr()
        )
    }

    fn stop(self) {
        self.shutdown();
    }
}

/// Opens the store (migrating it), builds the authenticator and the Cloud Controller client the
/// config names, and starts.
pub fn start_from_config(config: PolicyServerConfig) -> Result<RunningServer, String> {
    let store = super::store::open(&config.database, config.tag_pool())
        .map_err(|e| format!("opening the database: {e}"))?;
    let components = Components {
        store,
        asgs: Arc::new(
            SqlAsgStore::open(&config.database)
                .map_err(|e| format!("opening the security groups: {e}"))?,
        ),
        auth: auth::build(&config.auth).map_err(|e| format!("auth: {e}"))?,
        cc: cloud_controller(&config)?,
        asg_source: asg_source(&config)?,
        // After the policy store: a database it refuses is refused before these tables are made.
        sd: Arc::new(
            super::sd::SdStore::open(&config.database)
                .map_err(|e| format!("opening the service discovery tables: {e}"))?,
        ),
    };
    start(settings(&config), components)
}

fn cloud_controller(
    config: &PolicyServerConfig,
) -> Result<Option<Arc<dyn CloudController>>, String> {
    let (Some(cc_config), Some(uaa)) = (config.cc_config(), config.auth.uaa_client_config()) else {
        return Ok(None);
    };
    let client = cc::HttpCloudController::new(&cc_config, &uaa)
        .map_err(|e| format!("cloud controller: {e}"))?;
    Ok(Some(Arc::new(client)))
}

fn asg_source(config: &PolicyServerConfig) -> Result<Option<SyncSource>, String> {
    let (Some(sync), Some(uaa)) = (&config.asg_syncer, config.auth.uaa_client_config()) else {
        return Ok(None);
    };
    let optional = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let source = HttpAsgSource::new(
        &SourceConfig {
            api_url: config.cc_url.clone(),
            api_tls: ClientTls {
                ca_cert_file: optional(&config.cc_ca_cert_file),
                ..ClientTls::default()
            },
            internal_url: optional(&sync.cc_internal_url).unwrap_or_else(|| config.cc_url.clone()),
            internal_tls: ClientTls {
                ca_cert_file: optional(&sync.cc_internal_ca_cert_file)
                    .or_else(|| optional(&config.cc_ca_cert_file)),
                client_cert_file: optional(&sync.cc_internal_client_cert_file),
                client_key_file: optional(&sync.cc_internal_client_key_file),
                skip_verification: false,
            },
            timeout: Duration::from_secs(30),
        },
        &uaa,
    )
    .map_err(|e| format!("asg_syncer: {e}"))?;
    Ok(Some((Box::new(source), sync.clone())))
}

fn settings(config: &PolicyServerConfig) -> Settings {
    Settings {
        external_addr: format!("{}:{}", config.listen_host, config.listen_port),
        external_tls: config.enable_tls.then(|| {
            (
                PathBuf::from(&config.external_cert_file),
                PathBuf::from(&config.external_key_file),
            )
        }),
        internal_addr: format!(
            "{}:{}",
            config.internal_listen_host, config.internal_listen_port
        ),
        internal_tls: (
            PathBuf::from(&config.ca_cert_file),
            PathBuf::from(&config.server_cert_file),
            PathBuf::from(&config.server_key_file),
        ),
        debug_addr: format!("{}:{}", config.debug_server_host, config.debug_server_port),
        external: ExternalSettings {
            max_policies_per_source: config.max_policies_per_app_source,
            enable_space_developer_self_service: config.enable_space_developer_self_service,
            allowed_cors_domains: config.allowed_cors_domains.clone(),
            tls_enabled: config.enable_tls,
        },
        cleanup_interval: (config.cleanup_interval_seconds > 0)
            .then(|| Duration::from_secs(config.cleanup_interval_seconds)),
        http_workers: config.http_workers,
        http: config.http_settings(),
        sd_cell_expiry: Duration::from_secs(config.service_discovery_cell_expiry_seconds),
    }
}

pub fn start(settings: Settings, components: Components) -> Result<RunningServer, String> {
    let mut registry = Registry::default();
    let mut r = Registrar::new(&mut registry, "policy_server");
    let store_ops = r.ops(
        "store_operation_duration_seconds",
        "Policy store call latency, by operation and outcome",
    );
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(components.store, store_ops));
    let external_metrics = r.http("external");
    let internal_metrics = r.http("internal");
    let uptime = r.uptime();
    let total_policies: Gauge = r.metric("total_policies", "Policies in the store");
    let quarantined_tags: Gauge = r.metric(
        "quarantined_tags",
        "Released tags resting in quarantine (tag_quarantine_seconds), not handed out again yet",
    );
    let sync_metrics = SyncMetrics::register(&mut r);
    let asg_ops = r.ops(
        "asg_store_operation_duration_seconds",
        "Security group store call latency, by operation and outcome",
    );

    let external_conns = ServerMetrics::register(&mut registry, "policy_server_external");
    let internal_conns = ServerMetrics::register(&mut registry, "policy_server_internal");
    let external_health = ListenerHealth::new();
    let internal_health = ListenerHealth::new();
    let options = |tls, health: &ListenerHealth, metrics| ServerOptions {
        workers: settings.http_workers,
        max_connections: settings.http.max_connections,
        tls,
        health: health.clone(),
        metrics,
        ..ServerOptions::default()
    };

    let external_tls = match &settings.external_tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key, None)?),
        None => None,
    };
    let (ca, cert, key) = &settings.internal_tls;
    let internal_tls = crate::tls::server_config_for_clients(
        cert,
        key,
        Some(ca),
        &settings.http.allowed_internal_clients,
    )?;
    let watch = VersionWatch::start(Arc::clone(&store), CHECK_INTERVAL);
    let asg_watch = VersionWatch::start_source(
        Arc::new(AsgVersion(Arc::clone(&components.asgs))),
        CHECK_INTERVAL,
        "asg-version-watch",
    );
    let asgs: Arc<dyn AsgStore> = Arc::new(NotifyingAsgStore {
        store: Arc::clone(&components.asgs),
        watch: asg_watch.clone(),
        ops: asg_ops,
    });
    let writing_store: Arc<dyn Store> = Arc::new(NotifyingStore {
        store: Arc::clone(&store),
        watch: watch.clone(),
    });

    let sd = super::sd::Registry::new(components.sd, settings.sd_cell_expiry);
    if let Err(e) = sd.refresh() {
        log::error!("service discovery: first table: {e}");
    }
    let sd_worker = sd.spawn();

    let external = Server::start(
        &settings.external_addr,
        options(external_tls, &external_health, external_conns),
        ExternalApi {
            store: writing_store,
            asgs: AsgAdmin {
                store: Arc::clone(&asgs),
                synced_from_cc: components.asg_source.is_some(),
            },
            listeners: vec![external_health.clone(), internal_health.clone()],
            auth: components.auth,
            cc: components.cc.clone(),
            settings: settings.external.clone(),
            metrics: external_metrics,
            started: Instant::now(),
            sd: Arc::clone(&sd),
        },
    )
    .map_err(|e| format!("external API: {e}"))?;
    let internal = Server::start(
        &settings.internal_addr,
        options(Some(internal_tls), &internal_health, internal_conns),
        InternalApi {
            store: Arc::clone(&store),
            asgs: Arc::new(AsgInternal {
                cache: AsgCache::new(Arc::clone(&asgs)),
                watch: asg_watch.clone(),
            }),
            metrics: internal_metrics,
            watch: watch.clone(),
            sd,
        },
    )
    .map_err(|e| format!("internal API: {e}"))?;

    let debug = debug::serve(
        &settings.debug_addr,
        debug_handler(
            registry,
            &store,
            [external_health, internal_health],
            uptime,
            total_policies,
            quarantined_tags,
        ),
    )?;

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

    let syncer = components.asg_source.map(|(source, config)| {
        // pid@host/instance: who holds the lease, for an operator reading the table.
        let holder = format!(
            "{}@{}/{}",
            std::process::id(),
            std::env::var("HOSTNAME").unwrap_or_default(),
            uuid::Uuid::new_v4()
        );
        let worker = super::asg::syncer::spawn(
            super::asg::syncer::Syncer {
                store: Arc::clone(&asgs),
                source,
                holder: holder.clone(),
                config,
            },
            sync_metrics,
        );
        (worker, Arc::clone(&asgs), holder)
    });

    Ok(RunningServer {
        external,
        internal,
        debug,
        watch,
        asg_watch,
        sd: sd_worker,
        stop,
        cleanup,
        syncer,
    })
}
