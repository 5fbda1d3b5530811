//! Network namespaces: run code inside one (on a dedicated thread, since `setns` is per thread).
//! Named namespaces made with `ip netns` (for the lab and the tests) are [`crate::lab::netns`].

use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::path::Path;

/// Runs `f` on a new thread that has entered the network namespace at `path`.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = File::open(path).map_err(|e| format!("open netns {}: {e}", path.display()))?;
    let shown = path.display().to_string();
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {shown}: {e}"))?;
        Ok(f())
    })
    .join()
    .map_err(|_| "thread inside netns panicked".to_string())?
}
