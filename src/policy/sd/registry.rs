//! The registry the cell resolvers follow: the table built from the database (routes joined with
//! the instances the cells report), kept rendered in memory with its version, rebuilt when the
//! version moves, and a [`Signal`] that wakes the parked table watches. A background thread reads
//! the version every [`CHECK_INTERVAL`] (one primary-key read), so a change made through any
//! policy server on the database reaches every server's watchers within one interval, and expires
//! the cells that stopped refreshing.

use super::store::{SdError, SdStore};
use crate::daemon::Worker;
use crate::http::Signal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// A cell that has not refreshed for this long is forgotten with its instances, unless
/// configured otherwise (`service_discovery_cell_expiry_seconds`): three missed refreshes of the
/// resolvers' default 10 s interval.
pub const DEFAULT_CELL_EXPIRY: Duration = Duration::from_secs(30);

/// The table as served: its version and its JSON.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub version: i64,
    pub body: Arc<Vec<u8>>,
    pub routes: usize,
    pub instances: usize,
}

pub struct Registry {
    store: Arc<SdStore>,
    cached: Mutex<Option<Rendered>>,
    signal: Signal,
    expiry: Duration,
    started: Instant,
}

impl Registry {
    pub fn new(store: Arc<SdStore>, expiry: Duration) -> Arc<Registry> {
        Arc::new(Registry {
            store,
            cached: Mutex::new(None),
            signal: Signal::new(),
            expiry,
            started: Instant::now(),
        })
    }

    pub fn store(&self) -> &SdStore {
        &self.store
    }

    pub fn signal(&self) -> Signal {
        self.signal.clone()
    }

    /// The table last rendered; `None` until the database has answered once.
    pub fn current(&self) -> Option<Rendered> {
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Renders the table again if the stored version moved; wakes the watchers when it did.
    pub fn refresh(&self) -> Result<bool, SdError> {
        let version = self.store.version()?;
        if self.current().is_some_and(|c| c.version == version) {
            return Ok(false);
        }
        let (version, table) = self.store.table()?;
        let rendered = Rendered {
            version,
            routes: table.routes.len(),
            instances: table.routes.iter().map(|r| r.instances.len()).sum(),
            body: Arc::new(crate::api::gojson::to_vec(&table).expect("the table serialises")),
        };
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(rendered);
        self.signal.notify();
        Ok(true)
    }

    /// Forgets the cells whose last refresh is older than the expiry. Not during the first
    /// expiry after this server started: while no server ran, no cell could report, and a
    /// restarted registry must not drop the instances of cells that are only waiting to reach it.
    pub fn expire(&self) -> Result<Vec<String>, SdError> {
        if self.started.elapsed() < self.expiry {
            return Ok(Vec::new());
        }
        let cutoff = crate::clock::unix_millis() - self.expiry.as_millis() as i64;
        let gone = self.store.expire(cutoff)?;
        for cell in &gone {
            log::info!(
                "service discovery: cell {cell:?} sent no refresh for {:?}; its instances are removed",
                self.expiry
            );
        }
        Ok(gone)
    }

    /// The thread that keeps the table fresh and expires silent cells.
    pub fn spawn(self: &Arc<Self>) -> Worker {
        let registry = Arc::clone(self);
        let sweep_every = (registry.expiry / 10).clamp(CHECK_INTERVAL, Duration::from_secs(5));
        Worker::spawn_guarded("service discovery registry", move |stopped| {
            let mut last_sweep = Instant::now();
            let mut failing = false;
            loop {
                let mut result = registry.refresh().map(|_| ());
                if last_sweep.elapsed() >= sweep_every {
                    last_sweep = Instant::now();
                    result = result.and(registry.expire().map(|_| ()));
                }
                match result {
                    Err(e) if !failing => {
                        failing = true;
                        log::error!("service discovery: {e}; the last table is still served");
                    }
                    Ok(()) if failing => {
                        failing = false;
                        log::info!("service discovery: the database answers again");
                    }
                    _ => {}
                }
                match stopped.recv_timeout(CHECK_INTERVAL) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
    }
}
