//! The optional Cloud Controller syncer (`asg_syncer` in the config, with `cc_url`): copies the
//! CC's security groups into the store as the original's `policy-server-asg-syncer` does
//! (reference §3.1), one active instance per database.
//!
//! Each cycle: take or renew the lease (`asg_syncer_lock`; other servers on the database skip);
//! read the CC's `asg_latest_update`; if it equals the timestamp of the last sync and that sync
//! began at least [`SAME_SECOND_MARGIN`] after the timestamp's second ended, nothing changed:
//! skip. Otherwise read every page of `/v3/security_groups`, re-reading the timestamp before
//! the first page and after every page; a change means the list may have shifted under the
//! paging (a group deleted on page 1 moves one from page 3 to page 2 unseen), so the whole read
//! is retried, up to [`ATTEMPTS`] times in a cycle. A consistent read is written with one
//! replacing transaction, with the timestamp and the start of the read.
//!
//! Decisions where the original differs:
//! - The CC's timestamp has one-second resolution, so two changes in one second left the second
//!   one unsynced until some later change (cloud_controller_ng issue 3479). Here a timestamp
//!   equal to the last one is trusted only once a sync has started after its second was over
//!   (plus a margin for clock skew); until then every cycle reads the list again.
//! - A timestamp different from the remembered one (also an older one: a restored CC) syncs.
//! - After `retry_deadline_seconds` without a good sync the original exits; this server keeps
//!   serving (policies too) and reports: an error log per failed cycle, the
//!   `policy_server_asg_sync_failures` counter and `policy_server_asg_seconds_since_sync`.
//! - The remembered timestamp is in the database, so a restart or a new lease holder does not
//!   read the whole list again when nothing changed.

use super::cc_source::AsgSource;
use super::store::{AsgStore, SyncMark};
use crate::api::security_groups::SecurityGroup;
use crate::policy::asg::admin::stored_rule;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Consistent reads tried per cycle.
pub const ATTEMPTS: usize = 3;
/// How long after a timestamp's second a sync must start for the timestamp to be trusted.
pub const SAME_SECOND_MARGIN: Duration = Duration::from_secs(2);

fn default_interval() -> u64 {
    5
}
fn default_deadline() -> u64 {
    300
}
fn default_page_size() -> usize {
    5000
}
fn default_lease() -> u64 {
    30
}

/// The `asg_syncer` section of the policy-server config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsgSyncConfig {
    /// The CC's internal listener (`/internal/v4/asg_latest_update`); default: `cc_url`.
    #[serde(default)]
    pub cc_internal_url: String,
    #[serde(default)]
    pub cc_internal_ca_cert_file: String,
    /// Client certificate and key for the internal listener's mutual TLS.
    #[serde(default)]
    pub cc_internal_client_cert_file: String,
    #[serde(default)]
    pub cc_internal_client_key_file: String,
    /// Seconds between timestamp checks (the original: 60; a check is one small request).
    #[serde(default = "default_interval")]
    pub poll_interval_seconds: u64,
    /// Seconds without a good sync after which every failed cycle is an error.
    #[serde(default = "default_deadline")]
    pub retry_deadline_seconds: u64,
    /// `per_page` of `/v3/security_groups` (the CC allows at most 5000).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// How long a lease holder may stay silent before another server takes over.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
}

