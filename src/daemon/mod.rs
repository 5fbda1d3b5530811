//! What every long-running binary shares: `--config`, `--check-config`, `--log-format`,
//! `--log-level`; a `start(config) -> Running` per daemon that `main` hands to [`run`], which logs
//! the start and listen addresses, waits for SIGTERM or SIGINT (or a fatal error of the daemon's
//! own), stops it and logs the stop; and the loopback debug server ([`debug`]).

pub mod debug;

use crate::logging::LogArgs;
use nix::sys::signal::{SigSet, Signal};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};

#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Path to the JSON configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Validate the configuration, print the result and exit.
    #[arg(long)]
    pub check_config: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

/// A started daemon, as `main` holds it until it is told to stop.
pub trait Running {
    /// What it serves where, for the start-up line: `external 0.0.0.0:4002, debug 127.0.0.1:...`.
    fn describe(&self) -> String;
    /// Stops serving and waits for its threads; logs what stays behind on purpose.
    fn stop(self);
    /// Where the daemon reports an error it cannot go on after (the process then exits 1).
    fn fatal(&mut self) -> Option<Receiver<String>> {
        None
    }
}

/// The whole life of a daemon: signals blocked, logging set up, config loaded (or
/// `--check-config` answered), `start`, then [`serve`]. Any start error exits 1 with a message.
pub fn run<C, R, E>(source: &'static str, args: &DaemonArgs, start: impl FnOnce(C) -> Result<R, E>)
where
    C: serde::de::DeserializeOwned + crate::config::Validate,
    R: Running,
    E: std::fmt::Display,
{
    block_shutdown_signals();
    let config = setup(source, args);
    let running = start(config).unwrap_or_else(|e| fail(source, e));
    serve(source, running);
}

/// Logging and the checked config: what a daemon's one-shot subcommands need as well.
pub fn setup<C>(source: &'static str, args: &DaemonArgs) -> C
where
    C: serde::de::DeserializeOwned + crate::config::Validate,
{
    args.log.init(source);
    load_config(source, args)
}

/// Logs the start, waits for a shutdown signal or a fatal error, and stops (exit 1 on a fatal
/// error, without stopping: the process ends anyway).
pub fn serve<R: Running>(source: &str, mut running: R) {
    log::info!("started: {}", running.describe());
    match wait(running.fatal()) {
        Ok(signal) => {
            log::info!("{signal}: stopping");
            running.stop();
            log::info!("stopped");
        }
        Err(e) => fail(source, e),
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
    let _ = shutdown_signals().thread_block();
}

/// Waits until SIGTERM or SIGINT arrives and returns it.
pub fn wait_for_shutdown() -> Signal {
    shutdown_signals().wait().unwrap_or(Signal::SIGTERM)
}

fn shutdown_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// The first of: a shutdown signal (`Ok`), or an error on `fatal` (`Err`).
fn wait(fatal: Option<Receiver<String>>) -> Result<Signal, String> {
    let (tx, rx) = mpsc::channel();
    let signals = tx.clone();
    std::thread::spawn(move || {
        let _ = signals.send(Ok(wait_for_shutdown()));
    });
    if let Some(fatal) = fatal {
        std::thread::spawn(move || {
            if let Ok(e) = fatal.recv() {
                let _ = tx.send(Err(e));
            }
        });
    }
    rx.recv().unwrap_or(Ok(Signal::SIGTERM))
}

/// The TLS of a daemon's mutual-TLS client (agent, overlay daemon): trust `ca`, present `cert`
/// and `key`.
pub fn client_tls(ca: &str, cert: &str, key: &str) -> crate::http::client::ClientTls {
    crate::http::client::ClientTls {
        ca_cert_file: Some(ca.to_string()),
        client_cert_file: Some(cert.to_string()),
        client_key_file: Some(key.to_string()),
        skip_verification: false,
    }
}

/// Exits with a message on stderr: the error path of every binary's `main`.
pub fn fail(source: &str, message: impl std::fmt::Display) -> ! {
    log::error!("{message}");
    eprintln!("{source}: {message}");
    std::process::exit(1)
}
