//! overlay-watchdog: checks every interval that the overlay device's address agrees with the
//! cell's lease, and exits non-zero when it does not (the cell must then be recreated).

use clap::Parser;
use netman::daemon;
use netman::logging::LogArgs;
use netman::netmon::watchdog::{self, Settings};
use std::time::Duration;

const SOURCE: &str = "overlay-watchdog";

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
    #[command(flatten)]
    log: LogArgs,
}

fn main() {
    daemon::block_shutdown_signals();
    let cli = Cli::parse();
    cli.log.init(SOURCE);
    let settings = Settings {
        vtep_name: cli.vtep_name,
        overlay_daemon_url: cli.overlay_daemon_url,
        interval: Duration::from_millis(cli.interval_ms),
    };
    if cli.once {
        let agent = watchdog::client().unwrap_or_else(|e| daemon::fail(SOURCE, e));
        if let Err(e) = watchdog::check(&agent, &settings) {
            daemon::fail(SOURCE, e);
        }
        return;
    }
    let running = watchdog::start(settings).unwrap_or_else(|e| daemon::fail(SOURCE, e));
    daemon::serve(SOURCE, running);
}
