//! Bind mounts of container network namespaces under `bind_mount_dir/<handle>`, so the netns
//! outlives the container's process.

use super::Error;
use crate::netns;
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

/// The namespaces no container may be attached to: the networker's own and that of PID 1 (the
/// machine's), whichever can be read.
fn host_namespaces() -> Vec<(&'static str, netns::Identity)> {
    [
        ("the networker's own", "/proc/self/ns/net"),
        ("the machine's (PID 1)", "/proc/1/ns/net"),
    ]
    .into_iter()
    .filter_map(|(which, p)| Some((which, netns::identity(Path::new(p)).ok()?)))
    .collect()
}

/// Refuses a network namespace that is the host's (compared by identity, not by path): a
/// process handed over before it entered its container's namespace still has the host's, and
/// CNI would then configure, and on rollback delete, the host's interfaces.
pub fn refuse_host_netns(path: &Path) -> Result<(), Error> {
    let given = netns::identity(path)?;
    match host_namespaces().into_iter().find(|(_, id)| *id == given) {
        Some((which, _)) => Err(Error::HostNetns {
            path: path.to_path_buf(),
            which,
        }),
        None => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_namespaces_are_refused_by_identity() {
        // PID 1's namespace cannot be read in every sandbox; where it can, it is refused too.
        let pid1 = netns::identity(Path::new("/proc/1/ns/net")).is_ok();
        let pid1 = pid1.then_some("/proc/1/ns/net");
        for own in ["/proc/self/ns/net", "/proc/thread-self/ns/net"]
            .into_iter()
            .chain(pid1)
        {
            let e = refuse_host_netns(Path::new(own)).unwrap_err();
            assert!(e.to_string().contains("host's network namespace"), "{e}");
        }
        let e = refuse_host_netns(Path::new("/proc/self/ns/mnt")).err();
        assert!(e.is_none(), "not a network namespace of the host: {e:?}");
        assert!(refuse_host_netns(Path::new("/nonexistent/ns")).is_err());
    }
}
