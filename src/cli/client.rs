//! The policy server's external API (v1) as the CLI calls it, with errors that say what to do.

use super::target::Target;
use crate::api::policy::{
    ErrorBody, PoliciesRequest, PoliciesResponse, Policy, TagsResponse, WhoAmI,
};
use crate::api::sd::{InternalRoute, RoutesRequest, RoutesResponse};
use crate::http::client::{agent, body_string};
use serde::de::DeserializeOwned;
use std::time::Duration;

const BODY_LIMIT: u64 = 64 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No HTTP answer (connection refused, DNS, TLS, timeout).
    Transport { api: String, detail: String },
    /// An HTTP answer other than 200; `message` is the `error` of the body, or the body.
    Status { status: u16, message: String },
    /// 200 with a body that is not what the API documents.
    BadResponse(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Transport { api, detail } => {
                write!(f, "failed to make request to policy server: {detail}")?;
                let d = detail.to_ascii_lowercase();
                if d.contains("certificate") || d.contains("tls") || d.contains("unknownissuer") {
                    write!(f, "\nTIP: Use '--skip-ssl-validation' to continue with an insecure API endpoint, or '--ca-cert FILE' to trust its CA.")
                } else {
                    write!(f, "\nTIP: Check the API endpoint ({api}) and that the policy server is running.")
                }
            }
            ApiError::Status { status, message } => match status {
                401 => write!(f, "the policy server did not accept the token ({status}: {message})\nTIP: Log in again with 'cf login', or pass a valid token with '--token'."),
                403 if message.contains("cannot be found or accessed") => write!(f, "{message} ({status})\nTIP: You must be a space developer in the spaces of both apps, and the apps must exist."),
                403 if message.contains("quota") => write!(f, "{message} ({status})\nTIP: Remove policies of the source app first, or ask an admin."),
                403 => write!(f, "not authorized ({status}: {message})\nTIP: This needs a token with the network.write or network.admin scope (network.admin for tags and cleanup)."),
                404 => write!(f, "not found ({status}: {message})\nTIP: Check that the API endpoint is a netman policy server (or a CF API that routes /networking)."),
                400 => write!(f, "{message}"),
                s if *s >= 500 => write!(f, "policy server error ({status}: {message})\nTIP: Try again later; if it persists, check the policy server's logs."),
                _ => write!(f, "unexpected answer ({status}: {message})"),
            },
            ApiError::BadResponse(detail) => write!(f, "unexpected response from the policy server: {detail}"),
        }
    }
}

pub struct PolicyClient {
    agent: ureq::Agent,
    api: String,
    authorization: String,
}

impl PolicyClient {
    pub fn new(target: &Target) -> Result<PolicyClient, String> {
        Ok(PolicyClient {
            agent: agent(&target.tls, TIMEOUT)?,
            api: target.api.clone(),
            authorization: format!("Bearer {}", target.token),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/networking/v1/external{path}", self.api)
    }

    fn call<T: DeserializeOwned>(&self, path: &str, body: Option<String>) -> Result<T, ApiError> {
        let url = self.url(path);
        let transport = |e: String| ApiError::Transport {
            api: self.api.clone(),
            detail: e,
        };
        super::trace::request(
            if body.is_some() { "POST" } else { "GET" },
            &url,
            body.as_deref(),
        );
        let result = match body {
            None => self
                .agent
                .get(&url)
                .header("Authorization", &self.authorization)
                .call(),
            Some(body) => self
                .agent
                .post(&url)
                .header("Authorization", &self.authorization)
                .header("Content-Type", "application/json")
                .send(body),
        };
        let mut resp = result.map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = body_string(&mut resp, BODY_LIMIT).map_err(transport)?;
        super::trace::response(status, &text);
        if status != 200 {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| {
                    let t = text.trim();
                    if t.is_empty() {
                        crate::http::reason(status).to_string()
                    } else {
                        t.chars().take(300).collect()
                    }
                });
            return Err(ApiError::Status { status, message });
        }
        serde_json::from_str(&text).map_err(|e| {
            ApiError::BadResponse(format!(
                "{e}: {}",
                text.chars().take(200).collect::<String>()
            ))
        })
    }

    /// `GET policies` with optional `id` / `source_id` filters.
    pub fn list(&self, query: &[(&str, &str)]) -> Result<PoliciesResponse, ApiError> {
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    crate::policy::auth::form_encode(v).replace("%2C", ",")
                )
            })
            .collect();
        let path = if qs.is_empty() {
            "/policies".to_string()
        } else {
            format!("/policies?{}", qs.join("&"))
        };
        self.call(&path, None)
    }

    pub fn create(&self, policies: &[Policy]) -> Result<(), ApiError> {
        self.write("/policies", policies)
    }

    pub fn delete(&self, policies: &[Policy]) -> Result<(), ApiError> {
        self.write("/policies/delete", policies)
    }

    /// POSTs in chunks of 100, as the original client library did.
    fn write(&self, path: &str, policies: &[Policy]) -> Result<(), ApiError> {
        for chunk in policies.chunks(100) {
            let body = serde_json::to_string(&PoliciesRequest {
                policies: chunk.to_vec(),
            })
            .map_err(|e| ApiError::BadResponse(e.to_string()))?;
            let _: serde_json::Value = self.call(path, Some(body))?;
        }
        Ok(())
    }

    pub fn tags(&self) -> Result<TagsResponse, ApiError> {
        self.call("/tags", None)
    }

    pub fn whoami(&self) -> Result<WhoAmI, ApiError> {
        self.call("/whoami", None)
    }

    pub fn cleanup(&self) -> Result<PoliciesResponse, ApiError> {
        self.call("/policies/cleanup", Some(String::new()))
    }

    pub fn internal_routes(&self) -> Result<RoutesResponse, ApiError> {
        self.call("/internal_routes", None)
    }

    pub fn map_routes(&self, routes: &[InternalRoute]) -> Result<(), ApiError> {
        self.write_routes("/internal_routes", routes)
    }

    pub fn unmap_routes(&self, routes: &[InternalRoute]) -> Result<(), ApiError> {
        self.write_routes("/internal_routes/delete", routes)
    }

    fn write_routes(&self, path: &str, routes: &[InternalRoute]) -> Result<(), ApiError> {
        let body = serde_json::to_string(&RoutesRequest {
            routes: routes.to_vec(),
        })
        .map_err(|e| ApiError::BadResponse(e.to_string()))?;
        let _: serde_json::Value = self.call(path, Some(body))?;
        Ok(())
    }
}
