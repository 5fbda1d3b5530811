//! Polling until a condition holds or a deadline passes.

use std::time::{Duration, Instant};

/// Calls `ready` every `every` until it returns true (`Some(time it took)`) or `timeout` has
/// passed (`None`). `ready` is always called at least once, and once more after the deadline.
pub fn poll(
    timeout: Duration,
    every: Duration,
    mut ready: impl FnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let late = started.elapsed() > timeout;
        if ready() {
            return Some(started.elapsed());
        }
        if late {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Polls `ready` every 50 ms; panics naming `what` when it is not true within `timeout`.
pub fn wait_until(what: &str, timeout: Duration, ready: impl FnMut() -> bool) -> Duration {
    poll(timeout, Duration::from_millis(50), ready)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `f` every 20 ms until it returns `want` (the time it took) or `within` passes (the last
/// value seen).
pub fn wait_for<T: PartialEq>(
    within: Duration,
    want: T,
    mut f: impl FnMut() -> T,
) -> Result<Duration, T> {
    let mut last = None;
    match poll(within, Duration::from_millis(20), || {
        let got = f();
        let done = got == want;
        last = Some(got);
        done
    }) {
        Some(took) => Ok(took),
        None => Err(last.expect("polled at least once")),
    }
}
