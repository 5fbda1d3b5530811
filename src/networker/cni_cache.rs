//! The networker's cache of what a CNI ADD needs again at DEL time, one file per container
//! (`<cni_cache_dir>/<handle>.json`), written by `up` and read by `down`; the policy agent reads
//! the NetOut rules from it to attribute the static NetOut chains' counters.

use super::cni_exec::RuntimeConfig;
use super::names::validate_handle;
use super::protocol::NetOutRule;
use crate::cell::files::write_atomic;
use crate::cni::CniResult;
use crate::os_error::OsError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CniCache {
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub runtime_config: Option<RuntimeConfig>,
    #[serde(default)]
    pub result: Option<CniResult>,
    /// The policy agent owns the container's egress (it has no NetOut chains).
    #[serde(default)]
    pub agent_egress: bool,
}

impl CniCache {
    /// The NetOut rules garden gave at `up`.
    pub fn net_out_rules(&self) -> &[NetOutRule] {
        self.runtime_config
            .as_ref()
            .map_or(&[], |r| r.net_out_rules.as_slice())
    }
}

pub fn path(dir: &Path, handle: &str) -> PathBuf {
    dir.join(format!("{handle}.json"))
}

/// The entry of `handle`; `None` when there is none. A file that cannot be read or parsed is an
/// error naming it (damaged state is reported, never read as absent).
pub fn read(dir: &Path, handle: &str) -> Result<Option<CniCache>, String> {
    validate_handle(handle).map_err(|e| e.to_string())?;
    let path = path(dir, handle);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces the entry of `handle` atomically (the directory is made when missing).
pub fn write(dir: &Path, handle: &str, cache: &CniCache) -> Result<(), OsError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| OsError::io(format!("creating {}", dir.display()), &e))?;
    let data = serde_json::to_vec(cache).expect("serialisable");
    write_atomic(&path(dir, handle), &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_written_and_read_back_a_missing_one_is_none_a_damaged_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cache");
        assert!(read(&d, "h").unwrap().is_none());
        let rules: Vec<NetOutRule> = serde_json::from_value(serde_json::json!([
            {"protocol": 1, "networks": [{"start": "10.0.0.1", "end": "10.0.0.1"}],
             "ports": [{"start": 443, "end": 443}]}
        ]))
        .unwrap();
        let cache = CniCache {
            runtime_config: Some(RuntimeConfig {
                net_out_rules: rules.clone(),
                port_mappings: Vec::new(),
            }),
            agent_egress: true,
            ..CniCache::default()
        };
        write(&d, "h", &cache).unwrap();
        let back = read(&d, "h").unwrap().unwrap();
        assert_eq!(back.net_out_rules(), rules.as_slice());
        assert!(back.agent_egress);

        std::fs::write(path(&d, "h"), b"{\"runtime_config\": ").unwrap();
        let e = read(&d, "h").unwrap_err();
        assert!(e.contains("h.json"), "{e}");
        assert!(read(&d, "../h").is_err(), "a handle that is no file name");
    }
}
