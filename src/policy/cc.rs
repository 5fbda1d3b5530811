//! What the policy server asks the Cloud Controller: which space each app is in, whether a user
//! is a space developer, which spaces a user can see, and which apps still exist.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcError(pub String);

impl std::fmt::Display for CcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub trait CloudController: Send + Sync {
    /// App GUID -> space GUID for the apps the CC knows (`GET /v3/apps?guids=`); unknown apps
    /// are absent from the map.
    fn app_spaces(&self, app_guids: &[String]) -> Result<HashMap<String, String>, CcError>;
    /// Whether `subject` is a space developer of `space_guid` (`GET /v2/spaces/<guid>`, then
    /// `GET /v2/spaces?q=developer_guid:..&q=name:..&q=organization_guid:..`). A space the CC
    /// does not know (404) is `Ok(false)`.
    fn is_space_developer(&self, subject: &str, space_guid: &str) -> Result<bool, CcError>;
    /// The spaces `subject` belongs to (`GET /v2/users/<sub>/spaces`, following `next_url`).
    fn user_spaces(&self, subject: &str) -> Result<HashSet<String>, CcError>;
    /// Which of `app_guids` still exist (stale-policy cleanup; chunks of 100).
    fn existing_apps(&self, app_guids: &[String]) -> Result<HashSet<String>, CcError>;
}

// ---- the Cloud Controller over HTTP ---------------------------------------------------------

use super::auth::uaa::{ClientCredentials, UaaClientConfig};
use crate::config::{require_positive, require_readable_file, Validate};
use crate::http::client::{agent, body_string, ClientTls};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Largest CC response read.
const BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// Pages followed at most, against a CC that keeps answering `next`.
const MAX_PAGES: usize = 10_000;

fn default_timeout() -> u64 {
    5
}

fn default_chunk() -> usize {
    100
}

/// Where the Cloud Controller is and how to talk to it. The client authenticates with its own
/// client-credentials token from UAA (the `auth.uaa_*` keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CcConfig {
    /// Base URL, e.g. `https://cloud-controller-ng.service.cf.internal:9023`.
    pub cc_url: String,
    #[serde(default)]
    pub cc_ca_cert_file: Option<String>,
    #[serde(default)]
    pub skip_ssl_validation: bool,
    #[serde(default = "default_timeout")]
    pub request_timeout_seconds: u64,
    /// App GUIDs per `GET /v3/apps?guids=` request.
    #[serde(default = "default_chunk")]
    pub cc_app_request_chunk_size: usize,
}

impl CcConfig {
    pub fn new(cc_url: &str) -> CcConfig {
        CcConfig {
            cc_url: cc_url.to_string(),
            cc_ca_cert_file: None,
            skip_ssl_validation: false,
            request_timeout_seconds: default_timeout(),
            cc_app_request_chunk_size: default_chunk(),
        }
    }
}

impl Validate for CcConfig {
    fn validate(&self) -> Result<(), String> {
        if !(self.cc_url.starts_with("http://") || self.cc_url.starts_with("https://")) {
            return Err(format!(
                "invalid 'cc_url': {:?} is not an http:// or https:// URL",
                self.cc_url
            ));
        }
        if let Some(ca) = &self.cc_ca_cert_file {
            require_readable_file("cc_ca_cert_file", ca)?;
        }
        require_positive("request_timeout_seconds", self.request_timeout_seconds)?;
        if !(1..=5000).contains(&self.cc_app_request_chunk_size) {
            return Err("invalid 'cc_app_request_chunk_size': must be in 1-5000".into());
        }
        Ok(())
    }
}

/// The [`CloudController`] of a real CF: v3 apps, v2 spaces and users, as the original called them.
pub struct HttpCloudController {
    agent: ureq::Agent,
    base: String,
    token: ClientCredentials,
    chunk: usize,
}

