//! Host ports of NetIn mappings, recorded per handle in the state file
//! `{"acquired_ports":{"<handle>":[ports]}}` under an flock on `<state_file>_lock`: the ones
//! allocated from the pool `start .. start+total` (lowest free) and the ones a container asked for
//! explicitly, so that no host port is ever mapped to two containers. An explicit port must be
//! one a container may map ([`ExplicitPorts`]: a range, by default the pool, plus an allow-list)
//! and no service of the cell may listen on it.

use super::Error;
use crate::cell::files::{empty_file_error, lock_file, read_if_exists, suffixed, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    acquired_ports: BTreeMap<String, Vec<u16>>,
}

impl State {
    fn holder(&self, port: u16) -> Option<&str> {
        self.acquired_ports
            .iter()
            .find(|(_, ports)| ports.contains(&port))
            .map(|(h, _)| h.as_str())
    }
}

/// The host ports a container may ask for explicitly: `range` (inclusive) and `allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplicitPorts {
    pub range: (u16, u16),
    pub allow: BTreeSet<u16>,
}

impl ExplicitPorts {
    pub fn permits(&self, port: u16) -> bool {
        (self.range.0..=self.range.1).contains(&port) || self.allow.contains(&port)
    }
}

#[derive(Debug, Clone)]
pub struct PortAllocator {
    path: PathBuf,
    start: u16,
    total: u16,
    explicit: ExplicitPorts,
}

impl PortAllocator {
    pub fn new(path: &Path, start: u16, total: u16, explicit: ExplicitPorts) -> PortAllocator {
        PortAllocator {
            path: path.to_path_buf(),
            start,
            total,
            explicit,
        }
    }

    /// Last port of the pool (the pool ends at 65535 whatever `total` says).
    pub fn pool_last(start: u16, total: u16) -> u16 {
        (u32::from(start) + u32::from(total) - 1).min(65535) as u16
    }

    fn last(&self) -> u16 {
        PortAllocator::pool_last(self.start, self.total)
    }

