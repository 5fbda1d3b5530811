//! Host port allocator: lowest free port of `start .. start+total`, recorded per handle in the
//! state file `{"acquired_ports":{"<handle>":[ports]}}` under an flock on `<state_file>_lock`.

use super::Error;
use crate::cell::files::{lock_file, read_optional, suffixed, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    acquired_ports: BTreeMap<String, Vec<u16>>,
}

#[derive(Debug, Clone)]
pub struct PortAllocator {
    path: PathBuf,
    start: u16,
    total: u16,
}

impl PortAllocator {
    pub fn new(path: &Path, start: u16, total: u16) -> PortAllocator {
        PortAllocator {
            path: path.to_path_buf(),
            start,
            total,
        }
    }

    /// Last port of the pool (the pool ends at 65535 whatever `total` says).
    fn last(&self) -> u16 {
        (u32::from(self.start) + u32::from(self.total) - 1).min(65535) as u16
    }

    fn in_range(&self, port: u16) -> bool {
        port >= self.start && port <= self.last()
    }

    fn read(&self) -> Result<State, Error> {
        match read_optional(&self.path)? {
            None => Ok(State::default()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| Error::CorruptPortState {
                path: self.path.clone(),
                message: e.to_string(),
            }),
        }
    }

    fn locked<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<(T, bool), Error>,
    ) -> Result<T, Error> {
        let _l = lock_file(&suffixed(&self.path, "_lock"))?;
        let mut state = self.read()?;
        let (out, changed) = f(&mut state)?;
        if changed {
            write_atomic(
                &self.path,
                &serde_json::to_vec(&state).expect("serialisable"),
            )?;
        }
        Ok(out)
    }

    /// Resolves the requested host ports of one container: 0 = allocate the lowest free port
    /// (recorded for `handle`); a port inside the range = error; outside = used as is.
    pub fn acquire(&self, handle: &str, requested: &[u16]) -> Result<Vec<u16>, Error> {
        for &port in requested {
            if port != 0 && self.in_range(port) {
                return Err(Error::PortInRange {
                    port,
                    start: self.start,
                    last: self.last(),
                });
            }
        }
        if !requested.contains(&0) {
            return Ok(requested.to_vec());
        }
        self.locked(|state| {
            let mut used: BTreeSet<u16> =
                state.acquired_ports.values().flatten().copied().collect();
            let mut out = Vec::new();
            let mut mine = Vec::new();
            for &p in requested {
                if p != 0 {
                    out.push(p);
                    continue;
                }
                let free = (self.start..=self.last())
                    .find(|p| !used.contains(p))
                    .ok_or(Error::PortsExhausted)?;
                used.insert(free);
                mine.push(free);
                out.push(free);
            }
            state
                .acquired_ports
                .entry(handle.to_string())
                .or_default()
                .extend(mine);
            Ok((out, true))
        })
    }

    /// Releases every port of `handle` (nothing held = no write).
    pub fn release(&self, handle: &str) -> Result<Vec<u16>, Error> {
        self.locked(|state| {
            let ports = state.acquired_ports.remove(handle).unwrap_or_default();
            let changed = !ports.is_empty();
            Ok((ports, changed))
        })
    }

    /// Records `ports` for `handle` again (used to give back all but one port).
    pub fn restore(&self, handle: &str, ports: &[u16]) -> Result<(), Error> {
        self.locked(|state| {
            state
                .acquired_ports
                .entry(handle.to_string())
                .or_default()
                .extend_from_slice(ports);
            Ok(((), true))
        })
    }

    pub fn handles(&self) -> Result<Vec<String>, Error> {
        Ok(self.read()?.acquired_ports.into_keys().collect())
    }

    pub fn ports_of(&self, handle: &str) -> Result<Vec<u16>, Error> {
        Ok(self
            .read()?
            .acquired_ports
            .get(handle)
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_explicit_and_exhaustion() {
        let dir = tempfile::tempdir().unwrap();
        let a = PortAllocator::new(&dir.path().join("state.json"), 61000, 3);
        assert_eq!(a.acquire("h1", &[0, 0]).unwrap(), vec![61000, 61001]);
        assert_eq!(a.acquire("h2", &[0, 8080]).unwrap(), vec![61002, 8080]);
        assert_eq!(a.acquire("h3", &[0]).unwrap_err(), Error::PortsExhausted);
        assert!(a
            .acquire("h3", &[61001])
            .unwrap_err()
            .to_string()
            .contains("cannot specify port from allocation range"));
        assert_eq!(a.release("h1").unwrap(), vec![61000, 61001]);
        assert_eq!(a.acquire("h3", &[0]).unwrap(), vec![61000]);
        let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
        assert_eq!(text, r#"{"acquired_ports":{"h2":[61002],"h3":[61000]}}"#);
        assert!(a.release("nope").unwrap().is_empty());
    }
}
