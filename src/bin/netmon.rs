//! netmon: reports the cell's interface count, iptables rule count and overlay device counters
//! every interval, as Prometheus metrics on the loopback debug port (and a debug log line).

use clap::Parser;
use netman::daemon::{self, DaemonArgs};
use netman::netmon::app;

#[derive(Parser)]
#[command(name = "netmon", version, about = "netman cell network monitor")]
struct Cli {
    #[command(flatten)]
    args: DaemonArgs,
}

fn main() {
    let cli = Cli::parse();
    daemon::run("netmon", &cli.args, app::start);
}
