//! Waiting out a database: start-up retries with exponential backoff until
//! `connect_timeout_seconds`, and the short random pause before a transaction that lost a race
//! runs again.

use super::config::DatabaseConfig;
use super::error::Error;
use std::time::{Duration, Instant};

/// Retries `attempt` on database errors with exponential backoff (100 ms doubling, at most 2 s)
/// until `connect_timeout_seconds`; other errors (config, schema too new) end at once.
pub fn retry<T>(
    config: &DatabaseConfig,
    attempt: impl Fn() -> Result<T, Error>,
) -> Result<T, Error> {
    let timeout = Duration::from_secs(config.connect_timeout_seconds);
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match attempt() {
            Ok(v) => return Ok(v),
            Err(Error::Database(e) | Error::LostRace(e)) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::Database(format!(
                        "could not open the {} within connect_timeout_seconds={} \
                         ({attempts} attempts); last error: {e}",
                        config.describe(),
                        config.connect_timeout_seconds
                    )));
                }
                log::warn!(
                    "store: opening the {} failed (attempt {attempts}), retrying in {:?}: {e}",
                    config.describe(),
                    delay
                );
                std::thread::sleep(delay.min(deadline - now));
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(other) => return Err(other),
        }
    }
}

/// How long a single connection attempt may take: what is left of the start-up budget, at most
/// 10 s (so a black-holed address is retried rather than waited on for the whole budget).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn attempt_timeout(config: &DatabaseConfig) -> Duration {
    Duration::from_secs(config.connect_timeout_seconds.clamp(1, 10))
}

/// A short random pause before retrying a transaction that lost a race (grows with attempts).
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn backoff(attempt: u32) {
    use rand::Rng;
    let ms = rand::thread_rng().gen_range(1..=5 * attempt.clamp(1, 20) as u64);
    std::thread::sleep(Duration::from_millis(ms));
}
