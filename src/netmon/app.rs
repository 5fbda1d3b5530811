//! A running netmon: a sampler thread that reads the cell every poll interval into the gauges
//! (and a debug log line), and the debug port that serves them.

use super::{NetmonConfig, NetmonMetrics, Sample};
use crate::daemon::debug::{self, DebugHandler};
use crate::daemon::Worker;
use crate::http::Server;
use crate::metrics::Registrar;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct RunningNetmon {
    pub debug: Server,
    sampler: Worker,
}

pub fn start(config: NetmonConfig) -> Result<RunningNetmon, String> {
    let mut registry = Registry::default();
    let metrics = NetmonMetrics::register(&mut registry);
    let uptime = Registrar::new(&mut registry, "netmon").uptime();
    let healthy = Arc::new(AtomicBool::new(true));
    let health = Arc::clone(&healthy);
    let debug = debug::serve(
        &format!("{}:{}", config.debug_server_host, config.debug_server_port),
        DebugHandler::new(
            Arc::new(registry),
            move || match health.load(Ordering::SeqCst) {
                true => Ok(()),
                false => Err("last sample failed".into()),
            },
            move || uptime.refresh(),
        ),
    )?;
    let interval = Duration::from_secs(config.poll_interval_seconds);
    let mut failures = 0i64;
    let sampler = Worker::every(interval, move || {
        match super::sample(&config) {
            Ok(s) => {
                metrics.record(&s);
                failures = 0;
                healthy.store(true, Ordering::SeqCst);
                log_sample(&s);
            }
            Err(e) => {
                failures += 1;
                metrics.sample_errors.set(failures);
                healthy.store(false, Ordering::SeqCst);
                log::error!("sample failed: {e}");
            }
        }
        true
    });
    Ok(RunningNetmon { debug, sampler })
}

fn log_sample(s: &Sample) {
    let o = s.overlay.clone().unwrap_or_default();
    log::debug!(
        "interfaces={} iptables_rules={} overlay_device={} tx_bytes={} rx_bytes={} tx_dropped={} rx_dropped={}",
        s.interfaces, s.iptables_rules, s.overlay.is_some(),
        o.tx_bytes, o.rx_bytes, o.tx_dropped, o.rx_dropped
    );
}

impl crate::daemon::Running for RunningNetmon {
    fn describe(&self) -> String {
        format!("debug {}", self.debug.local_addr())
    }

    fn stop(self) {
        self.sampler.stop();
        self.debug.shutdown();
    }
}
