//! Bind mounts of container network namespaces under `bind_mount_dir/<handle>`, so the netns
//! outlives the container's process.

use super::Error;
use crate::os_error::OsError;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub fn path(dir: &Path, handle: &str) -> PathBuf {
    dir.join(handle)
}

/// Whether `target` is a live mount (its device differs from its directory's).
pub fn is_mounted(target: &Path) -> bool {
    let (Ok(m), Some(parent)) = (std::fs::metadata(target), target.parent()) else {
        return false;
    };
    match std::fs::metadata(parent) {
        Ok(p) => m.dev() != p.dev(),
        Err(_) => false,
    }
}

/// Bind-mounts `source` (e.g. `/proc/PID/ns/net`) at `target`.
pub fn create(source: &Path, target: &Path) -> Result<(), Error> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| OsError::io(format!("creating {}", dir.display()), &e))?;
    }
    if is_mounted(target) {
        return Err(Error::MountExists(target.to_path_buf()));
    }
    std::fs::File::create(target).map_err(|e| {
        OsError::io(
            format!("creating bind mount target {}", target.display()),
            &e,
        )
    })?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = std::fs::remove_file(target);
        let what = format!("bind-mounting {} at {}", source.display(), target.display());
        OsError::errno(what, e).into()
    })
}

/// Unmounts (lazily) and removes the file; absent = nothing to do.
pub fn remove(target: &Path) -> Result<(), Error> {
    if is_mounted(target) {
        umount2(target, MntFlags::MNT_DETACH)
            .map_err(|e| OsError::errno(format!("unmounting {}", target.display()), e))?;
    }
    match std::fs::remove_file(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OsError::io(format!("removing {}", target.display()), &e).into()),
    }
}
