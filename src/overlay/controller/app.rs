//! A running controller: the lease store and network from the config, the mutual-TLS lease API
//! and the debug port.

use super::api::ApiHandler;
use super::config::ControllerConfig;
use super::leases::Controller;
use super::metrics::ControllerMetrics;
use crate::daemon::debug::{self, DebugHandler};
use crate::http::{Server, ServerOptions};
use crate::metrics::Registrar;
use crate::overlay::parse_network;
use ipnet::Ipv4Net;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::Arc;

pub struct RunningController {
    pub api: Server,
    pub debug: Server,
    network: Ipv4Net,
}

pub fn start(config: ControllerConfig) -> Result<RunningController, String> {
    let network = parse_network("network", &config.network)?;
    let controller = Arc::new(Controller::new(
        crate::overlay::store::open(&config.database)?,
        network,
        config.subnet_prefix_length,
        config.lease_expiration_seconds,
        config.staleness_threshold_seconds,
    ));
    let mut registry = Registry::default();
    let mut r = Registrar::new(&mut registry, "overlay_controller");
    let metrics = ControllerMetrics::register(&mut r);
    let uptime = r.uptime();
    let tls = crate::tls::server_config_for_clients(
        Path::new(&config.server_cert_file),
        Path::new(&config.server_key_file),
        Some(Path::new(&config.ca_cert_file)),
        &config.allowed_clients,
    )?;
    let api = Server::start(
        &format!("{}:{}", config.listen_host, config.listen_port),
        ServerOptions {
            tls: Some(tls),
            ..ServerOptions::default()
        },
        ApiHandler {
            controller: controller.clone(),
            metrics: Some(metrics.clone()),
        },
    )
    .map_err(|e| format!("lease API: {e}"))?;
    let health = controller.clone();
    let debug = debug::serve(
        &format!("127.0.0.1:{}", config.debug_server_port),
        DebugHandler::new(
            Arc::new(registry),
            move || health.health(),
            move || {
                uptime.refresh();
                metrics.refresh(&controller);
            },
        ),
    )?;
    Ok(RunningController {
        api,
        debug,
        network,
    })
}

impl crate::daemon::Running for RunningController {
    fn describe(&self) -> String {
        format!(
            "leases of {} on {}, debug {}",
            self.network,
            self.api.local_addr(),
            self.debug.local_addr()
        )
    }

    fn stop(self) {
        self.api.shutdown();
        self.debug.shutdown();
    }
}
