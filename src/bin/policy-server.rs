//! policy-server: the external policy API (bearer tokens), the internal API for cell agents
//! (mutual TLS), and a loopback debug server (metrics, health, log level); its one-shot
//! subcommands `migrate`, `export` and `import` (docs/store.md).

use clap::{Parser, Subcommand};
use netman::daemon::{self, DaemonArgs};
use netman::policy::adopt::MigrateOptions;
use netman::policy::config::PolicyServerConfig;
use netman::policy::{admin, app};
use std::path::PathBuf;

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
    /// Bring the database to netman's schema, then exit: create it, apply missing migrations,
    /// or adopt the original cf-networking policy server's database in place (every policy and
    /// tag kept). Waits for the database like the server does.
    Migrate {
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Convert netman's schema back to the original's (cf-networking HEAD).
        #[arg(long)]
        to_original: bool,
    },
    /// Write every policy, tag and security group as one JSON document.
    Export {
        /// Write here (atomically) instead of to standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Load an export document into an empty database (of any backend).
    Import {
        /// Replace the policies, tags and security groups the database holds.
        #[arg(long)]
        replace: bool,
        /// Validate the document only; touch no database.
        #[arg(long)]
        dry_run: bool,
        /// The document (`-` or none: standard input).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

fn main() {
    daemon::block_shutdown_signals();
    let cli = Cli::parse_from(admin::hoist_server_flags(std::env::args_os()));
    let Some(command) = cli.command else {
        return daemon::run(SOURCE, &cli.args, app::start_from_config);
    };
    let config: PolicyServerConfig = daemon::setup(SOURCE, &cli.args);
    let result = match command {
        Command::Migrate {
            dry_run,
            to_original,
        } => admin::migrate(
            &config,
            MigrateOptions {
                dry_run,
                to_original,
            },
        ),
        Command::Export { output } => admin::export(&config, output.as_deref()),
        Command::Import {
            replace,
            dry_run,
            file,
        } => admin::import(&config, file.as_deref(), replace, dry_run),
    };
    if let Err(e) = result {
        daemon::fail(SOURCE, e);
    }
}
