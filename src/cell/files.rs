//! Small state files shared between processes: an exclusive `flock` on a lock file beside them,
//! and replacement through a temporary file and a rename, so a reader never sees a torn file.

use crate::os_error::OsError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
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

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), OsError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)
        .map_err(|e| OsError::io(format!("writing {}", tmp.display()), &e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        OsError::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            &e,
        )
    })
}

/// Reads a file; `None` when it does not exist or holds only white space.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, OsError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(|b| b.is_ascii_whitespace()) => Ok(None),
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OsError::io(format!("reading {}", path.display()), &e)),
    }
}

/// `path` with `suffix` appended to its file name (`store.json` -> `store.json_lock`).
pub fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
