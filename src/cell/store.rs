//! The container metadata store (reference §6.5): `store.json` is a JSON map handle ->
//! `{"handle", "ip", "metadata"}` with the IP as a string. The networker writes it: it holds an
//! exclusive flock on `store.json_lock`, replaces the file atomically and then bumps the integer
//! in `store.json_version`. Readers take no lock; a [`Reader`] re-reads the map only when the
//! version changed.

use super::files::{empty_file_error, lock_file, read_if_exists, suffixed, write_atomic_all};
use crate::os_error::OsError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// One container of the cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    pub handle: String,
    pub ip: Ipv4Addr,
    /// garden's properties of the container (`policy_group_id`, `container_workload`, ...).
    pub metadata: Map<String, Value>,
}

impl Container {
    /// A container whose only metadata is its app.
    pub fn for_app(handle: &str, ip: Ipv4Addr, app: &str) -> Container {
        let mut metadata = Map::new();
        metadata.insert(super::APP_KEY.into(), Value::String(app.into()));
        Container {
            handle: handle.into(),
            ip,
            metadata,
        }
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.metadata
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The app (policy group) the container belongs to; `None` when it takes no part in policy.
    pub fn app(&self) -> Option<&str> {
        self.text(super::APP_KEY)
    }

    /// `app`, `task` or `staging` (selects the deny networks of its egress).
    pub fn workload(&self) -> Option<&str> {
        self.text(super::WORKLOAD_KEY)
    }
}

/// An entry as stored. Entries whose IP is not an IPv4 address (never written by netman) are
/// kept as they are, so a rewrite of the store preserves them; readers skip them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    handle: String,
    ip: String,
    #[serde(default)]
    metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum Stored {
    Usable(Container),
    NotIpv4(Entry),
}

impl From<Entry> for Stored {
    fn from(e: Entry) -> Stored {
        match e.ip.parse::<Ipv4Addr>() {
            Ok(ip) => Stored::Usable(Container {
                handle: e.handle,
                ip,
                metadata: e.metadata,
            }),
            Err(_) => Stored::NotIpv4(e),
        }
    }
}

/// The content of the store, by handle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Containers {
    entries: BTreeMap<String, Stored>,
}

