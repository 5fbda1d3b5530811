//! The cell's side of registration: watches the container store the networker writes on `up`
//! and `down` (a version-file check every [`CHECK_INTERVAL`]), and sends the registry a full
//! report of the cell's app instances whenever it changed, and every `refresh_interval` anyway.
//! A report replaces the cell's previous one, so a stopped instance is gone with the next report,
//! within a check interval of its `down`.

use crate::api::sd::{CellRegistration, Instance, CELLS_PATH};
use crate::cell::{Container, Containers, Reader, APP_KEY};
use crate::daemon::backoff::Backoff;
use crate::daemon::Worker;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

pub const CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// The metadata key carrying a container's instance index (`0.backend.apps.internal`).
pub const INDEX_KEY: &str = "instance_index";
/// The metadata key the original networker used for the app when `policy_group_id` is absent.
const APP_ID_KEY: &str = "app_id";
/// Diego's container property with the app's logging identity, a JSON string
/// `{"guid":…,"index":N,"source_name":…,"tags":{…}}`: where a real cell's containers carry their
/// instance index (garden's properties have no `instance_index` there).
const LOG_CONFIG_KEY: &str = "log_config";

#[derive(Clone, Default)]
pub struct RegistrarMetrics {
    pub reports: Counter,
    pub report_failures: Counter,
    /// Containers left out of the report: no app, not an app workload, or no instance index.
    pub unregistered_containers: Gauge,
}

/// The app instance a container is, if it is one: an app's container (not a task or staging)
/// with an instance index (`instance_index`, else the `index` in Diego's `log_config`).
pub fn instance_of(c: &Container) -> Option<Instance> {
    if c.workload().is_some_and(|w| w != "app") {
        return None;
    }
    let text = |key: &str| {
        c.metadata
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let app = text(APP_KEY).or_else(|| text(APP_ID_KEY))?;
    let index = match c.metadata.get(INDEX_KEY) {
        Some(given) => index_value(given)?,
        None => log_config_index(text(LOG_CONFIG_KEY)?)?,
    };
    Some(Instance {
        app_guid: app.to_string(),
        index,
        ip: c.ip,
    })
}

fn index_value(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => u32::try_from(n.as_u64()?).ok(),
        _ => None,
    }
}

fn log_config_index(log_config: &str) -> Option<u32> {
    let parsed: serde_json::Value = serde_json::from_str(log_config).ok()?;
    index_value(parsed.get("index")?)
}

/// The report for the cell's containers, sorted; and how many containers are not in it.
pub fn report(containers: &Containers) -> (Vec<Instance>, usize) {
    let mut out: Vec<Instance> = containers.iter().filter_map(instance_of).collect();
    let left_out = containers.iter().count() - out.len();
    out.sort_by(|a, b| (a.ip, &a.app_guid).cmp(&(b.ip, &b.app_guid)));
    (out, left_out)
}

pub struct Registrar {
    pub agent: ureq::Agent,
    pub url: String,
    pub store: String,
    pub refresh: Duration,
    pub metrics: RegistrarMetrics,
}

impl Registrar {
    fn send(&self, instances: &[Instance]) -> Result<(), String> {
        let body = serde_json::to_vec(&CellRegistration {
            instances: instances.to_vec(),
        })
        .map_err(|e| e.to_string())?;
        let mut resp = self
            .agent
            .put(&self.url)
            .header("content-type", "application/json")
            .send(&body[..])
            .map_err(|e| format!("PUT {}: {e}", self.url))?;
        let status = resp.status().as_u16();
        let text = crate::http::client::body_string(&mut resp, 1 << 20).unwrap_or_default();
        if status != 200 {
            return Err(format!("PUT {}: {status} {text}", self.url));
        }
        Ok(())
    }