/// Query value encoding that keeps `,` and `:` readable, as CC URLs are usually written.
fn query_value(value: &str) -> String {
    super::auth::form_encode(value)
        .replace("%2C", ",")
        .replace("%3A", ":")
}

fn err(what: impl std::fmt::Display) -> CcError {
    CcError(what.to_string())
}

impl HttpCloudController {
    pub fn new(config: &CcConfig, uaa: &UaaClientConfig) -> Result<HttpCloudController, String> {
        config.validate()?;
        let agent = agent(
            &ClientTls {
                ca_cert_file: config.cc_ca_cert_file.clone(),
                skip_verification: config.skip_ssl_validation,
                ..Default::default()
            },
            Duration::from_secs(config.request_timeout_seconds),
        )
        .map_err(|e| format!("Cloud Controller client: {e}"))?;
        Ok(HttpCloudController {
            agent,
            base: config.cc_url.trim_end_matches('/').to_string(),
            token: ClientCredentials::new(uaa)?,
            chunk: config.cc_app_request_chunk_size,
        })
    }

    /// GET `path_and_query` (relative to the CC base). Returns the status and the JSON body
    /// (`Value::Null` for an empty or non-JSON error body). A 401 renews the token once.
    fn get(&self, path_and_query: &str) -> Result<(u16, Value), CcError> {
        let url = format!("{}{path_and_query}", self.base);
        let context = |what: String| err(format!("cc GET {url}: {what}"));
        for attempt in 0..2 {
            let token = self.token.token().map_err(err)?;
            let mut resp = self
                .agent
                .get(&url)
                .header("Authorization", format!("bearer {token}"))
                .header("Accept", "application/json")
                .call()
                .map_err(|e| context(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = body_string(&mut resp, BODY_LIMIT).map_err(context)?;
            if status == 401 && attempt == 0 {
                self.token.invalidate();
                continue;
            }
            if status == 200 {
                let value =
                    serde_json::from_str(&body).map_err(|e| context(format!("bad JSON: {e}")))?;
                return Ok((status, value));
            }
            if status == 404 {
                return Ok((status, Value::Null));
            }
            return Err(context(format!("status {status}: {}", body.trim())));
        }
        Err(context("token refused twice (401)".into()))
    }

    fn get_ok(&self, path_and_query: &str) -> Result<Value, CcError> {
        match self.get(path_and_query)? {
            (200, v) => Ok(v),
            (status, _) => Err(err(format!(
                "cc GET {}{path_and_query}: status {status}",
                self.base
            ))),
        }
    }

    /// The path and query of a link the CC returned (absolute or relative), so that the next
    /// page is fetched from the configured CC and the token never goes elsewhere.
    fn relative(link: &str) -> String {
        match link.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map(|i| rest[i..].to_string())
                .unwrap_or_default(),
            None => link.to_string(),
        }
    }

    /// `GET /v3/apps?guids=` in chunks, following `pagination.next`: (app guid, space guid).
    fn apps(&self, app_guids: &[String]) -> Result<Vec<(String, Option<String>)>, CcError> {
        let mut unique: Vec<&String> = app_guids.iter().collect();
        unique.sort();
        unique.dedup();
        let mut found = Vec::new();
        for chunk in unique.chunks(self.chunk) {
            let list: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
            let mut next = Some(format!(
                "/v3/apps?guids={}&per_page={}",
                query_value(&list.join(",")),
                chunk.len()
            ));
            let mut pages = 0;
            while let Some(path) = next.take() {
                pages += 1;
                if pages > MAX_PAGES {
                    return Err(err("cc /v3/apps: too many pages"));
                }
                let page = self.get_ok(&path)?;
                let resources = page["resources"]
                    .as_array()
                    .ok_or_else(|| err(format!("cc GET {path}: no resources array")))?;
                for app in resources {
                    let guid = app["guid"]
                        .as_str()
                        .ok_or_else(|| err(format!("cc GET {path}: app without guid")))?;
                    let space = app["links"]["space"]["href"]
                        .as_str()
                        .and_then(|h| h.trim_end_matches('/').rsplit('/').next())
                        .or_else(|| app["relationships"]["space"]["data"]["guid"].as_str())
                        .filter(|s| !s.is_empty())
                        .map(str::to_string);
                    found.push((guid.to_string(), space));
                }
                next = page["pagination"]["next"]["href"]
                    .as_str()
                    .map(Self::relative);
            }
        }
        Ok(found)
    }
}

impl CloudController for HttpCloudController {
    fn app_spaces(&self, app_guids: &[String]) -> Result<HashMap<String, String>, CcError> {
        let mut map = HashMap::new();
        for (app, space) in self.apps(app_guids)? {
            let space = space.ok_or_else(|| err(format!("cc: app {app} has no space link")))?;
            map.insert(app, space);
        }
        Ok(map)
    }

