//! The cell's containers as the agent needs them (handle, IP, app), from the networker's
//! container metadata store (`crate::networker::container_store`, reference §6.5): `store.json`
//! holds `{handle: {handle, ip, metadata{...}}}` and `store.json_version` a counter bumped on
//! every write, so the agent re-reads the store only when the counter changed.

use crate::networker::container_store::{Containers, Store};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// A local container: its app is the `policy_group_id` of its metadata.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Container {
    pub handle: String,
    pub ip: Ipv4Addr,
    pub app: String,
}

/// The containers that take part in policy: those with a `policy_group_id` and an IPv4 address.
pub fn policy_containers(all: &Containers, source: &Path) -> Vec<Container> {
    let mut out = Vec::new();
    for (handle, entry) in all {
        let app = entry
            .metadata
            .get("policy_group_id")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty());
        let Some(app) = app else {
            log::debug!("container {handle} has no metadata key policy_group_id: skipped");
            continue;
        };
        match entry.ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => out.push(Container {
                handle: handle.clone(),
                ip,
                app: app.to_string(),
            }),
            _ => log::warn!(
                "container {handle} in {}: ip {:?} is not an IPv4 address: skipped",
                source.display(),
                entry.ip
            ),
        }
    }
    out
}

/// Reads the store only when its version changed since the last successful read.
#[derive(Debug)]
pub struct StoreReader {
    store: Store,
    /// The version of the last successful read; `None` before the first.
    seen: Option<u64>,
}

impl StoreReader {
    pub fn new(path: impl AsRef<Path>) -> StoreReader {
        StoreReader {
            store: Store::new(path.as_ref()),
            seen: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Whether the store changed since the last successful [`StoreReader::read_if_changed`]
    /// (an unreadable version file counts as a change, so that the error is reported).
    pub fn changed(&self) -> bool {
        match self.store.version() {
            Ok(v) => self.seen != Some(v),
            Err(_) => true,
        }
    }

    /// `Ok(Some(containers))` when the version changed (or `force`), `Ok(None)` when not.
    /// On error the remembered version stays, so the next call tries again.
    pub fn read_if_changed(&mut self, force: bool) -> Result<Option<Vec<Container>>, String> {
        let version = self.store.version()?;
        if !force && self.seen == Some(version) {
            return Ok(None);
        }
        let all = self.store.read_all()?;
        // The writer bumps the version after replacing the store, so a write between the two
        // reads leaves us behind (caught next time), never ahead.
        self.seen = Some(version);
        Ok(Some(policy_containers(&all, self.store.path())))
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
        assert!(err.contains("corrupt container store"), "{err}");
        assert!(reader.changed());
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(reader.read_if_changed(false).unwrap(), Some(vec![]));
    }
}
