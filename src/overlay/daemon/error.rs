//! What can go wrong in the overlay daemon: building the VTEP, getting and keeping the lease, and
//! converging towards the other cells. Netlink failures keep their errno ([`netlink::Error`]).

use crate::netlink;
use crate::overlay::client::ClientError;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The config does not describe a usable VTEP.
    Config(String),
    /// A netlink request on the VTEP, its addresses, routes, neighbours or FDB failed.
    Netlink(netlink::Error),
    /// No interface of the cell holds the underlay IP (and none was configured).
    NoUnderlayInterface(Ipv4Addr),
    /// The VTEP was gone right after it was created.
    VtepVanished(String),
    /// The VTEP's address cannot be a lease (its prefix is out of range).
    BadVtepAddress { address: Ipv4Addr, prefix: u8 },
    /// Creating the VTEP failed (the half-made device was removed).
    CreateVtep { name: String, cause: Box<Error> },
    /// The VTEP's lease is outside the overlay network while containers use it.
    LeaseDoesNotFit { subnet: Ipv4Net, network: Ipv4Net },
    /// At start, the controller refused the lease the VTEP carries while containers use it.
    LeaseRefusedAtStart { subnet: Ipv4Net, reason: String },
    /// The controller refused a renewal: the lease is someone else's now.
    RenewRefused { subnet: String, reason: String },
    /// The lease was not renewed within the partition tolerance.
    PartitionExceeded {
        subnet: String,
        seconds: u64,
        reason: String,
    },
    /// No lease could be acquired.
    Acquire(ClientError),
    /// The controller answered a lease that does not parse.
    InvalidLease(String),
    /// The controller's lease list could not be read.
    ListLeases(ClientError),
    /// Some of a convergence's changes failed; the first failure is kept.
    Converge {
        failed: usize,
        first: netlink::Error,
    },
}

impl From<netlink::Error> for Error {
    fn from(e: netlink::Error) -> Error {
        Error::Netlink(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const RESTART: &str = "this cell must be restarted";
        match self {
            Error::Config(m) => write!(f, "{m}"),
            Error::Netlink(e) => write!(f, "{e}"),
            Error::NoUnderlayInterface(ip) => write!(f, "no interface holds the underlay IP {ip}"),
            Error::VtepVanished(name) => write!(f, "vtep {name} vanished after creation"),
            Error::BadVtepAddress { address, prefix } => {
                write!(f, "vtep address {address}/{prefix} is not a lease")
            }
            Error::CreateVtep { name, cause } => write!(f, "creating VTEP {name}: {cause}"),
            Error::LeaseDoesNotFit { subnet, network } => write!(
                f,
                "the VTEP's lease {subnet} does not fit overlay network {network} and containers exist; this cell must be drained and restarted"
            ),
            Error::LeaseRefusedAtStart { subnet, reason } => write!(
                f,
                "the controller refused our lease {subnet} ({reason}) and containers exist; {RESTART}"
            ),
            Error::RenewRefused { subnet, reason } => {
                write!(f, "renewing lease {subnet}: {reason}; {RESTART}")
            }
            Error::PartitionExceeded {
                subnet,
                seconds,
                reason,
            } => write!(
                f,
                "lease {subnet} not renewed for {seconds}s (partition tolerance): {reason}; {RESTART}"
            ),
            Error::Acquire(e) => write!(f, "acquiring a lease: {e}"),
            Error::InvalidLease(e) => write!(f, "controller answered an invalid lease: {e}"),
            Error::ListLeases(e) => write!(f, "listing leases: {e}"),
            Error::Converge { failed, first } => write!(
                f,
                "converge: {failed} of the changes failed, first: {first}"
            ),
        }
    }
}

impl std::error::Error for Error {}
