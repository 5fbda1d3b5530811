//! `netman-dns`, the resolver daemon on every cell: the DNS server of [`crate::dns`] on the
//! link-local address containers are given, the registry's table followed ([`follower`]), the
//! cell's app instances reported to it ([`registrar`]), the last table kept on disk, and the
//! usual debug port (health, metrics, log level). Design: docs/service-discovery.md.

pub mod config;
pub mod device;
pub mod follower;
pub mod registrar;

pub use config::DnsConfig;

use crate::daemon::debug::{self, DebugHandler};
use crate::daemon::Worker;
use crate::dns::{forward, server, snapshot, DnsMetrics, Forwarder, Resolver, SharedTable, Table};
use crate::http::Server;
use crate::metrics::Registrar;
use follower::{Follower, FollowerMetrics};
use prometheus_client::registry::Registry;
use registrar::RegistrarMetrics;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

pub struct RunningDns {
    pub dns: server::Running,
    pub debug: Server,
    pub table: Arc<SharedTable>,
    registrar: Worker,
    follower: Worker,
}

impl crate::daemon::Running for RunningDns {
    fn describe(&self) -> String {
        format!(
            "dns udp {} tcp {}, debug {}",
            self.dns.udp_addr(),
            self.dns.tcp_addr(),
            self.debug.local_addr()
        )
    }

    fn stop(self) {
        self.registrar.stop();
        // Not joined: it may be inside a watch the registry holds for up to `watch_seconds`;
        // the closed channel ends it after that request.
        drop(self.follower);
        self.dns.stop();
        self.debug.shutdown();
    }
}

/// The table served at start: the snapshot, or (none, damaged) one that answers SERVFAIL for
/// internal names until the registry's first table.
fn first_table(path: &std::path::Path) -> Table {
    let not_ready = || {
        Table::not_ready(&[crate::dns::table::DEFAULT_DOMAIN.to_string()])
            .expect("the default domain is valid")
    };
    match snapshot::restore(path) {
        Ok(Some(t)) => {
            log::info!(
                "serving the snapshot {} ({} routes) until the registry answers",
                path.display(),
                t.route_count()
            );
            t
        }
        Ok(None) => not_ready(),
        Err(e) => {
            log::error!(
                "snapshot not used: {e}; internal names get SERVFAIL until the registry answers"
            );
            not_ready()
        }
    }
}

pub fn start(config: DnsConfig) -> Result<RunningDns, String> {
    let listen = config.listen()?;
    if !config.listen_device.is_empty() {
        let IpAddr::V4(ip) = listen.ip() else {
            return Err("'listen_device' needs an IPv4 'listen_address'".into());
        };
        device::ensure(&config.listen_device, ip)
            .map_err(|e| format!("listen device {}: {e}", config.listen_device))?;
    }
    let mut upstreams = config.upstream_list()?;
    if upstreams.is_empty() {
        upstreams =
            forward::read_resolv_conf(std::path::Path::new(&config.resolv_conf), &[listen.ip()])?;
        if upstreams.is_empty() {
            return Err(format!(
                "no upstream resolvers: set 'upstreams', or name nameservers other than {} in {}",
                listen.ip(),
                config.resolv_conf
            ));
        }
    }

    let mut registry = Registry::default();
    let dns_metrics = DnsMetrics::register(&mut registry, "netman_dns");
    let mut r = Registrar::new(&mut registry, "netman_dns");
    let uptime = r.uptime();
    let follower_metrics = FollowerMetrics {
        tables_received: r.metric(
            "tables_received",
            "Tables received from the registry and put in force",
        ),
        tables_refused: r.metric(
            "tables_refused",
            "Tables from the registry that did not validate (the last one stayed)",
        ),
        fetch_failures: r.metric("registry_failures", "Failed requests for the table"),
        table_version: r.metric(
            "table_version",
            "Version of the table in force (-1: snapshot or none)",
        ),
        last_contact: r.metric(
            "registry_last_contact_seconds",
            "Unix time of the registry's last answer",
        ),
    };
    let registrar_metrics = RegistrarMetrics {
        reports: r.metric(
            "cell_reports",
            "Reports of the cell's instances accepted by the registry",
        ),
        report_failures: r.metric(
            "cell_report_failures",
            "Reports of the cell's instances that failed",
        ),
        unregistered_containers: r.metric(
            "unregistered_containers",
            "Containers not registered: no app, not an app workload, or no instance_index",
        ),
    };
    follower_metrics.table_version.set(-1);

    let snapshot_path = PathBuf::from(&config.snapshot_file);
    let table = Arc::new(SharedTable::new(first_table(&snapshot_path)));
    {
        let t = table.load();
        dns_metrics.table(t.route_count(), t.instance_count());
    }
    let forwarder = Forwarder::new(upstreams, config.upstream_timeout(), dns_metrics.clone())?;
    let resolver = Arc::new(Resolver::new(Arc::clone(&table), forwarder));
    let (udp, tcp) = server::bind(listen).map_err(|e| e.to_string())?;
    let dns = server::start(udp, tcp, resolver, &config.server(), dns_metrics.clone())
        .map_err(|e| format!("dns server: {e}"))?;

    let tls = crate::daemon::client_tls(
        &config.ca_cert_file,
        &config.client_cert_file,
        &config.client_key_file,
    );
    let base = config.policy_server_url.trim_end_matches('/').to_string();
    let wait = Duration::from_secs(config.watch_seconds);
    let follower = Follower {
        agent: crate::http::client::agent(&tls, wait + Duration::from_secs(10))?,
        base: base.clone(),
        wait,
        table: Arc::clone(&table),
        snapshot: snapshot_path,
        dns: dns_metrics,
        metrics: follower_metrics,
        version: Arc::new(AtomicI64::new(-1)),
    }
    .spawn();
    let registrar = registrar::Registrar {
        agent: crate::http::client::agent(&tls, Duration::from_secs(10))?,
        url: registrar::cell_url(&base, &config.cell_id),
        store: config.container_store.clone(),
        refresh: Duration::from_secs(config.refresh_interval_seconds),
        metrics: registrar_metrics,
    }
    .spawn();

    let health_table = Arc::clone(&table);
    let debug = debug::serve(
        &format!("{}:{}", config.debug_server_host, config.debug_server_port),
        DebugHandler::new(
            Arc::new(registry),
            move || match health_table.load().is_ready() {
                true => Ok(()),
                false => Err("no table yet: neither a snapshot nor the registry".into()),
            },
            move || uptime.refresh(),
        ),
    )?;
    Ok(RunningDns {
        dns,
        debug,
        table,
        registrar,
        follower,
    })
}
