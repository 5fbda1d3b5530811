//! The networker's failures. garden reads one line of stderr: `main` prints the [`Error`]'s
//! text after the log prefix; the kinds are for the code that decides what to do.

use crate::cell::StoreError;
use crate::os_error::OsError;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// garden's flags or stdin (a handle, a NetOut rule, an address) are not acceptable;
    /// nothing was changed.
    Input(String),
    AlreadyUp(String),
    NotUp(String),
    /// `container_ip` given by garden is not the container's.
    WrongIp {
        handle: String,
        given: Ipv4Addr,
        actual: Ipv4Addr,
    },
    /// The network namespace to attach to does not exist.
    NoNetns(PathBuf),
    /// The network namespace to attach to is the host's own (`which`).
    HostNetns {
        path: PathBuf,
        which: &'static str,
    },
    /// The CNI config directory holds no network configuration.
    NoCniConfig(PathBuf),
    /// The CNI chain's result has no IPv4 address.
    NoIpv4,
    /// An explicit NetIn host port that is not one a container may map.
    PortNotAllowed {
        port: u16,
        range: (u16, u16),
        allow: Vec<u16>,
    },
    /// An explicit NetIn host port that is mapped to a container already.
    PortTaken {
        port: u16,
        holder: String,
    },
    /// The same explicit host port twice in one request.
    PortTwice(u16),
    /// An explicit host port a service of the cell listens on.
    PortListened(u16),
    PortsExhausted,
    /// The port allocator's state file is not its JSON.
    CorruptPortState {
        path: PathBuf,
        message: String,
    },
    /// A bind mount of the netns is already there.
    MountExists(PathBuf),
    Os(OsError),
    Store(StoreError),
    Iptables(crate::iptables::Error),
    Cni(super::cni_exec::Error),
    /// The policy agent answered the force poll with an error status, or could not be asked.
    ForcePoll {
        url: String,
        status: Option<u16>,
        message: String,
    },
    /// The policy agent could not install (or clean up) the container's ASGs.
    AsgSync {
        url: String,
        status: Option<u16>,
        message: String,
    },
    /// A worker thread panicked (`what` it was doing).
    Panicked(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Input(m) => write!(f, "{m}"),
            Error::AlreadyUp(h) => write!(f, "container {h} is already up"),
            Error::NotUp(h) => write!(f, "container {h} is not up"),
            Error::WrongIp {
                handle,
                given,
                actual,
            } => write!(
                f,
                "container_ip {given} is not the IP of {handle} ({actual})"
            ),
            Error::NoNetns(p) => {
                write!(f, "network namespace {} does not exist", p.display())
            }
            Error::HostNetns { path, which } => write!(
                f,
                "network namespace {} is the host's network namespace ({which}), not a container's",
                path.display()
            ),
            Error::NoCniConfig(dir) => write!(
                f,
                "no CNI config (*.conflist or *.conf) in {}",
                dir.display()
            ),
            Error::NoIpv4 => write!(f, "expected an IPv4 address in the CNI result"),
            Error::PortNotAllowed { port, range, allow } => write!(
                f,
                "host port {port} is outside the host ports a container may map ({}-{} and the allow-list {allow:?})",
                range.0, range.1
            ),
            Error::PortTaken { port, holder } => {
                write!(f, "host port {port} is already mapped (to {holder})")
            }
            Error::PortTwice(port) => write!(f, "host port {port} is asked for twice"),
            Error::PortListened(port) => {
                write!(f, "a service of the cell listens on host port {port}")
            }
            Error::PortsExhausted => write!(f, "port pool exhausted"),
            Error::CorruptPortState { path, message } => {
                write!(f, "corrupt port state file {}: {message}", path.display())
            }
            Error::MountExists(p) => {
                write!(f, "netns bind mount {} already exists", p.display())
            }
            Error::Os(e) => write!(f, "{e}"),
            Error::Store(e) => write!(f, "{e}"),
            Error::Iptables(e) => write!(f, "{e}"),
            Error::Cni(e) => write!(f, "{e}"),
            Error::ForcePoll {
                url,
                status: Some(status),
                message,
            } => write!(
                f,
                "policy agent force poll {url} returned {status}: {message}"
            ),
            Error::ForcePoll { url, message, .. } => {
                write!(f, "policy agent force poll {url}: {message}")
            }
            Error::AsgSync {
                url,
                status: Some(status),
                message,
            } => write!(f, "asg sync returned {status} with message: {message} ({url})"),
            Error::AsgSync { url, message, .. } => write!(f, "asg sync {url}: {message}"),
            Error::Panicked(what) => write!(f, "{what}: thread panicked"),
        }
    }
}

impl std::error::Error for Error {}

impl From<OsError> for Error {
    fn from(e: OsError) -> Error {
        Error::Os(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}

impl From<crate::iptables::Error> for Error {
    fn from(e: crate::iptables::Error) -> Error {
        Error::Iptables(e)
    }
}

impl From<super::cni_exec::Error> for Error {
    fn from(e: super::cni_exec::Error) -> Error {
        Error::Cni(e)
    }
}
