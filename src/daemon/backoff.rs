//! Exponential back-off with jitter, so that hundreds of cells do not retry a recovering policy
//! server in step.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns the wait before the next attempt: uniformly random in
    /// `[d/2, d]` where `d = min(cap, base * 2^failures)`.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.min(20);
        let d = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let nanos = d.as_nanos() as u64;
        Duration::from_nanos(rand::thread_rng().gen_range(nanos / 2..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let first = b.next_delay();
        assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
        let mut delays = Vec::new();
        for _ in 0..10 {
            delays.push(b.next_delay());
        }
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(delays[9] >= Duration::from_secs(15));
        // Jitter: many cells at the cap do not all pick the same delay.
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(spread.len() > 10);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= Duration::from_secs(2));
    }
}
