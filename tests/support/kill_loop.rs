//! What a `kill -9` loop against the networker needs: random kill points (seeded, printed), a
//! wait for the processes a killed networker left running, and looks at a container's address.

use netman::lab::netns::NamedNetns;
use std::path::Path;
use std::time::{Duration, Instant};

/// A small xorshift generator: the kill points differ per run; the seed is printed.
pub struct Rng(pub u64);

impl Rng {
    pub fn seeded() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("kill loop seed {seed}");
        Rng(seed)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Waits until no process carrying `marker` (`KEY=value`) in its environment is left: the CNI
/// plugins and `iptables-restore` that a killed networker started finish on their own.
pub fn wait_for_orphans(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let busy = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
                .unwrap_or(false)
        });
        if !busy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes with {marker} still running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn has_ipv4(ns: &NamedNetns) -> bool {
    ns.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .map(|o| o.contains("inet "))
        .unwrap_or(false)
}

/// Waits (up to 5 s) until the namespace at `ns` has an IPv4 address other than loopback; polls
/// its `fib_trie` from a thread inside it (microseconds a look, no process started).
pub fn wait_for_an_address(ns: &Path) -> bool {
    netman::netns::run_in(ns, || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let trie = std::fs::read_to_string("/proc/thread-self/net/fib_trie").unwrap();
            let mut last = "";
            for line in trie.lines() {
                if let Some(ip) = line.trim().strip_prefix("|-- ") {
                    last = ip;
                } else if line.contains("/32 host LOCAL") && !last.starts_with("127.") {
                    return true;
                }
            }
            std::thread::yield_now();
        }
        false
    })
    .unwrap()
}

/// Kills the networker `child` (run with `NETMAN_TEST_RUN=<handle>`) during an `up` into the
/// namespace at `ns` and waits for what it left running. Even rounds: at a random point within
/// `spread_us` of the whole `up`. Odd rounds: right after the container got its address (plus up
/// to 3 ms), the window that matters. Returns where it was killed, for messages.
pub fn kill_during_up(
    child: &mut std::process::Child,
    handle: &str,
    ns: &Path,
    round: usize,
    spread_us: u64,
    rng: &mut Rng,
) -> String {
    if round.is_multiple_of(2) {
        kill_within(child, handle, spread_us, rng);
        "a random point".to_string()
    } else {
        let seen = wait_for_an_address(ns);
        let extra = kill_within(child, handle, 3_000, rng);
        format!("{extra} us after the address appeared (seen: {seen})")
    }
}

/// Kills the networker `child` (run with `NETMAN_TEST_RUN=<handle>`) at a random point within
/// `spread_us` and waits for what it left running. Returns the delay in microseconds.
pub fn kill_within(
    child: &mut std::process::Child,
    handle: &str,
    spread_us: u64,
    rng: &mut Rng,
) -> u64 {
    let delay = rng.below(spread_us);
    std::thread::sleep(Duration::from_micros(delay));
    let _ = child.kill();
    let _ = child.wait();
    wait_for_orphans(&format!("NETMAN_TEST_RUN={handle}"));
    delay
}

/// Runs the networker's `down` of `handle` on `cell` and kills it at a random point within
/// `spread_us`, waiting for what it left running. Returns the delay in microseconds.
pub fn kill_down(
    cell: &super::networker_fixture::Cell,
    handle: &str,
    spread_us: u64,
    rng: &mut Rng,
) -> u64 {
    let mut child = cell.spawn(
        &["--action", "down", "--handle", handle],
        "",
        &[("NETMAN_TEST_RUN", handle)],
    );
    kill_within(&mut child, handle, spread_us, rng)
}
