//! What every long-running binary shares: `--config`, `--check-config`, `--log-format`,
//! `--log-level`; a `start(config) -> Running` per daemon that `main` hands to [`run`], which logs
//! the start and listen addresses, waits for SIGTERM or SIGINT (or a fatal error of the daemon's
//! own), stops it and logs the stop; and the loopback debug server ([`debug`]).

pub mod backoff;
pub mod debug;

use crate::logging::LogArgs;
use clap::{Args, FromArgMatches};
use nix::sys::signal::{SigSet, Signal};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// The `main` of a daemon without subcommands: its command line is [`DaemonArgs`] (and
/// `--version`), the rest is [`run`].
pub fn main<C, R, E>(name: &'static str, about: &'static str, start: impl FnOnce(C) -> Result<R, E>)
where
    C: serde::de::DeserializeOwned + crate::config::Validate,
    R: Running,
    E: std::fmt::Display,
{
    let matches = DaemonArgs::augment_args(clap::Command::new(name))
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let args = DaemonArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    run(name, &args, start);
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

/// Sleeps for `duration`, or less when SIGTERM or SIGINT is pending (blocked, as between
/// [`block_shutdown_signals`] and [`serve`]): then returns it, leaving it pending. For the waits
/// of start-up (e.g. database retries), which must not outlast a request to stop.
pub fn sleep_unless_shutdown(duration: Duration) -> Option<Signal> {
    const SLICE: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + duration;
    loop {
        if let Some(signal) = pending_shutdown() {
            return Some(signal);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(SLICE.min(deadline - now));
    }
}

/// A shutdown signal pending for this thread or the process.
fn pending_shutdown() -> Option<Signal> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given; it is read only on success.
    let pending = unsafe {
        if libc::sigpending(set.as_mut_ptr()) != 0 {
            return None;
        }
        set.assume_init()
    };
    [Signal::SIGTERM, Signal::SIGINT]
        .into_iter()
        // SAFETY: `pending` is an initialised sigset_t.
        .find(|s| unsafe { libc::sigismember(&pending, *s as libc::c_int) } == 1)
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

/// How long a panicked [`Worker::spawn_guarded`] loop waits before it runs again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

static WORKER_PANICS: AtomicU64 = AtomicU64::new(0);

/// Panics caught in background loops of this process since it started.
pub fn worker_panics() -> u64 {
    WORKER_PANICS.load(Ordering::Relaxed)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// A daemon's background thread (a poller, a sampler), stopped through a channel.
pub struct Worker {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// Runs `work` on a thread; it should return soon after `stopped` receives or disconnects.
    pub fn spawn(work: impl FnOnce(Receiver<()>) + Send + 'static) -> Worker {
        let (stop, stopped) = mpsc::channel();
        Worker {
            stop,
            thread: std::thread::spawn(move || work(stopped)),
        }
    }

    /// Runs `work` on a thread like [`Worker::spawn`], and again after [`RESTART_DELAY`]
    /// whenever it panics: a bug met on one input must not end the loop for the life of the
    /// process (the panic is logged, and counted in [`worker_panics`]).
    pub fn spawn_guarded(
        name: &'static str,
        mut work: impl FnMut(&Receiver<()>) + Send + 'static,
    ) -> Worker {
        Worker::spawn(move |stopped| loop {
            match catch_unwind(AssertUnwindSafe(|| work(&stopped))) {
                Ok(()) => return,
                Err(panic) => {
                    WORKER_PANICS.fetch_add(1, Ordering::Relaxed);
                    log::error!(
                        "{name} panicked ({}); restarting it in {RESTART_DELAY:?}",
                        panic_text(&panic)
                    );
                    match stopped.recv_timeout(RESTART_DELAY) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            }
        })
    }

    /// Runs `tick` at once and then every `interval` (from the start of one to the start of
    /// the next) until stopped, or until `tick` returns `false`. A tick that panics is logged
    /// and counted, and the next one runs as usual.
    pub fn every(interval: Duration, mut tick: impl FnMut() -> bool + Send + 'static) -> Worker {
        Worker::spawn(move |stopped| loop {
            let started = Instant::now();
            match catch_unwind(AssertUnwindSafe(&mut tick)) {
                Ok(true) => {}
                Ok(false) => return,
                Err(panic) => {
                    WORKER_PANICS.fetch_add(1, Ordering::Relaxed);
                    log::error!("a periodic task panicked ({})", panic_text(&panic));
                }
            }
            match stopped.recv_timeout(interval.saturating_sub(started.elapsed())) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        })
    }

    /// Tells the thread to stop and waits for it.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_guarded_loop_that_panics_runs_again_and_still_stops() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let before = worker_panics();
        let worker = Worker::spawn_guarded("test loop", move |stopped| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first run");
            }
            let _ = stopped.recv();
        });
        wait_for("the loop ran again after its panic", || {
            runs.load(Ordering::SeqCst) >= 2
        });
        assert!(worker_panics() > before);
        worker.stop();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_periodic_task_that_panics_keeps_its_schedule() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&ticks);
        let worker = Worker::every(Duration::from_millis(10), move || {
            if counted.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                panic!("every other tick");
            }
            true
        });
        wait_for("ticks after panics", || ticks.load(Ordering::SeqCst) >= 5);
        worker.stop();
    }
}
