//! netmon: reports the cell's interface count, iptables rule count and overlay device counters
//! every interval, as Prometheus metrics on the loopback debug port and as a log line.

use clap::Parser;
use netman::daemon::{self, DaemonArgs};
use netman::http::{Server, ServerOptions};
use netman::metrics::{DebugHandler, Uptime};
use netman::netmon::{self, NetmonConfig, NetmonMetrics};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SOURCE: &str = "netmon";

#[derive(Parser)]
#[command(name = "netmon", version, about = "netman cell network monitor")]
struct Cli {
    #[command(flatten)]
    args: DaemonArgs,
}

fn main() {
    daemon::block_shutdown_signals();
    let cli = Cli::parse();
    cli.args.init_logging(SOURCE);
    let config: NetmonConfig = daemon::load_config(SOURCE, &cli.args);

    let mut registry = Registry::default();
    let metrics = NetmonMetrics::register(&mut registry);
    let uptime = Uptime::register(&mut registry, "netmon");
    let healthy = Arc::new(AtomicBool::new(true));
    let health = Arc::clone(&healthy);
    let debug = Server::start(
        &format!("{}:{}", config.debug_server_host, config.debug_server_port),
        ServerOptions {
            workers: 2,
            ..ServerOptions::default()
        },
        DebugHandler::new(
            Arc::new(registry),
            move || {
                if health.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("last sample failed".into())
                }
            },
            move || uptime.refresh(),
        ),
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, e));

    let stop = Arc::new(AtomicBool::new(false));
    let worker_stop = Arc::clone(&stop);
    let interval = Duration::from_secs(config.poll_interval_seconds);
    let worker = std::thread::spawn(move || {
        let mut failures = 0i64;
        while !worker_stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            match netmon::sample(&config) {
                Ok(s) => {
                    metrics.record(&s);
                    failures = 0;
                    healthy.store(true, Ordering::SeqCst);
                    let o = s.overlay.clone().unwrap_or_default();
                    log::info!(
                        "interfaces={} iptables_rules={} overlay_device={} tx_bytes={} rx_bytes={} tx_dropped={} rx_dropped={}",
                        s.interfaces, s.iptables_rules, s.overlay.is_some(),
                        o.tx_bytes, o.rx_bytes, o.tx_dropped, o.rx_dropped
                    );
                }
                Err(e) => {
                    failures += 1;
                    metrics.sample_errors.set(failures);
                    healthy.store(false, Ordering::SeqCst);
                    log::error!("sample failed: {e}");
                }
            }
            while started.elapsed() < interval && !worker_stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    log::warn!("netmon started, debug server {}", debug.local_addr());
    daemon::wait_for_shutdown();
    stop.store(true, Ordering::SeqCst);
    let _ = worker.join();
    debug.shutdown();
}
