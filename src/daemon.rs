//! Conventions shared by every long-running binary: `--config`, `--check-config`,
//! `--log-format`, `--log-level`, and a clean exit on SIGTERM or SIGINT.

use crate::logging::{self, LogFormat};
use nix::sys::signal::{SigSet, Signal};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Path to the JSON configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the configuration, print the result and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level at start (error, warn, info, debug, trace); changeable at runtime via /log-level.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

impl DaemonArgs {
    pub fn init_logging(&self, source: &'static str) {
        let level = logging::parse_level(&self.log_level).unwrap_or_else(|e| {
            eprintln!("{source}: --log-level: {e}");
            std::process::exit(2)
        });
        logging::init(source, self.log_format, level);
    }
}

/// Loads and validates the config, handles `--check-config`, and exits with a clear message on
/// any error.
pub fn load_config<T>(source: &str, args: &DaemonArgs) -> T
where
    T: serde::de::DeserializeOwned + crate::config::Validate,
{
    match crate::config::load::<T>(&args.config) {
        Ok(c) => {
            if args.check_config {
                println!("{source}: config {} is valid", args.config.display());
                std::process::exit(0);
            }
            c
        }
        Err(e) => {
            eprintln!("{source}: {e}");
            std::process::exit(2);
        }
    }
}

/// Blocks SIGTERM and SIGINT in this thread and every thread spawned after it, so that
/// [`wait_for_shutdown`] receives them. Call first thing in `main`.
pub fn block_shutdown_signals() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    let _ = set.thread_block();
}

/// Waits until SIGTERM or SIGINT arrives and returns it.
pub fn wait_for_shutdown() -> Signal {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.wait().unwrap_or(Signal::SIGTERM)
}

/// Exits with a message on stderr: the error path of every binary's `main`.
pub fn fail(source: &str, message: impl std::fmt::Display) -> ! {
    log::error!("{message}");
    eprintln!("{source}: {message}");
    std::process::exit(1)
}
