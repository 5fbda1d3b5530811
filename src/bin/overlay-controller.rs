//! overlay-controller: the lease API of the overlay network (mutual TLS).

use clap::Parser;
use netman::daemon::{self, DaemonArgs};
use netman::overlay::controller;

#[derive(Parser)]
#[command(name = "overlay-controller", about = "Overlay lease controller")]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() {
    let args = Args::parse();
    daemon::run("overlay-controller", &args.daemon, controller::start);
}
