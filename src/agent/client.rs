//! The policy server's internal API as the agent uses it, over mutual TLS.

use super::Error;
use crate::api::policy::{PoliciesResponse, Policy};
use crate::http::client::{agent, body_string, ClientTls};
use std::time::Duration;

/// Where policies come from. The real one is [`PolicyClient`]; tests of the loop script one.
pub trait PolicySource: Send + Sync {
    /// `policies_last_updated`: Unix nanoseconds of the last policy change.
    fn last_updated(&self) -> Result<i64, Error>;
    /// Policies whose source or destination is one of `app_ids` (never empty).
    fn policies(&self, app_ids: &[String]) -> Result<Vec<Policy>, Error>;
}

pub struct PolicyClient {
    agent: ureq::Agent,
    base: String,
}

const BODY_LIMIT: u64 = 256 << 20;

impl PolicyClient {
    pub fn new(base_url: &str, tls: &ClientTls, timeout: Duration) -> Result<PolicyClient, String> {
        Ok(PolicyClient {
            agent: agent(tls, timeout)?,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    fn get(&self, path_and_query: &str) -> Result<String, Error> {
        let url = format!("{}{path_and_query}", self.base);
        let request = |message: String| Error::Request {
            url: url.clone(),
            message,
        };
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| request(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = body_string(&mut resp, BODY_LIMIT).map_err(request)?;
        if status != 200 {
            let body: String = body.chars().take(300).collect();
            return Err(Error::Status { url, status, body });
        }
        Ok(body)
    }
}

/// Percent-encodes everything but unreserved characters (the server splits `id` on literal commas).
fn encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl PolicySource for PolicyClient {
    fn last_updated(&self) -> Result<i64, Error> {
        let body = self.get("/networking/v1/internal/policies_last_updated")?;
        body.trim().parse().map_err(|_| Error::Decode {
            what: "policies_last_updated",
            message: format!("not an integer: {:?}", body.trim()),
        })
    }

    fn policies(&self, app_ids: &[String]) -> Result<Vec<Policy>, Error> {
        let ids: Vec<String> = app_ids.iter().map(|i| encode(i)).collect();
        let body = self.get(&format!(
            "/networking/v1/internal/policies?id={}",
            ids.join(",")
        ))?;
        let resp: PoliciesResponse = serde_json::from_str(&body).map_err(|e| Error::Decode {
            what: "internal policies",
            message: format!("decoding response: {e}"),
        })?;
        Ok(resp.policies)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_percent_encoded_but_guids_stay_readable() {
        assert_eq!(super::encode("4a2d-b5_c.~"), "4a2d-b5_c.~");
        assert_eq!(super::encode("a,b&c d"), "a%2Cb%26c%20d");
    }
}
