//! policy-server: the external policy API (bearer tokens), the internal API for cell agents
//! (mutual TLS), and a loopback debug server (metrics, health, log level).

use clap::{Parser, Subcommand};
use netman::daemon::{self, DaemonArgs};
use netman::policy::app;
use netman::policy::config::PolicyServerConfig;
use netman::policy::store;

const SOURCE: &str = "policy-server";

#[derive(Parser)]
#[command(name = "policy-server", version, about = "netman policy server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: DaemonArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the database migrations alone (retrying until the database answers or the
    /// connect timeout passes), then exit.
    Migrate,
}

fn main() {
    daemon::block_shutdown_signals();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Migrate) => migrate(&cli.args),
        None => daemon::run(SOURCE, &cli.args, app::start_from_config),
    }
}

fn migrate(args: &DaemonArgs) {
    let config: PolicyServerConfig = daemon::setup(SOURCE, args);
    match store::migrate(&config.database, config.tag_pool()) {
        Ok(version) => println!("{SOURCE}: database schema at version {version}"),
        Err(e) => daemon::fail(SOURCE, format!("migrate: {e}")),
    }
}
