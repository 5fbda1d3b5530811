//! The agent's failures. They reach people as log lines and as the force-poll, health and
//! c2c-logging endpoints' answers, which print them as text.

use super::nft;
use crate::cell::StoreError;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request to the policy server got no answer (connect, TLS, timeout, reading).
    Request { url: String, message: String },
    /// The policy server answered with another status than 200.
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The policy server's answer is not what was asked for (`what`: which answer).
    Decode { what: &'static str, message: String },
    /// This cycle had no answer from the policy server.
    PolicyServerUnreachable,
    /// The container metadata store cannot be read.
    Store(StoreError),
    /// The dataplane refused a change (the kernel's table is as it was).
    Dataplane(nft::Error),
    /// Nothing is enforced yet (health).
    NotEnforced,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Request { url, message } => write!(f, "GET {url}: {message}"),
            Error::Status { url, status, body } => write!(f, "GET {url}: status {status}: {body}"),
            Error::Decode { what, message } => write!(f, "{what}: {message}"),
            Error::PolicyServerUnreachable => write!(f, "policy server unreachable"),
            Error::Store(e) => write!(f, "{e}"),
            Error::Dataplane(e) => write!(f, "{e}"),
            Error::NotEnforced => write!(f, "no policies enforced yet"),
        }
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}

impl From<nft::Error> for Error {
    fn from(e: nft::Error) -> Error {
        Error::Dataplane(e)
    }
}
