//! A running overlay daemon: the lease and VTEP ([`Daemon`]), its poll thread, the local port
//! the CNI plugin asks, and the debug port.

use super::api::InfoHandler;
use super::config::DaemonConfig;
use super::lease::Daemon;
use super::metrics::DaemonMetrics;
use crate::daemon::debug::{self, DebugHandler};
use crate::daemon::{client_tls, Worker};
use crate::http::{Server, ServerOptions};
use crate::metrics::Registrar;
use crate::overlay::client::ControllerClient;
use prometheus_client::registry::Registry;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

pub struct RunningDaemon {
    pub info: Server,
    pub debug: Server,
    /// The lease and the VTEP's MTU, as the plugin is told.
    summary: String,
    poller: Worker,
    fatal: Option<Receiver<String>>,
}

pub fn start(config: DaemonConfig) -> Result<RunningDaemon, String> {
    let client = ControllerClient::new(
        &config.controller_url,
        &client_tls(
            &config.ca_cert_file,
            &config.client_cert_file,
            &config.client_key_file,
        ),
        Duration::from_secs(config.client_timeout_seconds),
    )?;
    let mut registry = Registry::default();
    let mut r = Registrar::new(&mut registry, "overlay_daemon");
    let metrics = DaemonMetrics::register(&mut r);
    let uptime = r.uptime();
    let poll_interval = Duration::from_secs(config.poll_interval_seconds);
    let listen = format!("{}:{}", config.listen_host, config.listen_port);
    let debug_addr = format!("127.0.0.1:{}", config.debug_server_port);
    let mut overlay = Daemon::start(config, client, metrics).map_err(|e| e.to_string())?;
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
    .map_err(|e| format!("plugin endpoint: {e}"))?;
    let problem = overlay.problem.clone();
    let debug = debug::serve(
        &debug_addr,
        DebugHandler::new(
            Arc::new(registry),
            move || match problem.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                Some(reason) => Err(reason.clone()),
                None => Ok(()),
            },
            move || uptime.refresh(),
        ),
    )?;
    let summary = format!(
        "lease {} mtu {}",
        overlay.info.overlay_subnet, overlay.info.mtu
    );
    // A fatal error ends the polling and, through `fatal`, the process.
    let (fatal_tx, fatal) = mpsc::channel();
    let poller = Worker::every(poll_interval, move || match overlay.poll() {
        Ok(()) => true,
        Err(e) => {
            let _ = fatal_tx.send(e.to_string());
            false
        }
    });
    Ok(RunningDaemon {
        info,
        debug,
        summary,
        poller,
        fatal: Some(fatal),
    })
}

impl crate::daemon::Running for RunningDaemon {
    fn describe(&self) -> String {
        format!(
            "{}, serving {}, debug {}",
            self.summary,
            self.info.local_addr(),
            self.debug.local_addr()
        )
    }

    fn stop(self) {
        self.poller.stop();
        self.info.shutdown();
        self.debug.shutdown();
        log::info!("the VTEP, its routes and the lease stay for the next start");
    }

    fn fatal(&mut self) -> Option<Receiver<String>> {
        self.fatal.take()
    }
}
