//! What can go wrong in the lease API, each kind with the HTTP status it answers with.

use crate::overlay::store::StoreError;

/// A lease API failure: its kind, and the HTTP status the API answers with (`kind.status()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Every subnet of the pool is leased and none has expired.
    NoLeaseAvailable,
    /// Other controllers kept winning the race for the free subnets.
    TooManyConflicts,
    /// The acquire request's underlay IP is not IPv4.
    InvalidUnderlayIp(String),
    /// The lease to renew does not parse (bad IP, subnet or MAC).
    InvalidLease(String),
    /// The underlay IP holds another subnet than the one it renews.
    LeaseMismatch {
        underlay_ip: String,
        held: String,
    },
    /// Renewing a lease the store does not hold collided with another lease.
    LeaseConflict(String),
    /// A stored lease's subnet does not parse: damaged state, reported rather than skipped.
    DamagedStoredLease(String),
    /// The lease store failed.
    Store(StoreError),
    /// The request body is not the JSON the route takes.
    BadRequest(String),
    MethodNotAllowed,
    NotFound,
}

impl ErrorKind {
    pub fn status(&self) -> u16 {
        match self {
            ErrorKind::BadRequest(_) => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::NoLeaseAvailable
            | ErrorKind::InvalidLease(_)
            | ErrorKind::LeaseMismatch { .. }
            | ErrorKind::LeaseConflict(_) => 409,
            ErrorKind::TooManyConflicts
            | ErrorKind::InvalidUnderlayIp(_)
            | ErrorKind::DamagedStoredLease(_)
            | ErrorKind::Store(_) => 500,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error {
            status: kind.status(),
            kind,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        ErrorKind::Store(e).into()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ErrorKind::NoLeaseAvailable => write!(f, "no lease available"),
            ErrorKind::TooManyConflicts => {
                write!(f, "could not acquire a lease: too many conflicts")
            }
            ErrorKind::InvalidUnderlayIp(ip) => write!(f, "underlay_ip {ip:?} is not IPv4"),
            ErrorKind::InvalidLease(e) => write!(f, "invalid lease: {e}"),
            ErrorKind::LeaseMismatch { underlay_ip, held } => {
                write!(f, "lease mismatch: {underlay_ip} holds {held}")
            }
            ErrorKind::LeaseConflict(m) => write!(f, "lease conflict: {m}"),
            ErrorKind::DamagedStoredLease(subnet) => {
                write!(f, "stored lease has an invalid subnet {subnet:?}")
            }
            ErrorKind::Store(e) => write!(f, "database: {e}"),
            ErrorKind::BadRequest(e) => write!(f, "invalid request body: {e}"),
            ErrorKind::MethodNotAllowed => write!(f, "method not allowed"),
            ErrorKind::NotFound => write!(f, "not found"),
        }
    }
}

impl std::error::Error for Error {}
