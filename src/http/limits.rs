//! The process's open-file limit, raised as far as the listeners' connection limits need.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// File descriptors kept for everything that is not a client connection (databases, files,
/// netlink, child processes).
const RESERVE: u64 = 256;

static WANTED: AtomicU64 = AtomicU64::new(RESERVE);
static WARNED: Once = Once::new();

/// Adds `connections` to what this process needs and raises the soft `RLIMIT_NOFILE` towards it,
/// never above the hard limit. Logs once, clearly, when the hard limit is lower than needed.
/// Returns the soft limit in force afterwards.
pub fn reserve_connections(connections: usize) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wanted = WANTED.fetch_add(connections as u64, Ordering::SeqCst) + connections as u64;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let target = wanted.min(hard);
    let mut now = soft;
    if target > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => {
                log::info!("open-file limit raised from {soft} to {target} (hard limit {hard})");
                now = target;
            }
            Err(e) => {
                log::warn!("could not raise the open-file limit from {soft} to {target}: {e}")
            }
        }
    }
    if wanted > hard {
        WARNED.call_once(|| {
            log::warn!(
                "the open-file hard limit ({hard}) is lower than the {wanted} descriptors the \
                 listeners' connection limits need: beyond about {} open connections new ones \
                 are refused; raise the hard limit (e.g. LimitNOFILE=) or lower max_connections",
                hard.saturating_sub(RESERVE)
            );
        });
    }
    now
}

/// A listener that stopped gives its share back (the soft limit stays where it is).
pub fn release_connections(connections: usize) {
    let _ = WANTED.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
        Some(w.saturating_sub(connections as u64).max(RESERVE))
    });
}
