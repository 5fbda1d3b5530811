//! Small state files shared between processes: an exclusive `flock` on a lock file beside them,
//! and replacement through a temporary file and a rename, so a reader never sees a torn file.

use crate::os_error::OsError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Takes an exclusive flock on `path` (created if needed, with its directory); held until the
/// returned guard drops.
pub fn lock_file(path: &Path) -> Result<Flock<File>, OsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| OsError::io(format!("creating {}", dir.display()), &e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| OsError::io(format!("opening lock file {}", path.display()), &e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| OsError::errno(format!("locking {}", path.display()), e))
}

/// Writes `data` to `path` through a temporary file and a rename. The temporary file is
/// fsynced before the rename and the directory after it, so that after a power cut `path` holds
/// either the old or the new content, never a torn or empty file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), OsError> {
    write_atomic_all(&[(path, data)])
}

/// [`write_atomic`] for several files of one directory, renamed in the order given: every
/// temporary file is written and fsynced before the first rename (a failure until then changes
/// none of the files), and the directory is fsynced once after the last rename. So a reader
/// sees the files replaced in order, and after a power cut each holds its old or its new
/// content (n + 1 fsyncs instead of 2n).
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> Result<(), OsError> {
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let remove_all = |temps: &[PathBuf]| {
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
    };
    for (path, data) in files {
        remove_stale_temps(path);
        let tmp = suffixed(path, &format!("{TEMP_MARK}{}", std::process::id()));
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(data)?;
                f.sync_all()
            })
            .map_err(|e| OsError::io(format!("writing {}", tmp.display()), &e));
        temps.push(tmp);
        if let Err(e) = written {
            remove_all(&temps);
            return Err(e);
        }
    }
    for (i, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            remove_all(&temps[i..]);
            return Err(OsError::io(
                format!("renaming {} to {}", tmp.display(), path.display()),
                &e,
            ));
        }
    }
    let mut dirs: Vec<&Path> = files.iter().map(|(p, _)| dir_of(p)).collect();
    dirs.dedup();
    dirs.into_iter().try_for_each(sync_dir)
}

/// What names the temporary files of [`write_atomic`]: `<file name>.tmp<pid of the writer>`.
const TEMP_MARK: &str = ".tmp";

/// Removes the temporary files that writers of `path` killed midway left behind (those of
/// processes that no longer run).
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}{TEMP_MARK}", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let dead = pid
            .parse::<u32>()
            .is_ok_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists());
        if dead {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory (so a rename in it is durable).
fn sync_dir(dir: &Path) -> Result<(), OsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| OsError::io(format!("syncing directory {}", dir.display()), &e))
}

/// Reads a file; `None` only when it does not exist. An empty file is returned as it is: a
/// missing state file is a new one, an empty one is damaged (every writer replaces the file
/// atomically, so a healthy one is never empty) and the caller reports it.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, OsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OsError::io(format!("reading {}", path.display()), &e)),
    }
}

/// The decoding error of a state file that holds nothing (for the damage reports of callers).
pub fn empty_file_error(bytes: &[u8]) -> Option<&'static str> {
    bytes
        .iter()
        .all(|b| b.is_ascii_whitespace())
        .then_some("the file is empty (a missing file is a new one; an empty one is damaged)")
}

/// `path` with `suffix` appended to its file name (`store.json` -> `store.json_lock`).
pub fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_dead_writers_go_those_of_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let mut live = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        dead.wait().unwrap();
        let temp = |pid: u32| dir.path().join(format!("store.json.tmp{pid}"));
        for pid in [live.id(), dead.id()] {
            std::fs::write(temp(pid), "x").unwrap();
        }
        std::fs::write(dir.path().join("store.json_version.tmp1"), "x").unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert!(temp(live.id()).exists());
        assert!(!temp(dead.id()).exists());
        assert!(
            dir.path().join("store.json_version.tmp1").exists(),
            "not store.json's"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        let _ = live.kill();
        let _ = live.wait();
    }
}
