//! overlay-watchdog: checks every interval that the overlay device's address agrees with the
//! cell's lease, and exits non-zero when it does not (the cell must then be recreated).

use clap::Parser;
use netman::netmon::watchdog::{self, Verdict, OUT_OF_SYNC_MESSAGE};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "overlay-watchdog", version, about = "netman overlay watchdog")]
struct Cli {
    /// The overlay (VXLAN) device.
    #[arg(long, default_value = netman::netmon::DEFAULT_VTEP)]
    vtep_name: String,
    /// The overlay daemon's local endpoint that reports the lease.
    #[arg(long, default_value = "http://127.0.0.1:23954/")]
    overlay_daemon_url: String,
    /// Milliseconds between checks.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Check once and exit: 0 in sync or nothing to compare yet, 1 out of sync.
    #[arg(long)]
    once: bool,
    #[arg(long, value_enum, default_value = "text")]
    log_format: netman::logging::LogFormat,
}

fn main() {
    netman::daemon::block_shutdown_signals();
    let cli = Cli::parse();
    netman::logging::init("overlay-watchdog", cli.log_format, log::LevelFilter::Warn);
    let agent = netman::http::client::agent(&Default::default(), Duration::from_secs(2))
        .unwrap_or_else(|e| netman::daemon::fail("overlay-watchdog", e));
    let (tx, stop) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(netman::daemon::wait_for_shutdown());
    });
    loop {
        let addresses = watchdog::device_ipv4_addresses(&cli.vtep_name)
            .unwrap_or_else(|e| netman::daemon::fail("overlay-watchdog", e));
        let lease = match watchdog::lease_from_daemon(&agent, &cli.overlay_daemon_url) {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!("{e}");
                None
            }
        };
        match watchdog::judge(lease.as_deref(), addresses.as_deref()) {
            Verdict::InSync => log::debug!("overlay in sync"),
            Verdict::NotYet(why) => log::info!("nothing to compare yet: {why}"),
            Verdict::OutOfSync(why) => {
                netman::daemon::fail("overlay-watchdog", format!("{OUT_OF_SYNC_MESSAGE}: {why}"))
            }
        }
        if cli.once {
            return;
        }
        // SIGTERM/SIGINT end the loop with exit status 0.
        if let Ok(signal) = stop.recv_timeout(Duration::from_millis(cli.interval_ms)) {
            log::info!("{signal:?}: stopping");
            return;
        }
    }
}
