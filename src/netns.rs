//! Network namespaces: run code inside one (on a dedicated thread, since `setns` is per thread).
//! Named namespaces made with `ip netns` (for the lab and the tests) are [`crate::lab::netns`].

use crate::os_error::OsError;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::path::Path;

/// Why code could not run inside a namespace. The errno is kept: callers decide by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The namespace file could not be opened.
    Open(OsError),
    /// `setns` refused the file.
    Enter(OsError),
    /// The code inside panicked.
    Panicked,
}

impl Error {
    /// The namespace is gone: its file does not exist (ENOENT), or is no longer a namespace
    /// (EINVAL from `setns`, e.g. an unmounted bind mount's plain file).
    pub fn is_gone(&self) -> bool {
        match self {
            Error::Open(e) => e.is_not_found(),
            Error::Enter(e) => e.is(Errno::EINVAL),
            Error::Panicked => false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Open(e) | Error::Enter(e) => write!(f, "{e}"),
            Error::Panicked => write!(f, "thread inside netns panicked"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        match e {
            Error::Open(e) | Error::Enter(e) => e.into(),
            Error::Panicked => std::io::Error::other(e.to_string()),
        }
    }
}

/// Runs `f` on a new thread that has entered the network namespace at `path`.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = File::open(path)
        .map_err(|e| Error::Open(OsError::io(format!("open netns {}", path.display()), &e)))?;
    let shown = path.display().to_string();
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::Enter(OsError::errno(format!("setns {shown}"), e)))?;
        Ok(f())
    })
    .join()
    .map_err(|_| Error::Panicked)?
}

/// [`run_in`] for code that can fail: one error type for entering and for the code inside.
pub fn try_run_in<T, E, F>(path: &Path, f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    run_in(path, f)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_or_a_plain_file_is_a_namespace_that_is_gone() {
        let e = run_in(Path::new("/nonexistent/netns"), || ()).unwrap_err();
        assert!(matches!(e, Error::Open(_)) && e.is_gone(), "{e}");
        let plain = tempfile::NamedTempFile::new().unwrap();
        let e = run_in(plain.path(), || ()).unwrap_err();
        assert!(matches!(e, Error::Enter(_)) && e.is_gone(), "{e}");
        assert_eq!(
            run_in(Path::new("/proc/self/ns/net"), || -> () {
                panic!("inside")
            }),
            Err(Error::Panicked)
        );
    }

    #[test]
    fn errors_of_the_code_inside_keep_their_type() {
        let r: Result<(), std::io::Error> = try_run_in(Path::new("/proc/self/ns/net"), || {
            Err(std::io::Error::from_raw_os_error(13))
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(13));
        let r: Result<(), std::io::Error> = try_run_in(Path::new("/nonexistent"), || Ok(()));
        assert_eq!(
            r.unwrap_err().raw_os_error(),
            Some(2),
            "entering keeps the errno"
        );
    }
}
