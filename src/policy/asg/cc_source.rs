//! Where the syncer reads the Cloud Controller's security groups (reference §3.1): the
//! timestamp `GET /internal/v4/asg_latest_update` on the CC's internal listener (mutual TLS when
//! client certificates are configured; 404 means the zero time) and the pages of
//! `GET /v3/security_groups?per_page=N` on its API with a UAA client token, following
//! `pagination.next.href` (only its path and query: the token never goes to another host).

use crate::api::security_groups::{AsgLatestUpdate, V3List};
use crate::http::client::{agent, body_string, ClientTls};
use crate::policy::auth::uaa::{ClientCredentials, UaaClientConfig};
use serde_json::Value;
use std::time::Duration;

const BODY_LIMIT: u64 = 256 * 1024 * 1024;

/// What the syncer needs from the Cloud Controller.
pub trait AsgSource: Send + Sync {
    /// `last_update` as the CC wrote it; empty for the zero time (404, or a fresh CC).
    fn latest_update(&self) -> Result<String, String>;
    /// One page: the groups (as JSON) and the path of the next page, if any.
    fn page(&self, path_and_query: &str) -> Result<(Vec<Value>, Option<String>), String>;
}

pub struct HttpAsgSource {
    api: ureq::Agent,
    internal: ureq::Agent,
    api_url: String,
    internal_url: String,
    token: ClientCredentials,
}

/// TLS and addresses of the two CC listeners.
pub struct SourceConfig {
    pub api_url: String,
    pub api_tls: ClientTls,
    pub internal_url: String,
    pub internal_tls: ClientTls,
    pub timeout: Duration,
}

/// The path and query of a link (absolute or relative).
pub fn relative(link: &str) -> String {
    match link.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map(|i| rest[i..].to_string())
            .unwrap_or_default(),
        None => link.to_string(),
    }
}

impl HttpAsgSource {
    pub fn new(config: &SourceConfig, uaa: &UaaClientConfig) -> Result<HttpAsgSource, String> {
        Ok(HttpAsgSource {
            api: agent(&config.api_tls, config.timeout)
                .map_err(|e| format!("Cloud Controller API client: {e}"))?,
            internal: agent(&config.internal_tls, config.timeout)
                .map_err(|e| format!("Cloud Controller internal client: {e}"))?,
            api_url: config.api_url.trim_end_matches('/').to_string(),
            internal_url: config.internal_url.trim_end_matches('/').to_string(),
            token: ClientCredentials::new(uaa)?,
        })
    }
}

fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let mut req = agent.get(url).header("Accept", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", format!("bearer {t}"));
    }
    let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = body_string(&mut resp, BODY_LIMIT).map_err(|e| format!("GET {url}: {e}"))?;
    Ok((status, body))
}

impl AsgSource for HttpAsgSource {
    fn latest_update(&self) -> Result<String, String> {
        let url = format!("{}/internal/v4/asg_latest_update", self.internal_url);
        match get(&self.internal, &url, None)? {
            (404, _) => Ok(String::new()),
            (200, body) => serde_json::from_str::<AsgLatestUpdate>(&body)
                .map(|t| t.last_update)
                .map_err(|e| format!("GET {url}: bad JSON: {e}")),
            (status, body) => Err(format!("GET {url}: status {status}: {}", body.trim())),
        }
    }

    fn page(&self, path_and_query: &str) -> Result<(Vec<Value>, Option<String>), String> {
        let url = format!("{}{path_and_query}", self.api_url);
        for attempt in 0..2 {
            let token = self.token.token()?;
            let (status, body) = get(&self.api, &url, Some(&token))?;
            if status == 401 && attempt == 0 {
                self.token.invalidate();
                continue;
            }
            if status != 200 {
                return Err(format!("GET {url}: status {status}: {}", body.trim()));
            }
            let page: V3List<Value> =
                serde_json::from_str(&body).map_err(|e| format!("GET {url}: bad JSON: {e}"))?;
            let next = page.pagination.next.map(|l| relative(&l.href));
            return Ok((page.resources, next));
        }
        Err(format!("GET {url}: token refused twice (401)"))
    }
}
