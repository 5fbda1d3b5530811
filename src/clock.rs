//! The wall clock as the stores and wire formats count it: whole seconds, milliseconds or
//! nanoseconds since the Unix epoch (0 for a clock set before 1970).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn unix_secs() -> i64 {
    since_epoch().as_secs() as i64
}

pub fn unix_millis() -> i64 {
    since_epoch().as_millis() as i64
}

pub fn unix_nanos() -> i64 {
    since_epoch().as_nanos() as i64
}
