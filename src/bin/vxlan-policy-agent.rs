//! vxlan-policy-agent: enforces network policy on this cell. See `netman::agent`.

use clap::Parser;
use netman::agent::app;
use netman::daemon::{self, DaemonArgs};

#[derive(Parser)]
#[command(
    name = "vxlan-policy-agent",
    about = "Enforces container network policy on this cell"
)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() {
    let args = Args::parse();
    daemon::run("vxlan-policy-agent", &args.daemon, app::start);
}