impl Containers {
    /// Every handle, including those of entries without an IPv4 address.
    pub fn handles(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn contains(&self, handle: &str) -> bool {
        self.entries.contains_key(handle)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The containers with an IPv4 address, by handle.
    pub fn iter(&self) -> impl Iterator<Item = &Container> {
        self.entries.values().filter_map(|s| match s {
            Stored::Usable(c) => Some(c),
            Stored::NotIpv4(_) => None,
        })
    }

    /// (handle, IP as written) of the entries whose IP is not an IPv4 address.
    pub fn not_ipv4(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().filter_map(|(h, s)| match s {
            Stored::NotIpv4(e) => Some((h.as_str(), e.ip.as_str())),
            Stored::Usable(_) => None,
        })
    }

    /// The container of `handle`; an entry without an IPv4 address is an error.
    pub fn get(&self, handle: &str) -> Result<Option<&Container>, StoreError> {
        match self.entries.get(handle) {
            None => Ok(None),
            Some(Stored::Usable(c)) => Ok(Some(c)),
            Some(Stored::NotIpv4(e)) => Err(StoreError::NotIpv4 {
                handle: handle.into(),
                ip: e.ip.clone(),
            }),
        }
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Containers, StoreError> {
        if let Some(message) = empty_file_error(bytes) {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                message: message.into(),
            });
        }
        let raw: BTreeMap<String, Entry> =
            serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Containers {
            entries: raw.into_iter().map(|(h, e)| (h, e.into())).collect(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.entries).expect("serialisable")
    }
}

/// A failure of the container store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A file of the store could not be read, written or locked.
    Io(OsError),
    /// `store.json` is not the store's JSON.
    Corrupt {
        path: PathBuf,
        message: String,
    },
    /// `store.json_version` does not hold an integer (`content`: its first bytes).
    CorruptVersion {
        path: PathBuf,
        content: String,
    },
    EmptyHandle,
    Exists {
        handle: String,
    },
    /// The entry of `handle` has an IP that is not an IPv4 address.
    NotIpv4 {
        handle: String,
        ip: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "{e}"),
            StoreError::Corrupt { path, message } => {
                write!(f, "corrupt container store {}: {message}", path.display())
            }
            StoreError::CorruptVersion { path, content } => write!(
                f,
                "corrupt store version file {}: {content:?} is not an integer",
                path.display()
            ),
            StoreError::EmptyHandle => write!(f, "container store: empty handle"),
            StoreError::Exists { handle } => {
                write!(f, "container store: handle {handle} already exists")
            }
            StoreError::NotIpv4 { handle, ip } => {
                write!(f, "container store: bad IP {ip:?} for {handle}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for String {
    fn from(e: StoreError) -> String {
        e.to_string()
    }
}

impl From<OsError> for StoreError {
    fn from(e: OsError) -> StoreError {
        StoreError::Io(e)
    }
}

/// The store at one path.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
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

    /// The current version (0 when never written; an empty or non-integer file is an error).
    pub fn version(&self) -> Result<u64, StoreError> {
        let path = self.version_path();
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(0);
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim().parse().map_err(|_| StoreError::CorruptVersion {
            content: text.chars().take(32).collect(),
            path,
        })
    }

    /// Everything (empty when the store does not exist yet; an empty or unparsable file is an
    /// error, never an empty store).
    pub fn read_all(&self) -> Result<Containers, StoreError> {
        match read_if_exists(&self.path)? {
            None => Ok(Containers::default()),
            Some(bytes) => Containers::decode(&self.path, &bytes),
        }
    }

    pub fn get(&self, handle: &str) -> Result<Option<Container>, StoreError> {
        Ok(self.read_all()?.get(handle)?.cloned())
    }

    /// Whether the store has an entry for `handle` (with an IPv4 address or not).
    pub fn contains(&self, handle: &str) -> Result<bool, StoreError> {
        Ok(self.read_all()?.contains(handle))
    }

    /// Adds a container; its handle must not be there yet.
    pub fn add(&self, container: Container) -> Result<(), StoreError> {
        if container.handle.is_empty() {
            return Err(StoreError::EmptyHandle);
        }
        self.modify(|all| {
            if all.contains(&container.handle) {
                return Err(StoreError::Exists {
                    handle: container.handle.clone(),
                });
            }
            all.entries
                .insert(container.handle.clone(), Stored::Usable(container));
            Ok(true)
        })
    }

    /// Removes the entry of `handle`; whether it was there (absent = no write).
    pub fn delete(&self, handle: &str) -> Result<bool, StoreError> {
        let mut removed = false;
        self.modify(|all| {
            removed = all.entries.remove(handle).is_some();
            Ok(removed)
        })?;
        Ok(removed)
    }

    /// Read-modify-write under the lock; `f` returns whether it changed anything. Both files are
    /// read and checked before either is written, so a damaged one fails the change without
    /// touching the other.
    fn modify(
        &self,
        f: impl FnOnce(&mut Containers) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let _lock = lock_file(&self.lock_path())?;
        let version = self.version()?;
        let mut all = self.read_all()?;
        if !f(&mut all)? {
            return Ok(());
        }
        // The store first, then its version: a reader that sees the new version reads the
        // new store.
        let version = (version + 1).to_string();
        Ok(write_atomic_all(&[
            (&self.path, &all.encode()),
            (&self.version_path(), version.as_bytes()),
        ])?)
    }
}

/// Reads the store only when its version changed since the last successful read.
#[derive(Debug)]
pub struct Reader {
    store: Store,
    /// The version of the last successful read; `None` before the first.
    seen: Option<u64>,
}

impl Reader {
    pub fn new(path: impl AsRef<Path>) -> Reader {
        Reader {
            store: Store::new(path.as_ref()),
            seen: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// Whether the store changed since the last successful [`Reader::read_if_changed`] (an
    /// unreadable version file counts as a change, so that the error is reported).
    pub fn changed(&self) -> bool {
        match self.store.version() {
            Ok(v) => self.seen != Some(v),
            Err(_) => true,
        }
    }

    /// `Ok(Some(containers))` when the version changed (or `force`), `Ok(None)` when not. On
    /// error the remembered version stays, so the next call tries again.
    pub fn read_if_changed(&mut self, force: bool) -> Result<Option<Containers>, StoreError> {
        let version = self.store.version()?;
        if !force && self.seen == Some(version) {
            return Ok(None);
        }
        let all = self.store.read_all()?;
        // The writer bumps the version after replacing the store, so a write between the two
        // reads leaves us behind (caught next time), never ahead.
        self.seen = Some(version);
        Ok(Some(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn damaged_stores_are_errors_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Containers::decode(Path::new("store.json"), &bytes);
        }

        #[test]
        fn containers_round_trip(
            list in proptest::collection::vec(("[a-z0-9-]{1,12}", any::<u32>(), "[a-z]{0,6}"), 0..8)
        ) {
            let mut all = Containers::default();
            for (handle, ip, app) in &list {
                let c = Container::for_app(handle, Ipv4Addr::from(*ip), app);
                all.entries.insert(handle.clone(), Stored::Usable(c));
            }
            let back = Containers::decode(Path::new("store.json"), &all.encode()).unwrap();
            prop_assert_eq!(back, all);
        }
    }

    #[test]
    fn add_delete_version_and_versioned_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let store = Store::new(&path);
        let mut reader = Reader::new(&path);
        assert!(reader.read_if_changed(false).unwrap().unwrap().is_empty());
        assert_eq!(reader.read_if_changed(false).unwrap(), None);
        let ip: Ipv4Addr = "10.0.0.2".parse().unwrap();
        store.add(Container::for_app("h1", ip, "app1")).unwrap();
        let again = Container::for_app("h1", "10.0.0.3".parse().unwrap(), "x");
        assert_eq!(
            store.add(again).unwrap_err(),
            StoreError::Exists {
                handle: "h1".into()
            }
        );
        assert_eq!(store.version().unwrap(), 1);
        assert!(reader.changed());
        let all = reader.read_if_changed(false).unwrap().unwrap();
        let h1 = all.get("h1").unwrap().unwrap();
        assert_eq!((h1.ip, h1.app()), (ip, Some("app1")));
        assert!(!reader.changed());
        assert_eq!(reader.read_if_changed(false).unwrap(), None);
        assert!(reader.read_if_changed(true).unwrap().is_some());
        // The on-disk format: the IP as a string, the handle repeated inside.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            r#"{"h1":{"handle":"h1","ip":"10.0.0.2","metadata":{"policy_group_id":"app1"}}}"#
        );
        assert!(store.delete("h1").unwrap());
        assert!(!store.delete("h1").unwrap());
        assert_eq!(store.version().unwrap(), 2);
        assert!(reader.read_if_changed(false).unwrap().unwrap().is_empty());
    }

    #[test]
    fn a_version_file_that_cannot_be_written_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("store.json"));
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        store
            .add(Container::for_app("h1", ip("10.0.0.1"), "a"))
            .unwrap();
        // The version's temporary file cannot be created: a directory stands in its place.
        let blocker = suffixed(
            &store.version_path(),
            &format!(".tmp{}", std::process::id()),
        );
        std::fs::create_dir(&blocker).unwrap();
        let err = store
            .add(Container::for_app("h2", ip("10.0.0.2"), "a"))
            .unwrap_err();
        assert!(err.to_string().contains("store.json_version.tmp"), "{err}");
        let all = store.read_all().unwrap();
        assert_eq!(all.handles().collect::<Vec<_>>(), ["h1"]);
        assert_eq!(store.version().unwrap(), 1);
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp") && !n.starts_with("store.json_version.tmp"))
            .collect();
        assert!(left.is_empty(), "temporaries left: {left:?}");
        std::fs::remove_dir(&blocker).unwrap();
        store
            .add(Container::for_app("h2", ip("10.0.0.2"), "a"))
            .unwrap();
        assert_eq!(store.read_all().unwrap().handles().count(), 2);
        assert_eq!(store.version().unwrap(), 2);
    }

    #[test]
    fn entries_without_an_ipv4_address_are_kept_but_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        std::fs::write(
            &path,
            r#"{"h3":{"handle":"h3","ip":"fd00::1","metadata":{"policy_group_id":"app-b"}},
                "h4":{"handle":"h4","ip":"10.255.1.4"}}"#,
        )
        .unwrap();
        let store = Store::new(&path);
        let all = store.read_all().unwrap();
        assert_eq!(all.handles().count(), 2);
        assert_eq!(
            all.iter().map(|c| c.handle.as_str()).collect::<Vec<_>>(),
            ["h4"]
        );
        assert_eq!(all.not_ipv4().collect::<Vec<_>>(), [("h3", "fd00::1")]);
        assert!(store.get("h3").is_err());
        assert!(store.contains("h3").unwrap());
        store
            .add(Container::for_app("h5", "10.255.1.5".parse().unwrap(), "a"))
            .unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["h3"]["ip"], "fd00::1", "a rewrite keeps the entry");
        assert_eq!(v["h4"]["metadata"], serde_json::json!({}));
    }

    #[test]
    fn an_unparsable_store_is_an_error_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        std::fs::write(&path, "{not json").unwrap();
        std::fs::write(dir.path().join("store.json_version"), "7").unwrap();
        let mut reader = Reader::new(&path);
        let err = reader.read_if_changed(false).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("corrupt container store"), "{err}");
        assert!(reader.changed());
        std::fs::write(&path, "{}").unwrap();
        assert!(reader.read_if_changed(false).unwrap().unwrap().is_empty());
        std::fs::write(dir.path().join("store.json_version"), "x").unwrap();
        assert!(matches!(
            reader.read_if_changed(false).unwrap_err(),
            StoreError::CorruptVersion { .. }
        ));
    }

    /// Issue 18 item 6: an empty store is damage (reported to every reader, the agent's
    /// included), and a damaged version file fails a change before the store is written.
    #[test]
    fn empty_or_damaged_files_are_reported_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let store = Store::new(&path);
        let ip: Ipv4Addr = "10.0.0.2".parse().unwrap();
        store.add(Container::for_app("h1", ip, "a")).unwrap();
        let good = std::fs::read(&path).unwrap();

        for empty in ["", "\n"] {
            std::fs::write(&path, empty).unwrap();
            let err = store.read_all().unwrap_err();
            assert!(err.to_string().contains("is empty"), "{err}");
            let mut reader = Reader::new(&path);
            assert!(matches!(
                reader.read_if_changed(true).unwrap_err(),
                StoreError::Corrupt { .. }
            ));
            let e = store.add(Container::for_app("h2", ip, "b")).unwrap_err();
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), empty);
        }
        std::fs::write(&path, &good).unwrap();

        let version = store.version_path();
        for bad in ["", "seven", "-1"] {
            std::fs::write(&version, bad).unwrap();
            let e = store.add(Container::for_app("h2", ip, "b")).unwrap_err();
            assert!(e.to_string().contains("corrupt store version file"), "{e}");
            assert!(store.delete("h1").is_err());
            assert_eq!(std::fs::read(&path).unwrap(), good, "store untouched");
        }
        std::fs::write(&version, "1").unwrap();
        store.add(Container::for_app("h2", ip, "b")).unwrap();
        assert_eq!(store.version().unwrap(), 2);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
