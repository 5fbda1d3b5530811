//! overlay-daemon: one per cell; keeps the VTEP and the routes to every other cell.

use clap::Parser;
use netman::daemon::{self, DaemonArgs};
use netman::http::client::ClientTls;
use netman::http::{Server, ServerOptions};
use netman::metrics::{DebugHandler, Uptime};
use netman::overlay::client::ControllerClient;
use netman::overlay::daemon::{Daemon, DaemonConfig, DaemonMetrics, InfoHandler};
use prometheus_client::registry::Registry;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

const SOURCE: &str = "overlay-daemon";

#[derive(Parser)]
#[command(name = SOURCE, about = "Overlay daemon (one per cell)")]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() {
    daemon::block_shutdown_signals();
    let args = Args::parse();
    args.daemon.init_logging(SOURCE);
    let cfg: DaemonConfig = daemon::load_config(SOURCE, &args.daemon);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(daemon::wait_for_shutdown());
    });
    let client = ControllerClient::new(
        &cfg.controller_url,
        &ClientTls {
            ca_cert_file: Some(cfg.ca_cert_file.clone()),
            client_cert_file: Some(cfg.client_cert_file.clone()),
            client_key_file: Some(cfg.client_key_file.clone()),
            skip_verification: false,
        },
        Duration::from_secs(cfg.client_timeout_seconds),
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, e));
    let mut registry = Registry::default();
    let metrics = DaemonMetrics::register(&mut registry);
    let uptime = Uptime::register(&mut registry, "overlay_daemon");
    let registry = Arc::new(registry);
    let poll = Duration::from_secs(cfg.poll_interval_seconds);
    let listen = format!("{}:{}", cfg.listen_host, cfg.listen_port);
    let debug_addr = format!("127.0.0.1:{}", cfg.debug_server_port);
    let mut overlay =
        Daemon::start(cfg, client, metrics).unwrap_or_else(|e| daemon::fail(SOURCE, e));
    let problem = overlay.problem.clone();
    let info = Server::start(
        &listen,
        ServerOptions {
            workers: 4,
            ..ServerOptions::default()
        },
        InfoHandler {
            info: overlay.info.clone(),
        },
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, format!("listening on {listen}: {e}")));
    let debug = Server::start(
        &debug_addr,
        ServerOptions {
            workers: 2,
            ..ServerOptions::default()
        },
        DebugHandler::new(
            registry,
            move || match problem.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                Some(reason) => Err(reason.clone()),
                None => Ok(()),
            },
            move || uptime.refresh(),
        ),
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, format!("listening on {debug_addr}: {e}")));
    log::warn!(
        "lease {} mtu {} serving {listen} (debug {debug_addr})",
        overlay.info.overlay_subnet,
        overlay.info.mtu
    );
    loop {
        if let Err(e) = overlay.poll() {
            daemon::fail(SOURCE, e);
        }
        match rx.recv_timeout(poll) {
            Ok(signal) => {
                log::warn!("{signal:?}: shutting down (the VTEP and routes stay)");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    info.shutdown();
    debug.shutdown();
}
