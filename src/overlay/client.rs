//! The daemon's client of the lease controller (mutual TLS).

use super::Lease;
use crate::http::client::{self, ClientTls};
use serde::Deserialize;
use std::time::Duration;

/// A controller call failure. `NonRetriable` is the controller's 409: the lease is not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    NonRetriable(String),
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NonRetriable(m) => write!(f, "non-retriable: {m}"),
            ClientError::Other(m) => write!(f, "{m}"),
        }
    }
}

pub struct ControllerClient {
    agent: ureq::Agent,
    base: String,
}

#[derive(Deserialize)]
struct LeaseList {
    leases: Vec<Lease>,
}

impl ControllerClient {
    pub fn new(
        base_url: &str,
        tls: &ClientTls,
        timeout: Duration,
    ) -> Result<ControllerClient, String> {
        Ok(ControllerClient {
            agent: client::agent(tls, timeout)?,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let context = format!("{method} {url}");
        let result = match body {
            Some(b) => self
                .agent
                .put(&url)
                .header("content-type", "application/json")
                .send(b.to_string().as_bytes()),
            None => self.agent.get(&url).call(),
        };
        let mut resp = result.map_err(|e| ClientError::Other(format!("{context}: {e}")))?;
        let status = resp.status().as_u16();
        let text = client::body_string(&mut resp, 16 * 1024 * 1024)
            .map_err(|e| ClientError::Other(format!("{context}: {e}")))?;
        match status {
            200 => Ok(text),
            409 => Err(ClientError::NonRetriable(format!("{context}: 409 {text}"))),
            s => Err(ClientError::Other(format!("{context}: {s} {text}"))),
        }
    }

    pub fn acquire(&self, underlay_ip: &str, single: bool) -> Result<Lease, ClientError> {
        let text = self.call(
            "PUT",
            "/leases/acquire",
            Some(serde_json::json!({"underlay_ip": underlay_ip, "single_overlay_ip": single})),
        )?;
        serde_json::from_str(&text).map_err(|e| ClientError::Other(format!("acquire answer: {e}")))
    }

    pub fn renew(&self, lease: &Lease) -> Result<(), ClientError> {
        let body = serde_json::to_value(lease).map_err(|e| ClientError::Other(e.to_string()))?;
        self.call("PUT", "/leases/renew", Some(body)).map(|_| ())
    }

    pub fn release(&self, underlay_ip: &str) -> Result<(), ClientError> {
        self.call(
            "PUT",
            "/leases/release",
            Some(serde_json::json!({"underlay_ip": underlay_ip})),
        )
        .map(|_| ())
    }

    pub fn leases(&self) -> Result<Vec<Lease>, ClientError> {
        let text = self.call("GET", "/leases", None)?;
        serde_json::from_str::<LeaseList>(&text)
            .map(|l| l.leases)
            .map_err(|e| ClientError::Other(format!("lease list: {e}")))
    }
}
