//! overlay-controller: the lease API of the overlay network (mutual TLS).

use clap::Parser;
use netman::daemon::{self, DaemonArgs};
use netman::http::{Server, ServerOptions};
use netman::metrics::{DebugHandler, Uptime};
use netman::overlay::controller::{
    open_store, parse_network, ApiHandler, Controller, ControllerConfig, ControllerMetrics,
};
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::Arc;

const SOURCE: &str = "overlay-controller";

#[derive(Parser)]
#[command(name = SOURCE, about = "Overlay lease controller")]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() {
    daemon::block_shutdown_signals();
    let args = Args::parse();
    args.daemon.init_logging(SOURCE);
    let cfg: ControllerConfig = daemon::load_config(SOURCE, &args.daemon);
    let network =
        parse_network("network", &cfg.network).unwrap_or_else(|e| daemon::fail(SOURCE, e));
    let store = open_store(&cfg.database).unwrap_or_else(|e| daemon::fail(SOURCE, e));
    let controller = Arc::new(Controller::new(
        store,
        network,
        cfg.subnet_prefix_length,
        cfg.lease_expiration_seconds,
        cfg.staleness_threshold_seconds,
    ));
    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let uptime = Uptime::register(&mut registry, "overlay_controller");
    let registry = Arc::new(registry);

    let tls = netman::tls::server_config_for_clients(
        Path::new(&cfg.server_cert_file),
        Path::new(&cfg.server_key_file),
        Some(Path::new(&cfg.ca_cert_file)),
        &cfg.allowed_clients,
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, e));
    let api_addr = format!("{}:{}", cfg.listen_host, cfg.listen_port);
    let api = Server::start(
        &api_addr,
        ServerOptions {
            tls: Some(tls),
            ..ServerOptions::default()
        },
        ApiHandler {
            controller: controller.clone(),
            metrics: Some(metrics.clone()),
        },
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, format!("listening on {api_addr}: {e}")));
    let debug_addr = format!("127.0.0.1:{}", cfg.debug_server_port);
    let health = controller.clone();
    let refresh = controller.clone();
    let debug = Server::start(
        &debug_addr,
        ServerOptions::default(),
        DebugHandler::new(
            registry,
            move || health.health(),
            move || {
                uptime.refresh();
                metrics.refresh(&refresh);
            },
        ),
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, format!("listening on {debug_addr}: {e}")));
    log::warn!("serving leases of {network} on {api_addr} (debug {debug_addr})");
    let signal = daemon::wait_for_shutdown();
    log::warn!("{signal:?}: shutting down");
    api.shutdown();
    debug.shutdown();
}