impl AsgSyncConfig {
    pub fn validate(&self) -> Result<(), String> {
        use crate::config::require_readable_file;
        if self.poll_interval_seconds == 0 || self.poll_interval_seconds > 3600 {
            return Err("invalid 'asg_syncer.poll_interval_seconds': 1 to 3600".into());
        }
        if self.retry_deadline_seconds == 0 {
            return Err("invalid 'asg_syncer.retry_deadline_seconds': must be positive".into());
        }
        if !(1..=5000).contains(&self.page_size) {
            return Err("invalid 'asg_syncer.page_size': 1 to 5000".into());
        }
        if self.lease_seconds <= self.poll_interval_seconds {
            return Err(
                "invalid 'asg_syncer.lease_seconds': must be longer than poll_interval_seconds"
                    .into(),
            );
        }
        let url = &self.cc_internal_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err("invalid 'asg_syncer.cc_internal_url': an http:// or https:// URL".into());
        }
        for (key, file) in [
            (
                "asg_syncer.cc_internal_ca_cert_file",
                &self.cc_internal_ca_cert_file,
            ),
            (
                "asg_syncer.cc_internal_client_cert_file",
                &self.cc_internal_client_cert_file,
            ),
            (
                "asg_syncer.cc_internal_client_key_file",
                &self.cc_internal_client_key_file,
            ),
        ] {
            if !file.is_empty() {
                require_readable_file(key, file)?;
            }
        }
        if self.cc_internal_client_cert_file.is_empty()
            != self.cc_internal_client_key_file.is_empty()
        {
            return Err("'asg_syncer.cc_internal_client_cert_file' and \
                        'cc_internal_client_key_file' go together"
                .into());
        }
        Ok(())
    }
}

/// The Cloud Controller to copy from and how.
pub type SyncSource = (Box<dyn AsgSource>, AsgSyncConfig);

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cycle {
    /// Another server holds the lease.
    NotLeader,
    /// The timestamp says nothing changed.
    Unchanged,
    /// Synced: groups written (inserted, updated, deleted) and reads needed.
    Synced { changed: usize, attempts: usize },
    /// The list kept changing under the paging in every attempt.
    Unstable,
}

/// Seconds since the epoch of an RFC 3339 time (`2022-10-03T14:38:21Z`, fractions and offsets
/// allowed); `None` when it is not one.
pub fn rfc3339_seconds(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        // ASCII first: the slices below would cut a multi-byte character.
        o if o.len() == 6 && o.is_ascii() && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let sign = if &o[..1] == "-" { -1 } else { 1 };
            sign * (num_of(&o[1..3])? * 3600 + num_of(&o[4..6])? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s - offset)
}

fn num_of(s: &str) -> Option<i64> {
    s.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| s.parse().ok())?
}

/// Whether a CC timestamp equal to the remembered one may be trusted: the sync that remembered
/// it began after the timestamp's second (plus the margin) was over.
pub fn trusted(mark: &SyncMark, cc_last_update: &str) -> bool {
    if mark.cc_last_update != cc_last_update || mark.synced_at == 0 {
        return false;
    }
    let second = if cc_last_update.is_empty() {
        0
    } else {
        match rfc3339_seconds(cc_last_update) {
            Some(s) => s,
            None => return false,
        }
    };
    let trusted_from =
        (second + 1).saturating_mul(1_000_000_000) + SAME_SECOND_MARGIN.as_nanos() as i64;
    mark.synced_at >= trusted_from
}

/// A CC v3 security group as the store keeps it: rules re-marshalled to the original's stored
/// shape (the CC validated them; the cells parse them again and report a bad one).
pub fn from_v3(resource: &Value) -> Result<SecurityGroup, String> {
    let guid = resource["guid"]
        .as_str()
        .filter(|g| !g.is_empty() && g.len() <= 36)
        .ok_or_else(|| {
            format!(
                "a security group without a guid of 1 to 36 characters: {}",
                resource["guid"]
            )
        })?;
    let name = resource["name"]
        .as_str()
        .filter(|n| n.len() <= 255)
        .ok_or_else(|| format!("security group {guid}: no name of at most 255 bytes"))?;
    let rules = match &resource["rules"] {
        Value::Array(rules) => rules.iter().map(stored_rule).collect::<Vec<_>>(),
        Value::Null => Vec::new(),
        _ => return Err(format!("security group {guid}: rules is not an array")),
    };
    let spaces = |rel: &str| -> Result<Vec<String>, String> {
        match &resource["relationships"][rel]["data"] {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i["guid"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("security group {guid}: {rel} entry without guid"))
                })
                .collect(),
            _ => Err(format!("security group {guid}: {rel} is not a list")),
        }
    };
    let flag = |k: &str| resource["globally_enabled"][k].as_bool().unwrap_or(false);
    Ok(SecurityGroup {
        guid: guid.to_string(),
        name: name.to_string(),
        rules: crate::api::gojson::to_string(&rules).map_err(|e| e.to_string())?,
        staging_default: flag("staging"),
        running_default: flag("running"),
        staging_space_guids: spaces("staging_spaces")?,
        running_space_guids: spaces("running_spaces")?,
    })
}

