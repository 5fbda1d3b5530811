//! What the security-group verbs share: the policy server's security-group admin API
//! (`/networking/v1/external/security_groups`, Cloud Controller v3 shaped), ORG and SPACE as
//! names (through the Cloud Controller, when one is known) or as GUIDs (without one, or with
//! `--app-guids`), the rules file, and the cf CLI's output.

use crate::api::security_groups::{V3List, V3SecurityGroup};
use crate::cli::context::{Connection, Ctx, Failure};
use crate::cli::names::Cc;
use crate::cli::output;
use crate::http::client::{agent, body_string};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const BODY_LIMIT: u64 = 256 * 1024 * 1024;

pub const DYNAMIC_TIP: &str = "TIP: If Dynamic ASG's are enabled, changes will automatically apply for running and staging applications. Otherwise, changes will require an app restart (for running) or restage (for staging) to apply to existing applications.";

pub struct AsgApi {
    agent: ureq::Agent,
    base: String,
    authorization: String,
}

/// An answer other than the one asked for: status and the server's own words.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub detail: String,
}

impl AsgApi {
    pub fn new(c: &Connection) -> Result<AsgApi, String> {
        Ok(AsgApi {
            agent: agent(&c.target.tls, Duration::from_secs(60))?,
            base: format!("{}/networking/v1/external/security_groups", c.target.api),
            authorization: format!("Bearer {}", c.target.token),
        })
    }

    /// One request; `Ok(Err(..))` is an HTTP answer that is not 2xx.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Result<Value, Refused>, String> {
        let url = format!("{}{path}", self.base);
        let text = body.map(Value::to_string);
        crate::cli::trace::request(method, &url, text.as_deref());
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/json")
            .body(text.unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let mut resp = self.agent.run(req).map_err(|e| {
            format!("failed to make request to policy server: {e}\nTIP: Check the API endpoint and that the policy server is running.")
        })?;
        let status = resp.status().as_u16();
        let answer = body_string(&mut resp, BODY_LIMIT)?;
        crate::cli::trace::response(status, &answer);
        let value: Value = if answer.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&answer).unwrap_or(Value::String(answer.clone()))
        };
        if (200..300).contains(&status) {
            return Ok(Ok(value));
        }
        let detail = value["errors"][0]["detail"]
            .as_str()
            .or(value["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| answer.trim().chars().take(300).collect());
        Ok(Err(Refused { status, detail }))
    }

    /// Like [`AsgApi::call`], with a refusal turned into the message the user sees.
    pub fn expect(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        self.call(method, path, body)?.map_err(explain)
    }

    /// Every group, following the pages.
    pub fn all(&self) -> Result<Vec<V3SecurityGroup>, String> {
        let mut out = Vec::new();
        for page in 1..=crate::cli::names::MAX_PAGES {
            let v = self.expect("GET", &format!("?per_page=5000&page={page}"), None)?;
            let list: V3List<V3SecurityGroup> = serde_json::from_value(v)
                .map_err(|e| format!("unexpected response from the policy server: {e}"))?;
            out.extend(list.resources);
            if list.pagination.next.is_none() {
                return Ok(out);
            }
        }
        Err("the policy server returned too many pages of security groups".into())
    }

    pub fn by_name(&self, name: &str) -> Result<Option<V3SecurityGroup>, String> {
        let v = self.expect(
            "GET",
            &format!("?names={}", crate::policy::auth::form_encode(name)),
            None,
        )?;
        let list: V3List<V3SecurityGroup> = serde_json::from_value(v)
            .map_err(|e| format!("unexpected response from the policy server: {e}"))?;
        Ok(list.resources.into_iter().find(|g| g.name == name))
    }

    pub fn named(&self, name: &str) -> Result<V3SecurityGroup, String> {
        self.by_name(name)?
            .ok_or_else(|| format!("Security group '{name}' not found."))
    }
}

pub fn explain(r: Refused) -> String {
    match r.status {
        401 => format!("the policy server did not accept the token (401: {})\nTIP: Log in again with 'cf login', or pass a valid token with '--token'.", r.detail),
        403 => format!("not authorized (403: {})\nTIP: Security groups need a token with the network.admin scope.", r.detail),
        404 if r.detail == "not found" => "not found (404)\nTIP: Check that the API endpoint is a netman policy server with security groups.".into(),
        409 => r.detail,
        s if s >= 500 => format!("policy server error ({s}: {})\nTIP: Try again later; if it persists, check the policy server's logs.", r.detail),
        _ => r.detail,
    }
}

