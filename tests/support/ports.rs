//! Ports for servers that tests start as child processes. A port found with `bind(0)` and then
//! released lies in the kernel's ephemeral range, where any outgoing connection on the machine (a
//! database client, another test's HTTP client) can take it before the child binds it: the child
//! then fails with "Address already in use" (seen in CI). These ports come from just below the
//! ephemeral range, which outgoing connections never use, are handed out once per test process,
//! and are checked free by binding.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the ephemeral range the tests draw from.
const SPAN: u32 = 10_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn free_port() -> u16 {
    let (first, span) = pool();
    // Different test processes start at different places, so they rarely probe the same ports.
    let offset = std::process::id() % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (first + (offset + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {first}..{}", first + span);
}

/// `[first, first + span)`: the ports below `net.ipv4.ip_local_port_range`.
fn pool() -> (u32, u32) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let first = ephemeral_low.saturating_sub(SPAN).max(1_024);
    (first, (ephemeral_low - first).max(1))
}