pub struct Syncer {
    pub store: std::sync::Arc<dyn AsgStore>,
    pub source: Box<dyn AsgSource>,
    pub holder: String,
    pub config: AsgSyncConfig,
}

enum Read {
    Consistent(Vec<SecurityGroup>),
    Shifted,
}

impl Syncer {
    /// One cycle; `Err` when the CC or the database failed.
    pub fn cycle(&self) -> Result<Cycle, String> {
        let lease = (self.config.lease_seconds as i64).saturating_mul(1_000_000_000);
        if !self
            .store
            .acquire_sync_lease(&self.holder, lease)
            .map_err(|e| format!("syncer lease: {e}"))?
        {
            return Ok(Cycle::NotLeader);
        }
        let mark = self.store.sync_mark().map_err(|e| e.to_string())?;
        for attempt in 1..=ATTEMPTS {
            let started = crate::clock::unix_nanos();
            let before = self.source.latest_update()?;
            if attempt == 1 && trusted(&mark, &before) {
                return Ok(Cycle::Unchanged);
            }
            match self.read_all(&before)? {
                Read::Shifted => {
                    log::info!(
                        "security groups changed in the Cloud Controller while they were read \
                         (attempt {attempt} of {ATTEMPTS}); reading again"
                    );
                }
                Read::Consistent(groups) => {
                    let done = self
                        .store
                        .replace(
                            &groups,
                            &SyncMark {
                                cc_last_update: before,
                                synced_at: started,
                            },
                        )
                        .map_err(|e| format!("writing the synced security groups: {e}"))?;
                    let changed = done.inserted + done.updated + done.deleted;
                    if changed > 0 {
                        log::info!(
                            "synced {} security groups from the Cloud Controller: {} new, {} \
                             changed, {} deleted",
                            groups.len(),
                            done.inserted,
                            done.updated,
                            done.deleted
                        );
                    }
                    return Ok(Cycle::Synced {
                        changed,
                        attempts: attempt,
                    });
                }
            }
        }
        Ok(Cycle::Unstable)
    }

    /// Every page, with the timestamp re-read after each.
    fn read_all(&self, before: &str) -> Result<Read, String> {
        let mut groups = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = Some(format!(
            "/v3/security_groups?per_page={}",
            self.config.page_size
        ));
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > 100_000 {
                return Err("the Cloud Controller keeps answering a next page".into());
            }
            let (resources, following) = self.source.page(&path)?;
            if self.source.latest_update()? != before {
                return Ok(Read::Shifted);
            }
            for r in &resources {
                let g = from_v3(r)?;
                if seen.insert(g.guid.clone()) {
                    groups.push(g);
                }
            }
            next = following;
        }
        Ok(Read::Consistent(groups))
    }
}

/// The syncer's metrics (`policy_server_asg_sync_*`).
#[derive(Clone)]
pub struct SyncMetrics {
    /// Cycle latency by what it did (`Synced`, `Unchanged`, `NotLeader`, `Unstable`, `Failed`).
    pub cycles: crate::metrics::OpMetrics,
    pub failures: prometheus_client::metrics::counter::Counter,
    pub seconds_since_sync: prometheus_client::metrics::gauge::Gauge,
    pub leader: prometheus_client::metrics::gauge::Gauge,
}

