//! Reading a cell's flow log in tests: its lines parsed, the varying fields (time, the
//! ephemeral source port) checked and removed, so a line compares whole with the expected JSON.

use super::wait::poll;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The flow log's lines, parsed; the time and the source port (ephemeral; none for ICMP)
/// checked and removed.
pub fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let time = v.as_object_mut().unwrap().remove("time").unwrap();
            assert!(time.as_str().unwrap().ends_with('Z'), "{time}");
            let port = v["src"].as_object_mut().unwrap().remove("port").unwrap();
            let icmp = v["protocol"] == "icmp";
            assert!(
                port.as_u64().is_some_and(|p| p > 0) || (icmp && port.is_null()),
                "{port}"
            );
            v
        })
        .collect()
}

/// At least `n` lines (within 10 s).
pub fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let came = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        lines(path).len() >= n
    });
    let got = lines(path);
    assert!(
        came.is_some(),
        "fewer than {n} lines in {}: {got:?}",
        path.display()
    );
    got
}

/// The one line that `action` produces (any earlier ones, e.g. from before the agent's first
/// sync, are skipped; a second line would come in the same NFLOG batch, at most 10 ms later).
pub fn next_line(path: &Path, action: impl FnOnce()) -> Value {
    std::thread::sleep(Duration::from_millis(300));
    let n = lines(path).len();
    action();
    let got = wait_lines(path, n + 1);
    std::thread::sleep(Duration::from_millis(300));
    let got_now = lines(path);
    assert_eq!(
        got_now.len(),
        n + 1,
        "one line expected: {:?}",
        &got_now[n..]
    );
    got[n].clone()
}
