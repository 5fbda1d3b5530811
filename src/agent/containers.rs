//! The cell's containers as the agent needs them (handle, IP, app), read from the container
//! metadata store (reference §6.5): `store.json` holds `{handle: {handle, ip, metadata{...}}}`
//! and `store.json_version` a counter bumped on every write, so the agent re-reads the store only
//! when the counter changed.
//!
//! [`read_store`] is the one place that knows the file format; it is a small private reader until
//! the networker's shared store module is available.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// A local container: its app is the `policy_group_id` of its metadata.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Container {
    pub handle: String,
    pub ip: Ipv4Addr,
    pub app: String,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    ip: String,
    #[serde(default)]
    metadata: Option<BTreeMap<String, serde_json::Value>>,
}

/// Parses the store file; a missing file is an empty store (no container created yet).
/// Containers without a `policy_group_id` or an IPv4 address take no part in policy.
pub fn read_store(path: &Path) -> Result<Vec<Container>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading container store {}: {e}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: BTreeMap<String, Entry> = serde_json::from_str(&text)
        .map_err(|e| format!("parsing container store {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (handle, entry) in entries {
        let app = entry
            .metadata
            .as_ref()
            .and_then(|m| m.get("policy_group_id"))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty());
        let Some(app) = app else {
            log::debug!("container {handle} has no metadata key policy_group_id: skipped");
            continue;
        };
        match entry.ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => out.push(Container {
                handle,
                ip,
                app: app.to_string(),
            }),
            _ => log::warn!(
                "container {handle} in {}: ip {:?} is not an IPv4 address: skipped",
                path.display(),
                entry.ip
            ),
        }
    }
    Ok(out)
}

/// Reads the store only when its version file changed since the last successful read.
#[derive(Debug)]
pub struct StoreReader {
    path: PathBuf,
    version_path: PathBuf,
    /// The version of the last successful read; `None` before the first.
    seen: Option<String>,
}

impl StoreReader {
    pub fn new(path: impl Into<PathBuf>) -> StoreReader {
        let path = path.into();
        let mut version_path = path.clone().into_os_string();
        version_path.push("_version");
        StoreReader {
            path,
            version_path: version_path.into(),
            seen: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current version file content ("" when there is none yet).
    fn version(&self) -> Result<String, String> {
        match std::fs::read_to_string(&self.version_path) {
            Ok(v) => Ok(v.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(format!("reading {}: {e}", self.version_path.display())),
        }
    }

    /// Whether the store changed since the last successful [`StoreReader::read_if_changed`].
    pub fn changed(&self) -> bool {
        match self.version() {
            Ok(v) => self.seen.as_deref() != Some(v.as_str()),
            Err(_) => true,
        }
    }

    /// `Ok(Some(containers))` when the version changed (or `force`), `Ok(None)` when not.
    /// On error the remembered version stays, so the next call tries again.
    pub fn read_if_changed(&mut self, force: bool) -> Result<Option<Vec<Container>>, String> {
        let version = self.version()?;
        if !force && self.seen.as_deref() == Some(version.as_str()) {
            return Ok(None);
        }
        let containers = read_store(&self.path)?;
        // A write between reading the version and the store is caught next time: the version
        // file is bumped after the store is rewritten, so we can only be behind, never ahead.
        self.seen = Some(version);
        Ok(Some(containers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_on_version_change_and_skips_unusable_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let mut reader = StoreReader::new(&path);
        assert_eq!(reader.read_if_changed(false).unwrap(), Some(vec![]));
        assert_eq!(reader.read_if_changed(false).unwrap(), None);
        std::fs::write(
            &path,
            r#"{"h1":{"handle":"h1","ip":"10.255.1.2","metadata":{"policy_group_id":"app-a","space_id":"s"}},
               "h2":{"handle":"h2","ip":"10.255.1.3","metadata":{"app_id":"x"}},
               "h3":{"handle":"h3","ip":"fd00::1","metadata":{"policy_group_id":"app-b"}},
               "h4":{"handle":"h4","ip":"10.255.1.4"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("store.json_version"), "1").unwrap();
        assert!(reader.changed());
        let got = reader.read_if_changed(false).unwrap().unwrap();
        assert_eq!(
            got,
            vec![Container {
                handle: "h1".into(),
                ip: "10.255.1.2".parse().unwrap(),
                app: "app-a".into()
            }]
        );
        assert!(!reader.changed());
        assert_eq!(reader.read_if_changed(false).unwrap(), None);
        assert!(reader.read_if_changed(true).unwrap().is_some());
    }

    #[test]
    fn an_unparsable_store_is_an_error_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        std::fs::write(&path, "{not json").unwrap();
        std::fs::write(dir.path().join("store.json_version"), "7").unwrap();
        let mut reader = StoreReader::new(&path);
        let err = reader.read_if_changed(false).unwrap_err();
        assert!(err.contains("parsing container store"), "{err}");
        assert!(reader.changed());
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(reader.read_if_changed(false).unwrap(), Some(vec![]));
    }
}
