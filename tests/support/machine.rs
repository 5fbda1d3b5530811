//! What the machine was doing while a bench ran, for its printed figures.

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), or empty if unreadable.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
