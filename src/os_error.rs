//! A failed system call or file operation: what was attempted and the errno, kept as a number so
//! callers decide by kind ([`OsError::is_not_found`]), never by the text. The shape follows
//! [`crate::netlink::Error`].

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsError {
    /// What was attempted, with its object (`"opening lock file /x"`).
    pub context: String,
    pub errno: Option<i32>,
    /// The system's text for the error.
    pub message: String,
}

impl OsError {
    pub fn io(context: impl Into<String>, e: &std::io::Error) -> OsError {
        OsError {
            context: context.into(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    pub fn errno(context: impl Into<String>, e: nix::errno::Errno) -> OsError {
        OsError {
            context: context.into(),
            errno: Some(e as i32),
            message: e.to_string(),
        }
    }

    /// ENOENT: the file (or namespace) is not there.
    pub fn is_not_found(&self) -> bool {
        self.errno == Some(nix::errno::Errno::ENOENT as i32)
    }

    pub fn is(&self, errno: nix::errno::Errno) -> bool {
        self.errno == Some(errno as i32)
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.message)
    }
}

impl std::error::Error for OsError {}

impl From<OsError> for std::io::Error {
    fn from(e: OsError) -> std::io::Error {
        match e.errno {
            Some(n) => std::io::Error::from_raw_os_error(n),
            None => std::io::Error::other(e.to_string()),
        }
    }
}

impl From<OsError> for String {
    fn from(e: OsError) -> String {
        e.to_string()
    }
}