/// Reads a rules file: a JSON array of rules, checked here as the server will check it.
pub fn read_rules(path: &str) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Failed(format!("reading rules file {path}: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        Failure::Failed(format!(
            "Incorrect usage: Invalid JSON in {path}: {e}\nThe rules file must be a JSON array of rules, e.g. [{{\"protocol\":\"tcp\",\"destination\":\"10.0.0.0/24\",\"ports\":\"80,443\"}}]"
        ))
    })?;
    match crate::asg::rule::parse_rule_values(&value) {
        Err(m) => Err(Failure::Failed(format!("Invalid rules in {path}: {m}"))),
        Ok((_, errors)) => match errors.first() {
            Some(e) => Err(Failure::Failed(format!("Invalid rules in {path}: {e}"))),
            None => Ok(value),
        },
    }
}

/// Names of spaces and their orgs, when a CC is known; the GUIDs themselves otherwise.
pub struct Places {
    spaces: HashMap<String, (String, String)>,
    orgs: HashMap<String, String>,
}

impl Places {
    pub fn of(cc: Option<&Cc>, groups: &[&V3SecurityGroup]) -> Result<Places, String> {
        let mut places = Places {
            spaces: HashMap::new(),
            orgs: HashMap::new(),
        };
        let Some(cc) = cc else {
            return Ok(places);
        };
        let mut guids: Vec<&str> = groups
            .iter()
            .flat_map(|g| {
                g.relationships
                    .running_spaces
                    .data
                    .iter()
                    .chain(&g.relationships.staging_spaces.data)
            })
            .map(|r| r.guid.as_str())
            .collect();
        guids.sort();
        guids.dedup();
        if guids.is_empty() {
            return Ok(places);
        }
        places.spaces = cc
            .spaces(&guids)
            .map_err(|e| format!("getting space names: {e}"))?;
        let mut orgs: Vec<&str> = places.spaces.values().map(|(_, o)| o.as_str()).collect();
        orgs.sort();
        orgs.dedup();
        places.orgs = cc
            .orgs(&orgs)
            .map_err(|e| format!("getting org names: {e}"))?;
        Ok(places)
    }

    /// (organization, space) of a space GUID as shown.
    pub fn show(&self, space_guid: &str) -> (String, String) {
        match self.spaces.get(space_guid) {
            Some((name, org)) => (
                self.orgs.get(org).cloned().unwrap_or_else(|| org.clone()),
                name.clone(),
            ),
            None => (String::new(), space_guid.to_string()),
        }
    }
}

/// The (organization, space, lifecycle) rows of a group's bindings, global ones as `<all>`.
pub fn binding_rows(g: &V3SecurityGroup, places: &Places) -> Vec<[String; 3]> {
    let mut rows = Vec::new();
    let all = || "<all>".to_string();
    for (global, spaces, lifecycle) in [
        (
            g.globally_enabled.running,
            &g.relationships.running_spaces,
            "running",
        ),
        (
            g.globally_enabled.staging,
            &g.relationships.staging_spaces,
            "staging",
        ),
    ] {
        if global {
            rows.push([all(), all(), lifecycle.to_string()]);
        }
        for s in &spaces.data {
            let (org, space) = places.show(&s.guid);
            rows.push([org, space, lifecycle.to_string()]);
        }
    }
    rows
}

pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    output::table(header, rows)
}

/// The space GUIDs ORG [SPACE] name: resolved through the CC when one is known (without SPACE:
/// every space of the org), taken as GUIDs otherwise (SPACE then required).
pub fn spaces_of(
    c: &Connection,
    command: &'static str,
    org: &str,
    space: Option<&str>,
) -> Result<Vec<String>, Failure> {
    match (&c.cc, space) {
        (Some(cc), Some(space)) => {
            let org_guid = cc.org_guid(org)?;
            Ok(vec![cc.space_guid(space, &org_guid)?])
        }
        (Some(cc), None) => {
            let org_guid = cc.org_guid(org)?;
            Ok(cc.org_spaces(&org_guid)?)
        }
        (None, Some(space)) => Ok(vec![space.to_string()]),
        (None, None) => Err(Failure::Usage {
            command,
            reason: "Without a Cloud Controller (or with --app-guids), give the space's GUID with --space SPACE_GUID.".into(),
        }),
    }
}

/// "as USER" of the progress lines.
pub fn who(c: &Connection) -> String {
    c.user_name()
}

/// Says `text` and `OK`, then the dynamic-ASG tip, or prints `json` in `--json` mode.
pub fn done(ctx: &mut Ctx, json: &Value, tip: bool) {
    if ctx.printed_json(json) {
        return;
    }
    ctx.say("OK");
    if tip {
        ctx.say(&format!("\n{DYNAMIC_TIP}"));
    }
}
