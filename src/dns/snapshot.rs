//! The last table a resolver served, kept in a file so that a restarted resolver answers from it at
//! once. Format: one header line `netman-dns-snapshot 1 <length> <sha256 hex>` and then `length`
//! bytes of JSON ([`InternalRoutes`]). A file that is cut short, altered or not of this format is
//! reported as damaged, never read as an empty table. Writes go to a temporary file that is synced
//! and renamed over the old one, so a crash leaves either the old or the new snapshot.

use super::table::{InternalRoutes, Table};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

const MAGIC: &str = "netman-dns-snapshot";
const VERSION: u32 = 1;
/// Far above 10,000 routes with 50,000 instances (~5 MB).
const MAX_BODY: usize = 256 << 20;

#[derive(Debug)]
pub enum SnapshotError {
    Io(String),
    Damaged(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io(m) => write!(f, "{m}"),
            SnapshotError::Damaged(m) => write!(f, "damaged snapshot: {m}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

pub fn save(path: &Path, routes: &InternalRoutes) -> Result<(), SnapshotError> {
    let io = |what: &str, e: std::io::Error| {
        SnapshotError::Io(format!("{what} {}: {e}", path.display()))
    };
    let body = serde_json::to_vec(routes).expect("routes serialise");
    let header = format!("{MAGIC} {VERSION} {} {}\n", body.len(), sha256_hex(&body));
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io("create", e))?;
    f.write_all(header.as_bytes())
        .and_then(|_| f.write_all(&body))
        .and_then(|_| f.sync_all())
        .map_err(|e| io("write", e))?;
    fs::rename(&tmp, path).map_err(|e| io("rename onto", e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync directory of", e))?;
    }
    Ok(())
}

/// Saves the table in force.
pub fn save_table(path: &Path, table: &Table) -> Result<(), SnapshotError> {
    save(path, &table.to_routes())
}

/// The table a starting resolver serves at once; `Ok(None)` when there is no snapshot yet. A
/// damaged snapshot, or one that no longer validates, is an error for the caller to report (and
/// then to serve [`Table::not_ready`] until the registry answers); it is never taken for an empty
/// table.
pub fn restore(path: &Path) -> Result<Option<Table>, SnapshotError> {
    let Some(routes) = load(path)? else {
        return Ok(None);
    };
    Table::new(&routes)
        .map(Some)
        .map_err(|e| SnapshotError::Damaged(format!("{}: {e}", path.display())))
}

/// `Ok(None)`: no snapshot yet (first start).
pub fn load(path: &Path) -> Result<Option<InternalRoutes>, SnapshotError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::Io(format!("read {}: {e}", path.display()))),
    };
    parse(&bytes)
        .map(Some)
        .map_err(|m| SnapshotError::Damaged(format!("{}: {m}", path.display())))
}

fn parse(bytes: &[u8]) -> Result<InternalRoutes, String> {
    let newline = bytes
        .iter()
        .take(256)
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, length, digest] = fields[..] else {
        return Err(format!(
            "header {header:?} is not '{MAGIC} <version> <length> <sha256>'"
        ));
    };
    if magic != MAGIC {
        return Err(format!("not a snapshot (starts with {magic:?})"));
    }
    if version != VERSION.to_string() {
        return Err(format!(
            "format version {version:?}, this resolver reads {VERSION}"
        ));
    }
    let length: usize = length
        .parse()
        .ok()
        .filter(|&l| l <= MAX_BODY)
        .ok_or_else(|| format!("bad length {length:?}"))?;
    let body = &bytes[newline + 1..];
    if body.len() != length {
        return Err(format!(
            "{} bytes of content, header says {length}",
            body.len()
        ));
    }
    if sha256_hex(body) != digest {
        return Err("content does not match its checksum".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("content: {e}"))
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::table::{Instance, InternalRoute};

    fn routes() -> InternalRoutes {
        InternalRoutes {
            domains: vec!["apps.internal".into()],
            routes: vec![InternalRoute {
                name: "backend.apps.internal".into(),
                instances: vec![Instance {
                    app_guid: "g".into(),
                    index: 0,
                    ip: "10.255.0.2".parse().unwrap(),
                }],
            }],
        }
    }

    #[test]
    fn round_trip_and_absent_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table");
        assert!(load(&path).unwrap().is_none());
        save(&path, &routes()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(routes()));
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn every_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table");
        save(&path, &routes()).unwrap();
        let good = fs::read(&path).unwrap();
        let header_end = good.iter().position(|&b| b == b'\n').unwrap();
        let ip_digit = good.iter().rposition(|&b| b == b'2').unwrap();
        let mut flipped = good.clone();
        flipped[ip_digit] = b'3';
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty file", vec![]),
            ("cut short", good[..good.len() - 5].to_vec()),
            ("header only", good[..=header_end].to_vec()),
            ("one digit changed", flipped),
            ("plain JSON", serde_json::to_vec(&routes()).unwrap()),
            ("garbage", vec![0xff; 64]),
        ];
        for (what, bytes) in cases {
            fs::write(&path, bytes).unwrap();
            match load(&path) {
                Err(SnapshotError::Damaged(_)) => {}
                other => panic!("{what}: expected Damaged, got {other:?}"),
            }
        }
    }
}
