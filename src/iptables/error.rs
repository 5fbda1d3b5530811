//! The iptables layer's failures: the lock, running the tools, a refused batch, a listing that
//! cannot be read, and values that are not valid in a rule.

use crate::os_error::OsError;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The shared lock file could not be created, opened or locked.
    Lock(OsError),
    /// `iptables-restore` or `iptables-save` could not be started or talked to.
    Exec(OsError),
    /// `iptables-restore` refused the batch: the table it stopped in (committed tables before it
    /// stay), its message, and the line it named.
    Restore {
        table: Option<String>,
        stderr: String,
        line: Option<String>,
    },
    /// `iptables-save` failed.
    Save { command: String, stderr: String },
    /// `iptables-save` printed something this layer cannot read.
    Parse(String),
    /// A value that cannot go into a rule.
    Invalid(Invalid),
    /// nf_tables refused or could not be asked over nfnetlink (`netlink_removal`).
    Netlink(OsError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Lock(e) | Error::Exec(e) | Error::Netlink(e) => write!(f, "{e}"),
            Error::Restore {
                table: Some(table),
                stderr,
                line,
            } => write!(
                f,
                "iptables-restore ({table}): {stderr} [line: {}]",
                line.as_deref().unwrap_or("?")
            ),
            Error::Restore { stderr, .. } => write!(f, "iptables-restore: {stderr}"),
            Error::Save { command, stderr } => write!(f, "{command} failed: {stderr}"),
            Error::Parse(m) => write!(f, "{m}"),
            Error::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Error {
        Error::Invalid(e)
    }
}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

/// A value that is not valid in a rule (a chain name, a port range, a comment, ...): what is
/// wrong, as a message for whoever supplied the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.0
    }
}