    fn read(&self) -> Result<State, Error> {
        let corrupt = |message: String| Error::CorruptPortState {
            path: self.path.clone(),
            message,
        };
        match read_if_exists(&self.path)? {
            None => Ok(State::default()),
            Some(b) => match empty_file_error(&b) {
                Some(m) => Err(corrupt(m.into())),
                None => serde_json::from_slice(&b).map_err(|e| corrupt(e.to_string())),
            },
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

    /// What an explicit request must meet before the state is looked at: a port a container may
    /// map, asked once, that no service of the cell listens on.
    fn check_explicit(&self, requested: &[u16]) -> Result<(), Error> {
        let mut seen = BTreeSet::new();
        for &port in requested.iter().filter(|p| **p != 0) {
            if !seen.insert(port) {
                return Err(Error::PortTwice(port));
            }
            if !self.explicit.permits(port) {
                return Err(Error::PortNotAllowed {
                    port,
                    range: self.explicit.range,
                    allow: self.explicit.allow.iter().copied().collect(),
                });
            }
        }
        if seen.is_empty() {
            return Ok(());
        }
        let listening = listening_ports();
        match seen.into_iter().find(|p| listening.contains(p)) {
            Some(port) => Err(Error::PortListened(port)),
            None => Ok(()),
        }
    }

    /// Resolves the requested host ports of one container, in order: 0 = the lowest free port
    /// of the pool, else the port itself when it is permitted and free. All of them are recorded
    /// for `handle`; on any refusal nothing is.
    pub fn acquire(&self, handle: &str, requested: &[u16]) -> Result<Vec<u16>, Error> {
        self.check_explicit(requested)?;
        if requested.is_empty() {
            return Ok(Vec::new());
        }
        self.locked(|state| {
            for &port in requested.iter().filter(|p| **p != 0) {
                if let Some(holder) = state.holder(port) {
                    return Err(Error::PortTaken {
                        port,
                        holder: holder.to_string(),
                    });
                }
            }
            let mut used: BTreeSet<u16> =
                state.acquired_ports.values().flatten().copied().collect();
            used.extend(requested.iter().copied());
            let mut out = Vec::new();
            for &p in requested {
                if p != 0 {
                    out.push(p);
                    continue;
                }
                let free = (self.start..=self.last())
                    .find(|p| !used.contains(p))
                    .ok_or(Error::PortsExhausted)?;
                used.insert(free);
                out.push(free);
            }
            state
                .acquired_ports
                .entry(handle.to_string())
                .or_default()
                .extend(&out);
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

    /// Releases one port of `handle` (the others stay, in their order).
    pub fn release_one(&self, handle: &str, port: u16) -> Result<(), Error> {
        self.locked(|state| {
            let Some(ports) = state.acquired_ports.get_mut(handle) else {
                return Ok(((), false));
            };
            let before = ports.len();
            ports.retain(|p| *p != port);
            let changed = ports.len() != before;
            if ports.is_empty() {
                state.acquired_ports.remove(handle);
            }
            Ok(((), changed))
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

/// TCP ports something listens on in this network namespace on a non-loopback address
/// (`/proc/net/tcp`, `/proc/net/tcp6`): a NetIn mapping of one would take its traffic away.
fn listening_ports() -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        ports.extend(text.lines().skip(1).filter_map(listening_port));
    }
    ports
}

/// One line of `/proc/net/tcp{,6}`: `sl local_address rem_address st ...`, the address as hex
/// `ADDR:PORT`, state `0A` = LISTEN.
fn listening_port(line: &str) -> Option<u16> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != "0A" {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    let loopback = match addr.len() {
        // IPv4 in host byte order (little-endian here): 127.x.x.x ends in "7F".
        8 => addr.ends_with("7F"),
        // ::1, and ::ffff:127.x.x.x
        32 => {
            addr == "00000000000000000000000001000000"
                || (addr.starts_with("0000000000000000FFFF0000") && addr.ends_with("7F"))
        }
        _ => false,
    };
    if loopback {
        return None;
    }
    u16::from_str_radix(port, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocator(dir: &Path, allow: &[u16]) -> PortAllocator {
        let explicit = ExplicitPorts {
            range: (61000, 61002),
            allow: allow.iter().copied().collect(),
        };
        PortAllocator::new(&dir.join("state.json"), 61000, 3, explicit)
    }

    #[test]
    fn lowest_free_explicit_and_exhaustion() {
        let dir = tempfile::tempdir().unwrap();
        let a = allocator(dir.path(), &[8080]);
        assert_eq!(a.acquire("h1", &[0, 0]).unwrap(), vec![61000, 61001]);
        assert_eq!(a.acquire("h2", &[0, 8080]).unwrap(), vec![61002, 8080]);
        assert_eq!(a.acquire("h3", &[0]).unwrap_err(), Error::PortsExhausted);
        assert_eq!(
            a.acquire("h3", &[61001]).unwrap_err(),
            Error::PortTaken {
                port: 61001,
                holder: "h1".into()
            }
        );
        assert_eq!(
            a.acquire("h3", &[8080]).unwrap_err().to_string(),
            "host port 8080 is already mapped (to h2)"
        );
        assert_eq!(a.release("h1").unwrap(), vec![61000, 61001]);
        assert_eq!(a.acquire("h3", &[61001, 0]).unwrap(), vec![61001, 61000]);
        let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
        assert_eq!(
            text,
            r#"{"acquired_ports":{"h2":[61002,8080],"h3":[61001,61000]}}"#
        );
        assert!(a.release("nope").unwrap().is_empty());
        a.release_one("h2", 8080).unwrap();
        assert_eq!(a.ports_of("h2").unwrap(), vec![61002]);
    }

    #[test]
    fn explicit_ports_outside_the_permitted_ones_or_twice_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = allocator(dir.path(), &[8443]);
        let e = a.acquire("h", &[22]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host port 22 is outside the host ports a container may map (61000-61002 and the allow-list [8443])"
        );
        assert_eq!(
            a.acquire("h", &[8443, 0, 8443]).unwrap_err(),
            Error::PortTwice(8443)
        );
        assert!(!dir.path().join("state.json").exists(), "nothing written");
    }

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(listening_port(v4), Some(22));
        let lo = "   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1";
        assert_eq!(listening_port(lo), None);
        let est = "   2: 0102000A:0016 0202000A:C000 01 00000000:00000000 00:00000000 00000000     0        0 1";
        assert_eq!(listening_port(est), None);
        let v6 = "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0";
        assert_eq!(listening_port(v6), Some(8080));
        let v6lo = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0";
        assert_eq!(listening_port(v6lo), None);
        assert_eq!(listening_port("garbage"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_proc_net_tcp_line_gives_a_port_or_none(line in ".{0,120}") {
            let _ = listening_port(&line);
        }

        #[test]
        fn listening_lines_give_their_port(addr in 0u32..u32::MAX, port in 0u16..) {
            let line = format!("0: {addr:08X}:{port:04X} 00000000:0000 0A 0");
            let loopback = addr & 0xff == 127;
            proptest::prop_assert_eq!(listening_port(&line), (!loopback).then_some(port));
        }
    }
}
