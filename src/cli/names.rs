//! App, space and org names through the Cloud Controller's v3 API, with the user's own token, as
//! the cf CLI resolves them: apps in the targeted space, `-s`/`-o` for another space or org.

use crate::http::client::{agent, body_string, ClientTls};
use crate::policy::auth::form_encode;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const BODY_LIMIT: u64 = 64 * 1024 * 1024;
pub(crate) const MAX_PAGES: usize = 1000;

pub struct Cc {
    agent: ureq::Agent,
    base: String,
    authorization: String,
}

/// An app the CC knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    pub guid: String,
    pub name: String,
    pub space_guid: String,
}

fn list_value(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| form_encode(v))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cc {
    pub fn new(base: &str, token: &str, tls: &ClientTls) -> Result<Cc, String> {
        Ok(Cc {
            agent: agent(tls, Duration::from_secs(30))?,
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("bearer {token}"),
        })
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        super::trace::request("GET", &url, None);
        let mut resp = self
            .agent
            .get(&url)
            .header("Authorization", &self.authorization)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| {
                format!("failed to make request to the Cloud Controller {}: {e}\nTIP: Check '--cc-api' (or the cf target) and its certificate ('--skip-ssl-validation').", self.base)
            })?;
        let status = resp.status().as_u16();
        let text = body_string(&mut resp, BODY_LIMIT)?;
        super::trace::response(status, &text);
        match status {
            200 => serde_json::from_str(&text)
                .map_err(|e| format!("unexpected response from the Cloud Controller {url}: {e}")),
            401 => Err("the Cloud Controller did not accept the token (401)\nTIP: Log in again with 'cf login', or pass a valid token with '--token'.".to_string()),
            _ => Err(format!(
                "the Cloud Controller answered {status} to GET {url}: {}",
                text.trim().chars().take(300).collect::<String>()
            )),
        }
    }

    /// Every resource of a v3 list, following `pagination.next`.
    fn list(&self, first: String) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err("the Cloud Controller returned too many pages".into());
            }
            let page = self.get(&path)?;
            let resources = page["resources"].as_array().ok_or_else(|| {
                format!("unexpected response from the Cloud Controller {path}: no resources")
            })?;
            out.extend(resources.iter().cloned());
            next = page["pagination"]["next"]["href"].as_str().map(|href| {
                match href.split_once("://") {
                    Some((_, rest)) => rest
                        .find('/')
                        .map(|i| rest[i..].to_string())
                        .unwrap_or_default(),
                    None => href.to_string(),
                }
            });
        }
        Ok(out)
    }

    /// Every resource of `kind` (`apps`, `spaces`, `organizations`) among `guids`, asked for
    /// 100 at a time.
    fn by_guids(&self, kind: &str, guids: &[&str]) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        for chunk in guids.chunks(100) {
            let path = format!(
                "/v3/{kind}?guids={}&per_page={}",
                list_value(chunk),
                chunk.len()
            );
            out.extend(self.list(path)?);
        }
        Ok(out)
    }

    fn single_guid(&self, path: String) -> Result<Option<String>, String> {
        Ok(self
            .list(path)?
            .first()
            .and_then(|r| r["guid"].as_str())
            .map(str::to_string))
    }

    pub fn org_guid(&self, name: &str) -> Result<String, String> {
        self.single_guid(format!("/v3/organizations?names={}", list_value(&[name])))?
            .ok_or_else(|| format!("Organization '{name}' not found."))
    }

    pub fn space_guid(&self, name: &str, org_guid: &str) -> Result<String, String> {
        self.single_guid(format!(
            "/v3/spaces?names={}&organization_guids={}",
            list_value(&[name]),
            list_value(&[org_guid])
        ))?
        .ok_or_else(|| format!("Space '{name}' not found."))
    }

    pub fn app_guid(&self, name: &str, space_guid: &str) -> Result<Option<String>, String> {
        self.single_guid(format!(
            "/v3/apps?names={}&space_guids={}",
            list_value(&[name]),
            list_value(&[space_guid])
        ))
    }

    /// Apps by GUID (chunks of 100); unknown GUIDs are absent.
    pub fn apps(&self, guids: &[&str]) -> Result<HashMap<String, AppInfo>, String> {
        let mut out = HashMap::new();
        for app in self.by_guids("apps", guids)? {
            let (Some(guid), Some(name)) = (app["guid"].as_str(), app["name"].as_str()) else {
                continue;
            };
            let space = app["relationships"]["space"]["data"]["guid"]
                .as_str()
                .or_else(|| {
                    app["links"]["space"]["href"]
                        .as_str()
                        .and_then(|h| h.rsplit('/').next())
                })
                .unwrap_or_default();
            out.insert(
                guid.to_string(),
                AppInfo {
                    guid: guid.to_string(),
                    name: name.to_string(),
                    space_guid: space.to_string(),
                },
            );
        }
        Ok(out)
    }

    /// Space GUID -> (space name, org GUID).
    pub fn spaces(&self, guids: &[&str]) -> Result<HashMap<String, (String, String)>, String> {
        let mut out = HashMap::new();
        for s in self.by_guids("spaces", guids)? {
            if let (Some(guid), Some(name)) = (s["guid"].as_str(), s["name"].as_str()) {
                let org = s["relationships"]["organization"]["data"]["guid"]
                    .as_str()
                    .unwrap_or_default();
                out.insert(guid.to_string(), (name.to_string(), org.to_string()));
            }
        }
        Ok(out)
    }

    /// The GUIDs of every space of an org.
    pub fn org_spaces(&self, org_guid: &str) -> Result<Vec<String>, String> {
        Ok(self
            .list(format!(
                "/v3/spaces?organization_guids={}&per_page=5000",
                list_value(&[org_guid])
            ))?
            .iter()
            .filter_map(|s| s["guid"].as_str().map(str::to_string))
            .collect())
    }

    /// Org GUID -> name.
    pub fn orgs(&self, guids: &[&str]) -> Result<HashMap<String, String>, String> {
        let mut out = HashMap::new();
        for o in self.by_guids("organizations", guids)? {
            if let (Some(guid), Some(name)) = (o["guid"].as_str(), o["name"].as_str()) {
                out.insert(guid.to_string(), name.to_string());
            }
        }
        Ok(out)
    }
}