    fn is_space_developer(&self, subject: &str, space_guid: &str) -> Result<bool, CcError> {
        let path = format!("/v2/spaces/{}", super::auth::form_encode(space_guid));
        let space = match self.get(&path)? {
            (404, _) => return Ok(false),
            (_, v) => v,
        };
        let name = space["entity"]["name"]
            .as_str()
            .ok_or_else(|| err(format!("cc GET {path}: space without entity.name")))?;
        let org = space["entity"]["organization_guid"]
            .as_str()
            .ok_or_else(|| {
                err(format!(
                    "cc GET {path}: space without entity.organization_guid"
                ))
            })?;
        let query = format!(
            "/v2/spaces?q={}&q={}&q={}",
            query_value(&format!("developer_guid:{subject}")),
            query_value(&format!("name:{name}")),
            query_value(&format!("organization_guid:{org}")),
        );
        let found = self.get_ok(&query)?;
        let count = found["resources"]
            .as_array()
            .map(Vec::len)
            .ok_or_else(|| err(format!("cc GET {query}: no resources array")))?;
        let total = found["total_results"].as_u64().unwrap_or(count as u64);
        match total.max(count as u64) {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(err(format!(
                "cc GET {query}: expected at most one space, found {n}"
            ))),
        }
    }

    fn user_spaces(&self, subject: &str) -> Result<HashSet<String>, CcError> {
        let mut spaces = HashSet::new();
        let mut next = Some(format!(
            "/v2/users/{}/spaces?results-per-page=100",
            super::auth::form_encode(subject)
        ));
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(err("cc /v2/users/../spaces: too many pages"));
            }
            let page = match self.get(&path)? {
                // A user the CC does not know belongs to no space.
                (404, _) if pages == 1 => return Ok(spaces),
                (200, v) => v,
                (status, _) => return Err(err(format!("cc GET {path}: status {status}"))),
            };
            let resources = page["resources"]
                .as_array()
                .ok_or_else(|| err(format!("cc GET {path}: no resources array")))?;
            for space in resources {
                let guid = space["metadata"]["guid"]
                    .as_str()
                    .ok_or_else(|| err(format!("cc GET {path}: space without metadata.guid")))?;
                spaces.insert(guid.to_string());
            }
            next = page["next_url"].as_str().map(Self::relative);
        }
        Ok(spaces)
    }

    fn existing_apps(&self, app_guids: &[String]) -> Result<HashSet<String>, CcError> {
        Ok(self
            .apps(app_guids)?
            .into_iter()
            .map(|(app, _)| app)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_relative_to_the_configured_cc() {
        assert_eq!(
            HttpCloudController::relative("https://evil.example.com/v3/apps?page=2"),
            "/v3/apps?page=2"
        );
        assert_eq!(
            HttpCloudController::relative("/v2/users/u/spaces?page=2"),
            "/v2/users/u/spaces?page=2"
        );
        assert_eq!(
            query_value("developer_guid:a b,c"),
            "developer_guid:a%20b,c"
        );
    }
}
