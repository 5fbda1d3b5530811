//! The loop shared by the agent's policy side and its ASG side: poll every interval, and, where
//! the server has a watch on the version (`policies_last_updated` / `security_groups_last_updated`
//! with `?wait=&after=`), hold it in a background thread and run a cycle as soon as it reports a
//! change. The interval then only looks at local state (the container store, a due full sync),
//! without a request to the server. Against a server without the watch the loop asks the server
//! every interval, as the original agent does, and asks again for a watch after
//! [`UNSUPPORTED_RETRY`]. Failures back off with jitter.

use super::client::Watched;
use super::Error;
use crate::daemon::backoff::Backoff;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After a server answered that it has no watch, plain polling for this long before asking again
/// (it may have been upgraded).
pub const UNSUPPORTED_RETRY: Duration = Duration::from_secs(600);

/// Where a poll takes the server's version from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// Ask the server.
    Ask,
    /// A watch just reported it.
    Known(i64),
    /// A watch is running and reported nothing: the last known version still holds.
    Unchanged,
}

/// One side of the agent as the loop drives it.
pub trait Watchable: Send + Sync + 'static {
    /// Names the side in logs ("policy", "security groups").
    const WHAT: &'static str;
    /// One cycle, with the server's version taken from `remote`.
    fn poll_with(&self, remote: Remote) -> Result<(), Error>;
    /// Waits (up to `wait`) for the server's version to move from the one last applied;
    /// `Ok(None)` when nothing was applied yet.
    fn watch_once(&self, wait: Duration) -> Result<Option<Watched>, Error>;
    /// The version last applied.
    fn known_version(&self) -> Option<i64>;
    /// The flag the loop keeps set while a watch is open and has reported no change since the
    /// cycle before it: the version last applied is the server's (as far as the watch knows).
    fn watch_flag(&self) -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LoopSettings {
    pub interval: Duration,
    pub backoff_max: Duration,
    /// How long one watch request waits; `None` polls only.
    pub watch: Option<Duration>,
    /// The wait before the first cycle.
    pub first: Duration,
}

/// What wakes the loop besides its interval.
enum Event {
    Stop,
    /// The watch saw the version move.
    Changed(i64),
    /// The server has no watch.
    Unsupported,
    /// The watch failed; the next poll finds out more.
    Failed(String),
}

/// Runs cycles until `stop` receives or is dropped.
pub fn run<W: Watchable>(side: Arc<W>, settings: LoopSettings, stop: Receiver<()>) {
    let interval = settings.interval;
    let mut backoff = Backoff::new(interval, settings.backoff_max);
    let (events, incoming) = channel();
    {
        let events = events.clone();
        std::thread::spawn(move || {
            let _ = stop.recv();
            let _ = events.send(Event::Stop);
        });
    }
    let watching = side.watch_flag();
    watching.store(false, Ordering::SeqCst);
    let mut watch_unsupported_until: Option<Instant> = None;
    let mut wait = settings.first;
    loop {
        let remote = match incoming.recv_timeout(wait) {
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => {
                watching.store(false, Ordering::SeqCst);
                return;
            }
            Ok(Event::Changed(v)) => Remote::Known(v),
            Ok(Event::Unsupported) => {
                log::warn!(
                    "the policy server has no {} watch; polling every {:.1} s",
                    W::WHAT,
                    interval.as_secs_f64()
                );
                watch_unsupported_until = Some(Instant::now() + UNSUPPORTED_RETRY);
                Remote::Ask
            }
            Ok(Event::Failed(e)) => {
                // Every cell's watch fails at once when the server restarts: spread the retries.
                log::warn!("{} watch failed: {e}", W::WHAT);
                wait = jitter(interval);
                continue;
            }
            Err(RecvTimeoutError::Timeout) if watching.load(Ordering::SeqCst) => Remote::Unchanged,
            Err(RecvTimeoutError::Timeout) => Remote::Ask,
        };
        match side.poll_with(remote) {
            Ok(()) => {
                if backoff.failures() > 0 {
                    log::warn!(
                        "{} cycle recovered after {} failures",
                        W::WHAT,
                        backoff.failures()
                    );
                }
                backoff.reset();
                wait = interval;
                let may_watch = watch_unsupported_until.is_none_or(|t| Instant::now() >= t);
                if let (Some(watch_wait), true) = (settings.watch, may_watch) {
                    if !watching.swap(true, Ordering::SeqCst) {
                        spawn_watch(&side, watch_wait, &watching, events.clone());
                    }
                }
            }
            Err(e) => {
                wait = backoff.next_delay();
                log::warn!(
                    "{} cycle failed ({e}); the last enforced rules stay; retrying in {:.1} s",
                    W::WHAT,
                    wait.as_secs_f64()
                );
            }
        }
    }
}

/// Holds a watch open, renewing it at its timeout, until it reports something; `watching` is
/// cleared when it ends (or tells it to end).
fn spawn_watch<W: Watchable>(
    side: &Arc<W>,
    wait: Duration,
    watching: &Arc<AtomicBool>,
    events: Sender<Event>,
) {
    let side = Arc::clone(side);
    let flag = Arc::clone(watching);
    let spawned = std::thread::Builder::new()
        .name(format!("{}-watch", W::WHAT))
        .spawn(move || {
            let event = loop {
                if !flag.load(Ordering::SeqCst) {
                    return;
                }
                let before = side.known_version();
                match side.watch_once(wait) {
                    Ok(Some(Watched::Version(v))) if Some(v) != before => break Event::Changed(v),
                    Ok(Some(Watched::Version(_) | Watched::Unaffected(_))) => continue,
                    Ok(Some(Watched::Unsupported)) => break Event::Unsupported,
                    Ok(None) => break Event::Failed("nothing applied yet".into()),
                    Err(e) => break Event::Failed(e.to_string()),
                }
            };
            flag.store(false, Ordering::SeqCst);
            let _ = events.send(event);
        });
    if let Err(e) = spawned {
        log::error!("cannot start the {} watch: {e}", W::WHAT);
        watching.store(false, Ordering::SeqCst);
    }
}

/// A random part of `d`, so that many cells do not act in the same instant.
pub fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
}
