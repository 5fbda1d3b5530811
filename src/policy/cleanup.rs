//! Stale-policy cleanup: policies whose source or destination app no longer exists in the Cloud
//! Controller are deleted. Runs on demand (`POST policies/cleanup`) and on an interval.

use super::cc::CloudController;
use super::store::{PolicyFilter, Store};
use crate::api::policy::Policy;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deletes stale policies and returns them.
pub fn run(store: &dyn Store, cc: Option<&dyn CloudController>) -> Result<Vec<Policy>, String> {
    let cc = cc.ok_or("no Cloud Controller configured (cc_url), so app existence is unknown")?;
    let policies = store.list(&PolicyFilter::All).map_err(|e| e.to_string())?;
    let guids: Vec<String> = policies
        .iter()
        .flat_map(|p| [p.source.id.clone(), p.destination.id.clone()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if guids.is_empty() {
        return Ok(Vec::new());
    }
    let existing = cc.existing_apps(&guids).map_err(|e| e.0)?;
    let stale: Vec<Policy> = policies
        .into_iter()
        .filter(|p| !existing.contains(&p.source.id) || !existing.contains(&p.destination.id))
        .collect();
    if !stale.is_empty() {
        store.delete(&stale).map_err(|e| e.to_string())?;
        log::warn!("cleanup deleted {} stale policies", stale.len());
    }
    Ok(stale)
}

/// Runs [`run`] every `interval` until `stop` is set.
pub fn spawn_periodic(
    store: Arc<dyn Store>,
    cc: Arc<dyn CloudController>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now() + interval;
        while !stop.load(Ordering::SeqCst) {
            if Instant::now() >= next {
                if let Err(e) = run(&*store, Some(&*cc)) {
                    log::error!("periodic policy cleanup failed: {e}");
                }
                next = Instant::now() + interval;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}