impl SyncMetrics {
    pub fn register(r: &mut crate::metrics::Registrar<'_>) -> SyncMetrics {
        SyncMetrics {
            cycles: r.ops(
                "asg_sync_cycle_duration_seconds",
                "Security-group sync cycles from the Cloud Controller, by what they did",
            ),
            failures: r.metric(
                "asg_sync_failures",
                "Sync cycles that failed (Cloud Controller, database, or a list that kept changing)",
            ),
            seconds_since_sync: r.metric(
                "asg_seconds_since_sync",
                "Seconds since this server last found the store in step with the Cloud Controller",
            ),
            leader: r.metric(
                "asg_syncer_leader",
                "1 while this server holds the syncer lease",
            ),
        }
    }
}

/// Runs a cycle at once and then every `poll_interval_seconds`.
pub fn spawn(syncer: Syncer, metrics: SyncMetrics) -> crate::daemon::Worker {
    let interval = Duration::from_secs(syncer.config.poll_interval_seconds);
    let deadline = Duration::from_secs(syncer.config.retry_deadline_seconds);
    let mut last_good = std::time::Instant::now();
    crate::daemon::Worker::every(interval, move || {
        let result = metrics.cycles.time("Cycle", || syncer.cycle());
        let outcome = match &result {
            Ok(Cycle::NotLeader) => {
                metrics.leader.set(0);
                last_good = std::time::Instant::now();
                None
            }
            Ok(Cycle::Unchanged) | Ok(Cycle::Synced { .. }) => {
                metrics.leader.set(1);
                last_good = std::time::Instant::now();
                None
            }
            Ok(Cycle::Unstable) => Some(format!(
                "the Cloud Controller's security groups changed during each of {ATTEMPTS} reads"
            )),
            Err(e) => Some(e.clone()),
        };
        metrics
            .seconds_since_sync
            .set(last_good.elapsed().as_secs() as i64);
        if let Some(problem) = outcome {
            metrics.failures.inc();
            if last_good.elapsed() > deadline {
                log::error!(
                    "security-group sync failing for {} s (retry_deadline_seconds {}): {problem}",
                    last_good.elapsed().as_secs(),
                    deadline.as_secs()
                );
            } else {
                log::warn!("security-group sync cycle failed, retrying next cycle: {problem}");
            }
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The Cloud Controller's timestamp is outside input: no text panics the parser.
        #[test]
        fn rfc3339_never_panics(text in "\\PC{0,40}", tail in "\\PC{0,8}") {
            let _ = rfc3339_seconds(&text);
            let _ = rfc3339_seconds(&format!("2022-10-03T14:38:21{tail}"));
        }
    }

    #[test]
    fn rfc3339_multibyte_offset_is_refused() {
        assert_eq!(rfc3339_seconds("2022-10-03T14:38:21\u{e9}0:00"), None);
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_seconds("2022-10-03T14:38:21Z"), Some(1_664_807_901));
        assert_eq!(
            rfc3339_seconds("2022-10-03T14:38:21.999Z"),
            Some(1_664_807_901)
        );
        assert_eq!(
            rfc3339_seconds("2022-10-03T16:38:21+02:00"),
            Some(1_664_807_901)
        );
        for bad in [
            "",
            "2022-10-03",
            "2022-13-03T14:38:21Z",
            "2022-10-03T14:38:21",
            "x022-10-03T14:38:21Z",
        ] {
            assert_eq!(rfc3339_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_timestamp_is_trusted_only_after_its_second_and_the_margin() {
        let ts = "2022-10-03T14:38:21Z";
        let second = 1_664_807_901i64 * 1_000_000_000;
        let mark = |at: i64| SyncMark {
            cc_last_update: ts.into(),
            synced_at: at,
        };
        assert!(
            !trusted(&mark(second + 500_000_000), ts),
            "same second: maybe a later change"
        );
        assert!(
            !trusted(&mark(second + 2_500_000_000), ts),
            "inside the margin"
        );
        assert!(trusted(&mark(second + 3_000_000_000), ts));
        assert!(!trusted(
            &mark(second + 3_000_000_000),
            "2022-10-03T14:38:22Z"
        ));
        assert!(!trusted(&SyncMark::default(), ""), "never synced");
    }
}
