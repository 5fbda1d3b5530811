//! The admin API for security groups, shaped like Cloud Controller v3 (`/v3/security_groups`),
//! under the external API at `/networking/v1/external/security_groups` (the `network.admin`
//! scope only):
//!
//! | method | path (after `security_groups`) | |
//! |---|---|---|
//! | GET | | list: `names`, `guids`, `running_space_guids`, `staging_space_guids`, `globally_enabled_running`, `globally_enabled_staging`, `page`, `per_page` (default 50, at most 5000) |
//! | POST | | create: `name`, `rules`, `globally_enabled`, `relationships` → 201 |
//! | GET / PATCH / DELETE | `/:guid` | one group; PATCH takes `name`, `rules`, `globally_enabled` (each optional); DELETE → 204 |
//! | POST | `/:guid/relationships/{running,staging}_spaces` | bind `{"data":[{"guid":..}]}` → the bound list |
//! | DELETE | `/:guid/relationships/{running,staging}_spaces/:space_guid` | unbind → 204 |
//!
//! Every body is validated in full before anything is stored: unknown fields, a bad name, a bad
//! rule (named by index and field) are refused with 422 and the Cloud Controller's error shape
//! (`{"errors":[{"code":10008,"title":"CF-UnprocessableEntity","detail":..}]}`). Where the Cloud
//! Controller answers a delete with an asynchronous job (202), this answers 204 when it is done.

use super::store::{bind, unbind, AsgError, AsgStore, StoredGroup};
use crate::api::security_groups::{
    GloballyEnabled, Link, Pagination, SecurityGroup, SpaceRelationships, StoredRule, ToMany,
    V3List, V3SecurityGroup,
};
use crate::asg::rule::parse_rule_values;
use crate::asg::Lifecycle;
use crate::http::{Request, Response};
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub const MAX_NAME: usize = 250;
/// Longest space guid accepted (the stored JSON must stay readable by the original's schema).
pub const MAX_SPACE_GUID: usize = 255;
pub const MAX_PER_PAGE: usize = 5000;
const DEFAULT_PER_PAGE: usize = 50;

pub struct AsgAdmin {
    pub store: Arc<dyn AsgStore>,
    /// The syncer copies the groups from the Cloud Controller: changes belong there (a change
    /// made here would be undone at the next sync), so writes are refused.
    pub synced_from_cc: bool,
}

/// An answer in the Cloud Controller's error shape.
fn cc_error(status: u16, code: u32, title: &str, detail: &str) -> Response {
    Response::json(
        status,
        &json!({"errors": [{"code": code, "title": title, "detail": detail}]}),
    )
}

fn unprocessable(detail: &str) -> Response {
    cc_error(422, 10008, "CF-UnprocessableEntity", detail)
}

fn not_found() -> Response {
    cc_error(
        404,
        10010,
        "CF-ResourceNotFound",
        "Security group not found",
    )
}

fn store_failed(what: &str, e: AsgError) -> Response {
    match e {
        AsgError::NotFound(_) => not_found(),
        AsgError::NameTaken(name) => unprocessable(&format!(
            "Security group with name '{name}' already exists."
        )),
        AsgError::GuidTaken(guid) => unprocessable(&format!(
            "Security group with guid '{guid}' already exists."
        )),
        AsgError::Db(_) => {
            log::error!("security groups: {what}: {e}");
            cc_error(500, 10001, "UnknownError", "database failed")
        }
    }
}

/// The path of a group (links are relative to the external listener).
fn self_href(version: &str, guid: &str) -> String {
    format!("/networking/{version}/external/security_groups/{guid}")
}

/// A stored group as the v3 API shows it; stored rules that are not a JSON array are reported.
fn resource(version: &str, g: &SecurityGroup) -> Result<V3SecurityGroup, Response> {
    let rules = match serde_json::from_str::<Value>(&g.rules) {
        Ok(Value::Array(rules)) => rules,
        _ => {
            log::error!(
                "security group {:?}: stored rules are not a JSON array",
                g.guid
            );
            return Err(cc_error(
                500,
                10001,
                "UnknownError",
                &format!("security group {} has damaged stored rules", g.guid),
            ));
        }
    };
    Ok(V3SecurityGroup {
        guid: g.guid.clone(),
        name: g.name.clone(),
        globally_enabled: GloballyEnabled {
            running: g.running_default,
            staging: g.staging_default,
        },
        rules,
        relationships: SpaceRelationships {
            running_spaces: ToMany::of(&g.running_space_guids),
            staging_spaces: ToMany::of(&g.staging_space_guids),
        },
        links: Some(json!({"self": {"href": self_href(version, &g.guid)}})),
    })
}

