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
                    self.metrics.last_contact.set(crate::clock::unix_secs());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A registry on loopback that answers its first request with `first` (status line, headers
    /// and body) and every later one "unchanged"; the request lines go to the returned channel.
    fn registry(first: String) -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let answer = if n == 0 {
                    first.clone()
                } else {
                    "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = conn.write_all(answer.as_bytes());
                if tx.send(line.trim().to_string()).is_err() {
                    return;
                }
            }
        });
        (base, rx)
    }

    #[test]
    fn a_refused_table_is_waited_past_not_downloaded_again() {
        let twice = r#"{"domains":["apps.internal"],"routes":[{"name":"a.apps.internal","instances":[]},{"name":"a.apps.internal","instances":[]}]}"#;
        let (base, requests) = registry(format!(
            "HTTP/1.1 200 OK\r\n{VERSION_HEADER}: 5\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{twice}",
            twice.len()
        ));
        let table = Arc::new(SharedTable::default());
        let before = table.load();
        let metrics = FollowerMetrics::default();
        let version = Arc::new(AtomicI64::new(-1));
        let dir = tempfile::tempdir().unwrap();
        let follower = Follower {
            agent: ureq::Agent::new_with_defaults(),
            base,
            wait: Duration::from_secs(1),
            table: Arc::clone(&table),
            snapshot: dir.path().join("snapshot.json"),
            dns: DnsMetrics::default(),
            metrics: metrics.clone(),
            version: Arc::clone(&version),
        }
        .spawn();
        let lines: Vec<String> = (0..3)
            .map(|_| requests.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        follower.stop();
        assert!(!lines[0].contains("after="), "{lines:?}");
        for later in &lines[1..] {
            assert!(
                later.contains("after=5&"),
                "waits past the refused version: {lines:?}"
            );
        }
        assert_eq!(metrics.tables_refused.get(), 1);
        assert_eq!(metrics.tables_received.get(), 0);
        assert_eq!(
            version.load(Ordering::SeqCst),
            -1,
            "the refused version is not in force"
        );
        assert!(
            Arc::ptr_eq(&before, &table.load()),
            "the table in force stays"
        );
    }
}
