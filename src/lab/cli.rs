//! `netman-lab`'s command line: the subcommands and their dispatch to [`super::commands`].
//!
//! A new subcommand: a variant of [`Command`] (its doc comment is its help), a function in
//! `commands.rs`, and its arm in [`main`].

use super::commands::{self, Action};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "netman-lab",
    version,
    about = "Run the whole of netman on one machine, in network namespaces (needs root)"
)]
pub struct Cli {
    /// Directory for configs, certificates, databases and logs.
    #[arg(long, global = true, default_value_os_t = super::default_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab: underlay, control plane, cells, example apps. Cleans up a previous lab first.
    Up {
        /// Number of cells.
        #[arg(long, default_value_t = 2)]
        cells: usize,
        /// Number of example apps: `frontend`, `backend`, `backend-2`, ...
        #[arg(long, default_value_t = 2)]
        apps: usize,
        /// Port on this machine's loopback that reaches the policy server's external API.
        #[arg(long, default_value_t = 4002)]
        api_port: u16,
    },
    /// Show what runs where.
    Status,
    /// Remove every process, namespace, link, rule and file of the lab.
    Down,
    /// Run a command inside an app's container: `netman-lab exec backend/0 -- ip addr`.
    Exec {
        /// APP or APP/INDEX
        container: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Print the lab's admin token (for `netman --token` or curl).
    Token,
    /// Print the cells' flow logs merged: who reached whom, allowed or denied, and by which rule.
    Flows {
        /// Only flows from or to this app.
        #[arg(long)]
        app: Option<String>,
        /// Only denied flows (and audit: would be denied).
        #[arg(long)]
        denied: bool,
        /// Keep printing new flows.
        #[arg(long)]
        follow: bool,
        /// The JSON lines themselves, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Kill a lab process with SIGKILL (fault drills): `netman-lab kill policy-server`.
    Kill { process: String },
    /// Start a stopped or killed lab process again with its recorded command.
    Start { process: String },
    /// Stop (SIGTERM) and start a lab process.
    Restart { process: String },
    /// Take a cell out: destroy its containers, stop its processes, release its lease.
    RemoveCell { cell: usize },
    /// (internal) Forward a loopback port of this machine into a lab namespace.
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        netns: String,
        #[arg(long)]
        target: SocketAddr,
    },
}

/// Parses the process's arguments and runs the subcommand; exits 1 with a message on failure.
pub fn main() {
    let cli = Cli::parse();
    crate::logging::init(
        "netman-lab",
        crate::logging::LogFormat::Text,
        log::LevelFilter::Warn,
    );
    let dir = cli.dir.as_path();
    let result = match cli.command {
        Command::Up {
            cells,
            apps,
            api_port,
        } => commands::up(dir, cells, apps, api_port),
        Command::Status => commands::status(dir),
        Command::Down => commands::down(dir),
        Command::Exec { container, command } => commands::exec(dir, &container, &command),
        Command::Token => commands::token(dir),
        Command::Flows {
            app,
            denied,
            follow,
            json,
        } => super::flows::run(dir, &super::flows::Filter { app, denied }, follow, json),
        Command::Kill { process } => commands::control(dir, &process, Action::Kill),
        Command::Start { process } => commands::control(dir, &process, Action::Start),
        Command::Restart { process } => commands::control(dir, &process, Action::Restart),
        Command::RemoveCell { cell } => commands::remove_cell(dir, cell),
        Command::Forward {
            listen,
            netns,
            target,
        } => super::forward::serve(listen, &super::netns::path(&netns), target),
    };
    if let Err(e) = result {
        eprintln!("netman-lab: {e}");
        std::process::exit(1);
    }
}