/// Parses the body as a JSON object.
fn body_object(req: &Request) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(unprocessable("Request body must be a JSON object.")),
        Err(e) => Err(cc_error(
            400,
            1001,
            "CF-MessageParseError",
            &format!("Request invalid due to parse error: {e}"),
        )),
    }
}

fn refuse_unknown(obj: &Map<String, Value>, known: &[&str], what: &str) -> Result<(), Response> {
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("'{k}'"))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(unprocessable(&format!(
            "{what}: unknown field(s): {}",
            unknown.join(", ")
        )))
    }
}

fn name_of(value: &Value) -> Result<String, Response> {
    let Some(name) = value.as_str() else {
        return Err(unprocessable("Name must be a string"));
    };
    if name.trim().is_empty() {
        return Err(unprocessable("Name can't be blank"));
    }
    if name.len() > MAX_NAME {
        return Err(unprocessable(&format!(
            "Name is too long (maximum is {MAX_NAME} characters)"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(unprocessable("Name must not contain control characters"));
    }
    Ok(name.to_string())
}

/// Validates a rule array fully and gives it in the stored shape (the original's seven fields).
pub fn canonical_rules(value: &Value) -> Result<String, Response> {
    let (_, errors) = parse_rule_values(value).map_err(|m| unprocessable(&format!("Rules {m}")))?;
    if let Some(first) = errors.first() {
        return Err(unprocessable(&format!("Rules are invalid: {first}")));
    }
    let stored: Vec<StoredRule> = value
        .as_array()
        .into_iter()
        .flatten()
        .map(stored_rule)
        .collect();
    crate::api::gojson::to_string(&stored).map_err(|e| unprocessable(&format!("Rules: {e}")))
}

/// A rule already validated by the parser, in the stored shape.
pub fn stored_rule(rule: &Value) -> StoredRule {
    let text = |k: &str| {
        rule.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let int = |k: &str| rule.get(k).and_then(Value::as_i64).unwrap_or(0);
    StoredRule {
        protocol: text("protocol"),
        destination: text("destination"),
        ports: text("ports"),
        icmp_type: int("type"),
        code: int("code"),
        description: text("description"),
        log: rule.get("log").and_then(Value::as_bool).unwrap_or(false),
    }
}

fn globally_enabled(value: &Value, current: GloballyEnabled) -> Result<GloballyEnabled, Response> {
    let Some(obj) = value.as_object() else {
        return Err(unprocessable("Globally enabled must be an object"));
    };
    refuse_unknown(obj, &["running", "staging"], "globally_enabled")?;
    let flag = |k: &str, old: bool| match obj.get(k) {
        None => Ok(old),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(unprocessable(&format!(
            "Globally enabled {k} must be a boolean"
        ))),
    };
    Ok(GloballyEnabled {
        running: flag("running", current.running)?,
        staging: flag("staging", current.staging)?,
    })
}

/// `{"data":[{"guid":..}]}`: the space guids, each checked.
fn space_guids(value: &Value, what: &str) -> Result<Vec<String>, Response> {
    let bad = || {
        unprocessable(&format!(
            "{what} must be {{\"data\": [{{\"guid\": \"...\"}}]}}"
        ))
    };
    let obj = value.as_object().ok_or_else(bad)?;
    refuse_unknown(obj, &["data"], what)?;
    let data = obj.get("data").and_then(Value::as_array).ok_or_else(bad)?;
    let mut guids = Vec::with_capacity(data.len());
    for item in data {
        let item = item.as_object().ok_or_else(bad)?;
        refuse_unknown(item, &["guid"], what)?;
        let guid = item.get("guid").and_then(Value::as_str).ok_or_else(bad)?;
        if guid.trim().is_empty() || guid.len() > MAX_SPACE_GUID || guid.contains(',') {
            return Err(unprocessable(&format!(
                "{what}: space guid {guid:?} must be 1 to {MAX_SPACE_GUID} characters without commas"
            )));
        }
        if !guids.iter().any(|g| g == guid) {
            guids.push(guid.to_string());
        }
    }
    Ok(guids)
}

fn lifecycle_of(relationship: &str) -> Option<Lifecycle> {
    match relationship {
        "running_spaces" => Some(Lifecycle::Running),
        "staging_spaces" => Some(Lifecycle::Staging),
        _ => None,
    }
}

fn method_not_allowed(allowed: &str) -> Response {
    Response::error(405, "method not allowed").with_header("allow", allowed)
}

impl AsgAdmin {
    /// Serves `rest`, the path after `/networking/{version}/external/security_groups`.
    pub fn serve(&self, version: &str, rest: &str, req: &Request) -> Response {
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let method = if req.method == "HEAD" {
            "GET"
        } else {
            req.method.as_str()
        };
        if self.synced_from_cc && method != "GET" {
            return cc_error(
                409,
                10008,
                "CF-UnprocessableEntity",
                "Security groups are synced from the Cloud Controller (asg_syncer): change them \
                 there",
            );
        }
        match (method, segments.as_slice()) {
            ("GET", []) => self.list(version, req),
            ("POST", []) => self.create(version, req),
            (_, []) => method_not_allowed("GET, POST"),
            ("GET", [guid]) => self.show(version, guid),
            ("PATCH", [guid]) => self.update(version, guid, req),
            ("DELETE", [guid]) => match self.store.delete(guid) {
                Ok(()) => Response::new(204),
                Err(e) => store_failed("delete", e),
            },
            (_, [_]) => method_not_allowed("GET, PATCH, DELETE"),
            ("POST", [guid, "relationships", relationship]) => match lifecycle_of(relationship) {
                Some(l) => self.bind(version, guid, l, relationship, req),
                None => Response::error(404, "not found"),
            },
            (_, [_, "relationships", _]) => method_not_allowed("POST"),
            ("DELETE", [guid, "relationships", relationship, space]) => {
                match lifecycle_of(relationship) {
                    Some(l) => self.unbind(guid, l, space),
                    None => Response::error(404, "not found"),
                }
            }
            (_, [_, "relationships", _, _]) => method_not_allowed("DELETE"),
            _ => Response::error(404, "not found"),
        }
    }

    fn show(&self, version: &str, guid: &str) -> Response {
        match self.store.get(guid) {
            Ok(g) => match resource(version, &g.group) {
                Ok(r) => Response::json(200, &r),
                Err(resp) => resp,
            },
            Err(e) => store_failed("get", e),
        }
    }

    fn list(&self, version: &str, req: &Request) -> Response {
        let list_param = |k: &str| -> Option<Vec<&str>> {
            req.query_param(k)
                .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
        };
        let flag = |k: &str| -> Result<Option<bool>, Response> {
            match req.query_param(k) {
                None => Ok(None),
                Some("true") => Ok(Some(true)),
                Some("false") => Ok(Some(false)),
                Some(other) => Err(cc_error(
                    400,
                    10005,
                    "CF-BadQueryParameter",
                    &format!("{k} must be true or false, not {other:?}"),
                )),
            }
        };
        let number = |k: &str, default: usize| -> Result<usize, Response> {
            match req.query_param(k) {
                None => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n >= 1 && (k != "per_page" || n <= MAX_PER_PAGE) => Ok(n),
                    _ => Err(cc_error(
                        400,
                        10005,
                        "CF-BadQueryParameter",
                        &format!("{k} must be an integer from 1 (per_page at most {MAX_PER_PAGE})"),
                    )),
                },
            }
        };
        let (running, staging, page, per_page) = match (
            flag("globally_enabled_running"),
            flag("globally_enabled_staging"),
            number("page", 1),
            number("per_page", DEFAULT_PER_PAGE),
        ) {
            (Ok(r), Ok(s), Ok(p), Ok(pp)) => (r, s, p, pp),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return e,
        };
        let (names, guids) = (list_param("names"), list_param("guids"));
        let (running_spaces, staging_spaces) = (
            list_param("running_space_guids"),
            list_param("staging_space_guids"),
        );
        let snapshot = match self.store.snapshot() {
            Ok(s) => s,
            Err(e) => return store_failed("list", e),
        };
        let within = |filter: &Option<Vec<&str>>, value: &str| {
            filter.as_ref().is_none_or(|f| f.contains(&value))
        };
        let overlaps = |filter: &Option<Vec<&str>>, values: &[String]| {
            filter
                .as_ref()
                .is_none_or(|f| values.iter().any(|v| f.contains(&v.as_str())))
        };
        let matching: Vec<&StoredGroup> = snapshot
            .groups
            .iter()
            .filter(|s| {
                let g = &s.group;
                within(&names, &g.name)
                    && within(&guids, &g.guid)
                    && running.is_none_or(|r| g.running_default == r)
                    && staging.is_none_or(|r| g.staging_default == r)
                    && overlaps(&running_spaces, &g.running_space_guids)
                    && overlaps(&staging_spaces, &g.staging_space_guids)
            })
            .collect();
        let total = matching.len();
        let pages = total.div_ceil(per_page).max(1);
        let mut resources = Vec::new();
        for g in matching
            .iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
        {
            match resource(version, &g.group) {
                Ok(r) => resources.push(r),
                Err(resp) => return resp,
            }
        }
        let link = |p: usize| {
            Some(Link {
                href: format!(
                    "/networking/{version}/external/security_groups?page={p}&per_page={per_page}"
                ),
            })
        };
        Response::json(
            200,
            &V3List {
                pagination: Pagination {
                    total_results: total as u64,
                    total_pages: pages as u64,
                    first: link(1),
                    last: link(pages),
                    next: if page < pages { link(page + 1) } else { None },
                    previous: if page > 1 { link(page - 1) } else { None },
                },
                resources,
            },
        )
    }

    fn create(&self, version: &str, req: &Request) -> Response {
        let group = match self.parse_create(req) {
            Ok(g) => g,
            Err(resp) => return resp,
        };
        match self.store.create(&group) {
            Ok(stored) => match resource(version, &stored.group) {
                Ok(r) => Response::json(201, &r),
                Err(resp) => resp,
            },
            Err(e) => store_failed("create", e),
        }
    }

    fn parse_create(&self, req: &Request) -> Result<SecurityGroup, Response> {
        let body = body_object(req)?;
        refuse_unknown(
            &body,
            &["name", "rules", "globally_enabled", "relationships"],
            "security group",
        )?;
        let name = name_of(body.get("name").unwrap_or(&Value::Null))?;
        let rules = canonical_rules(body.get("rules").unwrap_or(&json!([])))?;
        let enabled = match body.get("globally_enabled") {
            Some(v) => globally_enabled(v, GloballyEnabled::default())?,
            None => GloballyEnabled::default(),
        };
        let (mut running, mut staging) = (Vec::new(), Vec::new());
        if let Some(rel) = body.get("relationships") {
            let Some(rel) = rel.as_object() else {
                return Err(unprocessable("Relationships must be an object"));
            };
            refuse_unknown(rel, &["running_spaces", "staging_spaces"], "relationships")?;
            if let Some(v) = rel.get("running_spaces") {
                running = space_guids(v, "running_spaces")?;
            }
            if let Some(v) = rel.get("staging_spaces") {
                staging = space_guids(v, "staging_spaces")?;
            }
        }
        Ok(SecurityGroup {
            guid: uuid::Uuid::new_v4().to_string(),
            name,
            rules,
            staging_default: enabled.staging,
            running_default: enabled.running,
            staging_space_guids: staging,
            running_space_guids: running,
        })
    }

    fn update(&self, version: &str, guid: &str, req: &Request) -> Response {
        let body = match body_object(req) {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        if let Err(resp) = refuse_unknown(&body, &["name", "rules", "globally_enabled"], "update") {
            return resp;
        }
        let name = match body.get("name").map(name_of).transpose() {
            Ok(n) => n,
            Err(resp) => return resp,
        };
        let rules = match body.get("rules").map(canonical_rules).transpose() {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        // `globally_enabled` may name one lifecycle only: checked here, merged with the row.
        let enabled = body.get("globally_enabled").cloned();
        if let Some(v) = &enabled {
            if let Err(resp) = globally_enabled(v, GloballyEnabled::default()) {
                return resp;
            }
        }
        let edit = move |g: &mut SecurityGroup| -> Result<(), AsgError> {
            if let Some(n) = &name {
                g.name = n.clone();
            }
            if let Some(r) = &rules {
                g.rules = r.clone();
            }
            if let Some(v) = &enabled {
                let current = GloballyEnabled {
                    running: g.running_default,
                    staging: g.staging_default,
                };
                if let Ok(e) = globally_enabled(v, current) {
                    g.running_default = e.running;
                    g.staging_default = e.staging;
                }
            }
            Ok(())
        };
        match self.store.modify(guid, &edit) {
            Ok(stored) => match resource(version, &stored.group) {
                Ok(r) => Response::json(200, &r),
                Err(resp) => resp,
            },
            Err(e) => store_failed("update", e),
        }
    }

    fn bind(
        &self,
        version: &str,
        guid: &str,
        lifecycle: Lifecycle,
        relationship: &str,
        req: &Request,
    ) -> Response {
        let spaces = match body_object(req)
            .map(Value::Object)
            .and_then(|v| space_guids(&v, relationship))
        {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let edit = move |g: &mut SecurityGroup| -> Result<(), AsgError> {
            for s in &spaces {
                bind(g, lifecycle, s);
            }
            Ok(())
        };
        match self.store.modify(guid, &edit) {
            Ok(stored) => {
                let bound = match lifecycle {
                    Lifecycle::Running => &stored.group.running_space_guids,
                    Lifecycle::Staging => &stored.group.staging_space_guids,
                };
                Response::json(
                    200,
                    &json!({
                        "data": ToMany::of(bound).data,
                        "links": {"self": {"href": format!(
                            "{}/relationships/{relationship}",
                            self_href(version, guid)
                        )}},
                    }),
                )
            }
            Err(e) => store_failed("bind", e),
        }
    }

    fn unbind(&self, guid: &str, lifecycle: Lifecycle, space: &str) -> Response {
        let edit = |g: &mut SecurityGroup| -> Result<(), AsgError> {
            unbind(g, lifecycle, space);
            Ok(())
        };
        match self.store.modify(guid, &edit) {
            Ok(_) => Response::new(204),
            Err(e) => store_failed("unbind", e),
        }
    }
}
