//! overlay-daemon: one per cell; keeps the VTEP and the routes to every other cell.

use clap::Parser;
use netman::daemon::{self, DaemonArgs};
use netman::overlay::daemon as overlay;

#[derive(Parser)]
#[command(name = "overlay-daemon", about = "Overlay daemon (one per cell)")]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() {
    let args = Args::parse();
    daemon::run("overlay-daemon", &args.daemon, overlay::start);
}
