//! The overlay daemon's local info endpoint (`GET /` on loopback -> [`NetworkInfo`]: the cell's
//! subnet and MTU) as its clients use it: the CNI plugin on ADD and STATUS, and the watchdog.

use super::daemon::NetworkInfo;
use std::fmt;
use std::time::Duration;

/// How long one query may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the daemon gave no network info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoError {
    /// No answer (not running, refused, timed out).
    Unreachable { url: String, message: String },
    /// An answer other than 200.
    Status { url: String, status: u16 },
    /// An answer that is not the network info.
    Malformed { url: String, message: String },
}

impl fmt::Display for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfoError::Unreachable { url, message } => {
                write!(f, "asking the overlay daemon at {url}: {message}")
            }
            InfoError::Status { url, status } => {
                write!(f, "overlay daemon at {url} answered {status}")
            }
            InfoError::Malformed { url, message } => {
                write!(f, "overlay daemon answer from {url}: {message}")
            }
        }
    }
}

impl std::error::Error for InfoError {}

impl From<InfoError> for String {
    fn from(e: InfoError) -> String {
        e.to_string()
    }
}

/// `GET url` with `agent`, decoded.
pub fn fetch(agent: &ureq::Agent, url: &str) -> Result<NetworkInfo, InfoError> {
    let mut resp = agent.get(url).call().map_err(|e| InfoError::Unreachable {
        url: url.into(),
        message: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(InfoError::Status {
            url: url.into(),
            status,
        });
    }
    let malformed = |message: String| InfoError::Malformed {
        url: url.into(),
        message,
    };
    let body = crate::http::client::body_string(&mut resp, 1 << 16).map_err(malformed)?;
    serde_json::from_str(&body).map_err(|e| malformed(e.to_string()))
}

/// The network info from the daemon on `127.0.0.1:port`.
pub fn network_info(port: u16) -> Result<NetworkInfo, InfoError> {
    let url = format!("http://127.0.0.1:{port}/");
    let agent = crate::http::client::agent(&Default::default(), TIMEOUT).map_err(|message| {
        InfoError::Unreachable {
            url: url.clone(),
            message,
        }
    })?;
    fetch(&agent, &url)
}
