//! Binding a fixed address that a test bound a moment ago. The test closes its socket at once,
//! but a process that another test thread is forking at that moment holds a copy of it until its
//! `exec` (close-on-exec), longer on a loaded machine: the second bind then sees "Address already
//! in use" (seen in CI). These binds wait that out for a few seconds.

use std::io;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(5);

/// Calls `bind` until it succeeds, fails with anything but `AddrInUse`, or 5 s have passed.
pub fn retry_in_use<T>(mut bind: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match bind() {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
}
