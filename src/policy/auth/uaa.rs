//! UAA: the `check_token` flow of the original policy server (one round trip per request), and
//! the client-credentials token the policy server itself uses to call the Cloud Controller.

use super::{basic_auth, form_encode, AuthError, Authenticator, Identity};
use crate::http::client::{agent, body_string, ClientTls};
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest UAA response read.
const BODY_LIMIT: u64 = 1024 * 1024;

/// How to reach UAA as a client.
#[derive(Debug, Clone)]
pub struct UaaClientConfig {
    /// Base URL, e.g. `https://uaa.service.cf.internal:8443`.
    pub url: String,
    pub client: String,
    pub client_secret: String,
    pub ca_cert_file: Option<String>,
    pub skip_ssl_validation: bool,
    pub timeout: Duration,
}

impl UaaClientConfig {
    fn agent(&self) -> Result<ureq::Agent, String> {
        agent(
            &ClientTls {
                ca_cert_file: self.ca_cert_file.clone(),
                skip_verification: self.skip_ssl_validation,
                ..Default::default()
            },
            self.timeout,
        )
        .map_err(|e| format!("UAA client: {e}"))
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }
}

/// The fields of UAA's `check_token` answer that the policy server reads.
#[derive(Debug, Deserialize)]
struct CheckToken {
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

/// Verifies every token with `POST <uaa_url>/check_token` (basic auth of the policy server's
/// client, body `token=<token>`).
pub struct UaaAuthenticator {
    agent: ureq::Agent,
    check_token_url: String,
    authorization: String,
}

impl UaaAuthenticator {
    pub fn new(config: &UaaClientConfig) -> Result<UaaAuthenticator, String> {
        Ok(UaaAuthenticator {
            agent: config.agent()?,
            check_token_url: config.endpoint("/check_token"),
            authorization: basic_auth(&config.client, &config.client_secret),
        })
    }
}

impl Authenticator for UaaAuthenticator {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let fail =
            |what: String| AuthError(format!("uaa check_token {}: {what}", self.check_token_url));
        let mut resp = self
            .agent
            .post(&self.check_token_url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(format!("token={}", form_encode(token)))
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = body_string(&mut resp, BODY_LIMIT).map_err(fail)?;
        if status != 200 {
            return Err(fail(format!("status {status}: {}", body.trim())));
        }
        let parsed: CheckToken =
            serde_json::from_str(&body).map_err(|e| fail(format!("bad response body: {e}")))?;
        let subject = parsed
            .sub
            .filter(|s| !s.is_empty())
            .or(parsed.user_id.filter(|s| !s.is_empty()))
            .or(parsed.client_id.filter(|s| !s.is_empty()))
            .ok_or_else(|| fail("response has no sub, user_id or client_id".into()))?;
        Ok(Identity {
            subject,
            user_name: parsed.user_name.unwrap_or_default(),
            scopes: parsed.scope,
        })
    }
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The policy server's own token (`POST <uaa_url>/oauth/token`, `grant_type=client_credentials`),
/// cached until shortly before it expires.
pub struct ClientCredentials {
    agent: ureq::Agent,
    token_url: String,
    client: String,
    authorization: String,
    cached: Mutex<Option<(String, Instant)>>,
}

impl ClientCredentials {
    pub fn new(config: &UaaClientConfig) -> Result<ClientCredentials, String> {
        Ok(ClientCredentials {
            agent: config.agent()?,
            token_url: config.endpoint("/oauth/token"),
            client: config.client.clone(),
            authorization: basic_auth(&config.client, &config.client_secret),
            cached: Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one from UAA.
    pub fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, valid_until)) = cached.as_ref() {
            if Instant::now() < *valid_until {
                return Ok(token.clone());
            }
        }
        let (token, valid_until) = self.fetch()?;
        *cached = Some((token.clone(), valid_until));
        Ok(token)
    }

    /// Drops the cached token (after the Cloud Controller refused it).
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn fetch(&self) -> Result<(String, Instant), String> {
        let fail = |what: String| format!("getting a token from UAA {}: {what}", self.token_url);
        let started = Instant::now();
        let mut resp = self
            .agent
            .post(&self.token_url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .send(format!(
                "client_id={}&grant_type=client_credentials",
                form_encode(&self.client)
            ))
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = body_string(&mut resp, BODY_LIMIT).map_err(fail)?;
        if status != 200 {
            return Err(fail(format!("status {status}: {}", body.trim())));
        }
        let parsed: TokenResponse =
            serde_json::from_str(&body).map_err(|e| fail(format!("bad response body: {e}")))?;
        if parsed.access_token.is_empty() {
            return Err(fail("empty access_token".into()));
        }
        if let Some(kind) = &parsed.token_type {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(fail(format!("token_type {kind:?} is not bearer")));
            }
        }
        // Renew a little before UAA's expiry: 30 s, or half the lifetime of a short-lived token.
        let lifetime = parsed.expires_in.unwrap_or(0);
        let margin = 30.min(lifetime / 2);
        Ok((
            parsed.access_token,
            started + Duration::from_secs(lifetime - margin),
        ))
    }
}