    pub fn spawn(self) -> Worker {
        Worker::spawn_guarded("netman-dns registrar", move |stopped| {
            let mut reader = Reader::new(&self.store);
            let mut pending: Option<Vec<Instance>> = None;
            let mut last_sent: Option<Instant> = None;
            let mut failing = false;
            let mut retry_at = Instant::now();
            // Retries every 250-500 ms (jittered, not growing): a registry back from a restart
            // must hear from every cell before the cell's entries expire.
            let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_millis(500));
            // The last report read from a sound store: re-sent when the store cannot be read, so
            // a damaged store neither empties the cell's entries nor lets them expire.
            let mut last_good: Option<Vec<Instance>> = None;
            loop {
                let due = last_sent.is_none_or(|t| t.elapsed() >= self.refresh);
                match reader.read_if_changed(due && pending.is_none()) {
                    Ok(Some(containers)) => {
                        let (instances, left_out) = report(&containers);
                        self.metrics.unregistered_containers.set(left_out as i64);
                        last_good = Some(instances.clone());
                        pending = Some(instances);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if !failing {
                            log::error!(
                                "reading the container store: {e}; reporting the last sound read"
                            );
                        }
                        failing = true;
                        if due && pending.is_none() {
                            pending = last_good.clone();
                        }
                    }
                }
                if let Some(instances) = pending.as_ref().filter(|_| Instant::now() >= retry_at) {
                    match self.send(instances) {
                        Ok(()) => {
                            self.metrics.reports.inc();
                            log::debug!("reported {} instances", instances.len());
                            if failing {
                                log::info!("registry reachable again; cell reported");
                            }
                            failing = false;
                            backoff.reset();
                            pending = None;
                            last_sent = Some(Instant::now());
                        }
                        Err(e) => {
                            self.metrics.report_failures.inc();
                            if !failing {
                                log::error!("reporting the cell's instances: {e}; retrying");
                            }
                            failing = true;
                            retry_at = Instant::now() + backoff.next_delay();
                        }
                    }
                }
                match stopped.recv_timeout(CHECK_INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return self.last_report(&mut reader, pending),
                }
            }
        })
    }

    /// On stop: what changed since the last report is still sent (a cell taken out stops its
    /// containers first), once, without retrying.
    fn last_report(&self, reader: &mut Reader, pending: Option<Vec<Instance>>) {
        let latest = match reader.read_if_changed(false) {
            Ok(Some(containers)) => Some(report(&containers).0),
            _ => pending,
        };
        if let Some(instances) = latest {
            if let Err(e) = self.send(&instances) {
                log::error!("last report of the cell's instances: {e}");
            }
        }
    }
}

/// The registry's URL for this cell's reports.
pub fn cell_url(base: &str, cell: &str) -> String {
    format!("{}{CELLS_PATH}/{cell}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn container(meta: serde_json::Value) -> Container {
        Container {
            handle: "h".into(),
            ip: Ipv4Addr::new(10, 255, 0, 2),
            metadata: meta.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn only_app_instances_with_an_index_are_reported() {
        let i = instance_of(&container(
            json!({"policy_group_id": "app", "instance_index": "3"}),
        ))
        .unwrap();
        assert_eq!((i.app_guid.as_str(), i.index), ("app", 3));
        assert!(instance_of(&container(json!({"app_id": "a", "instance_index": 0}))).is_some());
        for meta in [
            json!({"policy_group_id": "app"}),
            json!({"instance_index": "0"}),
            json!({"policy_group_id": "app", "instance_index": "-1"}),
            json!({"policy_group_id": "app", "instance_index": "x"}),
            json!({"policy_group_id": "app", "instance_index": "0", "container_workload": "task"}),
            json!({"policy_group_id": "app", "instance_index": "0", "container_workload": "staging"}),
        ] {
            assert!(instance_of(&container(meta.clone())).is_none(), "{meta}");
        }
    }

    #[test]
    fn a_diego_container_is_found_by_the_index_in_its_log_config() {
        let diego = |log_config: &str| {
            container(
                json!({"app_id": "app", "policy_group_id": "app", "space_id": "s",
                             "container_workload": "app", "log_config": log_config}),
            )
        };
        let i = instance_of(&diego(
            r#"{"guid":"app","index":2,"source_name":"CELL","tags":{"app_name":"x"}}"#,
        ))
        .unwrap();
        assert_eq!((i.app_guid.as_str(), i.index), ("app", 2));
        for bad in [
            "",
            "{",
            "[]",
            r#"{"guid":"app"}"#,
            r#"{"index":-1}"#,
            r#"{"index":"x"}"#,
            r#"{"index":4294967296}"#,
        ] {
            assert!(instance_of(&diego(bad)).is_none(), "{bad:?}");
        }
        // An explicit instance_index wins over the log config.
        let mut both = diego(r#"{"index":2}"#);
        both.metadata.insert("instance_index".into(), json!("5"));
        assert_eq!(instance_of(&both).unwrap().index, 5);
    }

    proptest::proptest! {
        #[test]
        fn any_log_config_is_read_or_left_out_without_panicking(text in ".{0,80}") {
            let c = container(json!({"policy_group_id": "app", "log_config": text}));
            let _ = instance_of(&c);
        }
    }
}
