//! The container metadata store the policy agent reads: `store.json` = JSON map handle ->
//! `{handle, ip, metadata}`; writers hold an exclusive flock on `store.json_lock`, replace the file
//! atomically (write + rename) and bump the integer in `store.json_version`. Readers need no lock:
//! [`CachedReader`] re-reads the map only when the version changed.

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub handle: String,
    pub ip: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

pub type Containers = BTreeMap<String, Container>;

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

/// Takes an exclusive flock on `path` (created if needed), with its directory.
pub(crate) fn lock_file(path: &Path) -> Result<Flock<File>, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening lock file {}: {e}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("locking {}: {e}", path.display()))
}

/// Writes `data` to `path` through a temporary file and a rename (readers never see a torn file).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} to {}: {e}", tmp.display(), path.display())
    })
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Store {
    pub fn new(path: &Path) -> Store {
        Store {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn lock_path(&self) -> PathBuf {
        suffixed(&self.path, "_lock")
    }
    pub fn version_path(&self) -> PathBuf {
        suffixed(&self.path, "_version")
    }

    /// The current version (0 when never written).
    pub fn version(&self) -> Result<u64, String> {
        match std::fs::read_to_string(self.version_path()) {
            Ok(t) => t.trim().parse().map_err(|_| {
                format!(
                    "corrupt store version file {}",
                    self.version_path().display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(format!("reading {}: {e}", self.version_path().display())),
        }
    }

    /// All containers (empty when the store does not exist yet).
    pub fn read_all(&self) -> Result<Containers, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) if bytes.iter().all(|b| b.is_ascii_whitespace()) => Ok(Containers::new()),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("corrupt container store {}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Containers::new()),
            Err(e) => Err(format!("reading {}: {e}", self.path.display())),
        }
    }

    pub fn get(&self, handle: &str) -> Result<Option<Container>, String> {
        Ok(self.read_all()?.remove(handle))
    }

    /// Adds a container; the handle must not be there yet.
    pub fn add(
        &self,
        handle: &str,
        ip: std::net::Ipv4Addr,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        if handle.is_empty() {
            return Err("container store: empty handle".into());
        }
        self.modify(|all| {
            if all.contains_key(handle) {
                return Err(format!("container store: handle {handle} already exists"));
            }
            all.insert(
                handle.to_string(),
                Container {
                    handle: handle.to_string(),
                    ip: ip.to_string(),
                    metadata,
                },
            );
            Ok(true)
        })
    }

    /// Removes a container; returns it if it was there (absent = no write).
    pub fn delete(&self, handle: &str) -> Result<Option<Container>, String> {
        let mut removed = None;
        self.modify(|all| {
            removed = all.remove(handle);
            Ok(removed.is_some())
        })?;
        Ok(removed)
    }

    /// Read-modify-write under the lock; `f` returns whether it changed anything.
    fn modify(
        &self,
        f: impl FnOnce(&mut Containers) -> Result<bool, String>,
    ) -> Result<(), String> {
        let _lock = lock_file(&self.lock_path())?;
        let mut all = self.read_all()?;
        if !f(&mut all)? {
            return Ok(());
        }
        let data = serde_json::to_vec(&all).expect("serialisable");
        write_atomic(&self.path, &data)?;
        let next = self.version()? + 1;
        write_atomic(&self.version_path(), next.to_string().as_bytes())
    }
}

/// A reader that keeps the last map and re-reads only when the version file changed.
#[derive(Debug)]
pub struct CachedReader {
    store: Store,
    version: Option<u64>,
    containers: Containers,
}

impl CachedReader {
    pub fn new(path: &Path) -> CachedReader {
        CachedReader {
            store: Store::new(path),
            version: None,
            containers: Containers::new(),
        }
    }

    /// The current containers; `changed` tells whether they were re-read.
    pub fn read(&mut self) -> Result<(&Containers, bool), String> {
        let v = self.store.version()?;
        if self.version == Some(v) {
            return Ok((&self.containers, false));
        }
        self.containers = self.store.read_all()?;
        self.version = Some(v);
        Ok((&self.containers, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_delete_version_and_cached_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let store = Store::new(&path);
        let mut reader = CachedReader::new(&path);
        assert!(reader.read().unwrap().0.is_empty());
        let mut md = serde_json::Map::new();
        md.insert("policy_group_id".into(), "app1".into());
        store.add("h1", "10.0.0.2".parse().unwrap(), md).unwrap();
        assert!(store
            .add("h1", "10.0.0.3".parse().unwrap(), Default::default())
            .is_err());
        assert_eq!(store.version().unwrap(), 1);
        let (all, changed) = reader.read().unwrap();
        assert!(changed);
        assert_eq!(all["h1"].ip, "10.0.0.2");
        assert_eq!(all["h1"].metadata["policy_group_id"], "app1");
        assert!(!reader.read().unwrap().1);
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["h1"]["handle"], "h1");
        assert!(store.delete("h1").unwrap().is_some());
        assert!(store.delete("h1").unwrap().is_none());
        assert_eq!(store.version().unwrap(), 2);
        assert!(reader.read().unwrap().0.is_empty());
    }
}
