//! Follows the registry's table: a watch (`GET table?after=<version>&wait=<s>`) held by the
//! registry until the table changes, so a change reaches the cell within a round trip. Each table
//! received is validated and swapped in whole, then saved as the snapshot; a refused table, an
//! error or an unreachable registry keep the table in force (no blackout) and are retried.

use crate::api::sd::{InternalRoutes, TABLE_PATH, VERSION_HEADER};
use crate::daemon::backoff::Backoff;
use crate::daemon::Worker;
use crate::dns::{snapshot, DnsMetrics, SharedTable};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

/// After a failure the next attempt waits about this long, doubling (with jitter, so a fleet of
/// cells does not retry a recovering registry in step) up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone, Default)]
pub struct FollowerMetrics {
    pub tables_received: Counter,
    pub tables_refused: Counter,
    pub fetch_failures: Counter,
    pub table_version: Gauge,
    /// Unix seconds of the last answer from the registry (a table or "unchanged").
    pub last_contact: Gauge,
}

pub struct Follower {
    pub agent: ureq::Agent,
    pub base: String,
    pub wait: Duration,
    pub table: Arc<SharedTable>,
    pub snapshot: PathBuf,
    pub dns: DnsMetrics,
    pub metrics: FollowerMetrics,
    /// The version in force (-1: none from the registry yet).
    pub version: Arc<AtomicI64>,
}

enum Fetched {
    Table(i64, InternalRoutes),
    Unchanged,
}

impl Follower {
    fn fetch(&self, after: Option<i64>) -> Result<Fetched, String> {
        let url = match after {
            Some(v) => format!(
                "{}{TABLE_PATH}?after={v}&wait={}",
                self.base,
                self.wait.as_secs()
            ),
            None => format!("{}{TABLE_PATH}", self.base),
        };
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let version = resp
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok());
        let body = crate::http::client::body_string(&mut resp, 256 << 20)
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        match (status, version) {
            (304, _) => Ok(Fetched::Unchanged),
            (200, Some(v)) => serde_json::from_str(&body)
                .map(|t| Fetched::Table(v, t))
                .map_err(|e| format!("GET {url}: not a table: {e}")),
            (200, None) => Err(format!("GET {url}: no {VERSION_HEADER} header")),
            _ => Err(format!(
                "GET {url}: {status} {}",
                body.chars().take(200).collect::<String>()
            )),
        }
    }

    fn install(&self, version: i64, routes: &InternalRoutes) -> Result<(), String> {
        let table = self.table.replace(routes).map_err(|e| {
            self.metrics.tables_refused.inc();
            format!("table version {version} refused, the one in force stays: {e}")
        })?;
        self.version.store(version, Ordering::SeqCst);
        self.metrics.tables_received.inc();
        self.metrics.table_version.set(version);
        self.dns.table(table.route_count(), table.instance_count());
        if let Err(e) = snapshot::save(&self.snapshot, routes) {
            log::error!("saving the snapshot {}: {e}", self.snapshot.display());
        }
        log::debug!(
            "table version {version}: {} routes, {} instances",
            table.route_count(),
            table.instance_count()
        );
        Ok(())
    }

    pub fn spawn(self) -> Worker {
        Worker::spawn_guarded("netman-dns table follower", move |stopped| {
            let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
            let mut failing = false;
            // A version whose table was refused: the watch waits past it instead of downloading
            // the same refused table again after every back-off.
            let mut refused: Option<i64> = None;
            loop {
                let have = self
                    .version
                    .load(Ordering::SeqCst)
                    .max(refused.unwrap_or(-1));
                let result = self.fetch((have >= 0).then_some(have)).and_then(|fetched| {
                    self.metrics.last_contact.set(unix_now());
                    match fetched {
                        Fetched::Unchanged => Ok(()),
                        Fetched::Table(v, t) => {
                            let installed = self.install(v, &t);
                            refused = installed.is_err().then_some(v);
                            installed
                        }
                    }
                });
                let pause = match result {
                    Ok(()) => {
                        if failing {
                            log::info!("registry answers again");
                        }
                        failing = false;
                        backoff.reset();
                        Duration::ZERO
                    }
                    Err(e) => {
                        self.metrics.fetch_failures.inc();
                        if !failing {
                            log::error!("following the registry: {e}; serving the last table");
                        }
                        failing = true;
                        backoff.next_delay()
                    }
                };
                match stopped.recv_timeout(pause) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
