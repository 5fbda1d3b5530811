//! A fake UAA and a fake Cloud Controller in one HTTP server (plain or TLS), speaking their real
//! wire formats, for tests of the policy server's authentication and authorisation and of the
//! `netman` CLI.
//!
//! UAA: `POST /check_token` (client basic auth, form `token=`), `POST /oauth/token`
//! (`grant_type=client_credentials`). CC: `GET /v3/apps`, `/v3/spaces`, `/v3/organizations`
//! (filters `guids`, `names`, `space_guids`, `organization_guids`; `per_page`/`page`; pagination
//! object), `GET /v2/spaces/<guid>`, `GET /v2/spaces?q=..`, `GET /v2/users/<guid>/spaces`
//! (`results-per-page`/`page`, `next_url`). CC routes accept a client token issued by the fake's
//! `/oauth/token` (until it expires) or a user's token. Every request is recorded.

use base64::Engine;
use netman::http::{Request, Response, Server, ServerOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const CLIENT_ID: &str = "network-policy";
pub const CLIENT_SECRET: &str = "network-policy-secret";

#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
    pub sub: String,
    pub user_name: String,
    pub client_id: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct App {
    pub guid: String,
    pub name: String,
    pub space_guid: String,
}

#[derive(Debug, Clone)]
pub struct Space {
    pub guid: String,
    pub name: String,
    pub org_guid: String,
    /// Subjects that are space developers.
    pub developers: Vec<String>,
    /// Other members (auditors, managers): they see the space but are not developers.
    pub members: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Org {
    pub guid: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub raw_query: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Recorded {
    /// Every value of a query parameter.
    pub fn params(&self, name: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Debug)]
pub struct State {
    pub client_id: String,
    pub client_secret: String,
    pub users: Vec<User>,
    pub apps: Vec<App>,
    pub spaces: Vec<Space>,
    pub orgs: Vec<Org>,
    /// `expires_in` of issued client tokens.
    pub token_ttl_seconds: u64,
    /// Client-credentials tokens issued and when they stop being accepted.
    pub issued: Vec<(String, Instant)>,
    /// Caps `per_page` / `results-per-page` to force pagination.
    pub max_page_size: Option<usize>,
    /// Answer every UAA request with 500.
    pub fail_uaa: bool,
    /// Answer every CC request with 500.
    pub fail_cc: bool,
    pub requests: Vec<Recorded>,
    /// `grant_type=refresh_token` (client `cf`, empty secret, as the cf CLI logs in): refresh
    /// token -> the user access token it yields.
    pub refresh_tokens: Vec<(String, String)>,
    /// Security groups as `GET /v3/security_groups` lists them (v3 resources).
    pub security_groups: Vec<Value>,
    /// `GET /internal/v4/asg_latest_update`'s `last_update`; `None`: 404 (an older CC).
    pub asg_latest_update: Option<String>,
    /// Once, after serving this page of `/v3/security_groups`: the groups and the timestamp
    /// become these (a change between two page reads).
    pub asg_change_after_page: Option<(usize, Vec<Value>, String)>,
}

pub struct FakeCf {
    /// Base URL of both UAA and CC (`http://127.0.0.1:port` or `https://...`).
    pub url: String,
    /// The CA of the TLS certificate (TLS fakes only).
    pub ca_cert_file: Option<PathBuf>,
    pub state: Arc<Mutex<State>>,
    /// The CC's internal listener with mutual TLS (`start_with_internal_mtls` only): its URL and
    /// a client certificate and key its CA issued.
    pub internal: Option<(String, PathBuf, PathBuf)>,
    server: Option<Server>,
    internal_server: Option<Server>,
    _dir: Option<tempfile::TempDir>,
}

impl FakeCf {
    /// A plain-HTTP fake with no users, apps, spaces or orgs.
    pub fn start() -> FakeCf {
        Self::start_inner(false, false)
    }

    /// A TLS fake; its CA is in `ca_cert_file`.
    pub fn start_tls() -> FakeCf {
        Self::start_inner(true, false)
    }

    /// A TLS fake with a second listener, the CC's internal one, that requires a client
    /// certificate from its CA (`internal`); both serve the same state.
    pub fn start_with_internal_mtls() -> FakeCf {
        Self::start_inner(true, true)
    }

    fn start_inner(tls: bool, internal_mtls: bool) -> FakeCf {
        let state = Arc::new(Mutex::new(State {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            users: Vec::new(),
            apps: Vec::new(),
            spaces: Vec::new(),
            orgs: Vec::new(),
            token_ttl_seconds: 43199,
            issued: Vec::new(),
            max_page_size: None,
            fail_uaa: false,
            fail_cc: false,
            requests: Vec::new(),
            refresh_tokens: Vec::new(),
            security_groups: Vec::new(),
            asg_latest_update: None,
            asg_change_after_page: None,
        }));
        let mut options = ServerOptions {
            workers: 8,
            // Short, so that dropping the fake is not held up by a client's idle keep-alive.
            idle_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let mut internal_options = None;
        let mut client = None;
        let (dir, ca) = if tls {
            let dir = tempfile::tempdir().unwrap();
            let ca = netman::pki::Ca::new("fake cf CA").unwrap();
            let files = ca
                .write_issued(
                    dir.path(),
                    "fake-cf",
                    "fake-cf",
                    &["127.0.0.1", "localhost"],
                    netman::pki::Usage::Server,
                )
                .unwrap();
            options.tls = Some(netman::tls::server_config(&files.cert, &files.key, None).unwrap());
            let ca_file = ca.write_ca(dir.path()).unwrap();
            if internal_mtls {
                let issued = ca
                    .write_issued(
                        dir.path(),
                        "policy-server",
                        "policy-server",
                        &[],
                        netman::pki::Usage::Client,
                    )
                    .unwrap();
                client = Some((issued.cert, issued.key));
                internal_options = Some(ServerOptions {
                    tls: Some(
                        netman::tls::server_config(&files.cert, &files.key, Some(&ca_file))
                            .unwrap(),
                    ),
                    ..options.clone()
                });
            }
            (Some(dir), Some(ca_file))
        } else {
            (None, None)
        };
        let handler_state = Arc::clone(&state);
        let base = Arc::new(Mutex::new(String::new()));
        let handler_base = Arc::clone(&base);
        let handler = move |req: &Request| {
            let base = handler_base.lock().unwrap().clone();
            handle(&handler_state, &base, req)
        };
        let internal_server =
            internal_options.map(|o| Server::start("127.0.0.1:0", o, handler.clone()).unwrap());
        let server = Server::start("127.0.0.1:0", options, handler).unwrap();
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}", server.local_addr().port());
        *base.lock().unwrap() = url.clone();
        let internal = internal_server
            .as_ref()
            .zip(client)
            .map(|(s, (cert, key))| {
                (
                    format!("https://127.0.0.1:{}", s.local_addr().port()),
                    cert,
                    key,
                )
            });
        FakeCf {
            url,
            ca_cert_file: ca,
            state,
            internal,
            server: Some(server),
            internal_server,
            _dir: dir,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_user(&self, token: &str, sub: &str, user_name: &str, scopes: &[&str]) {
        self.state().users.push(User {
            token: token.into(),
            sub: sub.into(),
            user_name: user_name.into(),
            client_id: "cf".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        });
    }

    pub fn add_org(&self, guid: &str, name: &str) {
        self.state().orgs.push(Org {
            guid: guid.into(),
            name: name.into(),
        });
    }

    pub fn add_space(&self, guid: &str, name: &str, org_guid: &str, developers: &[&str]) {
        self.state().spaces.push(Space {
            guid: guid.into(),
            name: name.into(),
            org_guid: org_guid.into(),
            developers: developers.iter().map(|s| s.to_string()).collect(),
            members: Vec::new(),
        });
    }

    /// Adds `subject` as a non-developer member (e.g. auditor) of a space.
    pub fn add_member(&self, space_guid: &str, subject: &str) {
        let mut s = self.state();
        let space = s
            .spaces
            .iter_mut()
            .find(|sp| sp.guid == space_guid)
            .unwrap();
        space.members.push(subject.into());
    }

    pub fn add_app(&self, guid: &str, name: &str, space_guid: &str) {
        self.state().apps.push(App {
            guid: guid.into(),
            name: name.into(),
            space_guid: space_guid.into(),
        });
    }

    pub fn remove_app(&self, guid: &str) {
        self.state().apps.retain(|a| a.guid != guid);
    }

    /// UAA and CC both answer 500 (or stop doing so).
    pub fn set_failing(&self, failing: bool) {
        let mut s = self.state();
        s.fail_uaa = failing;
        s.fail_cc = failing;
    }

    /// Forgets every issued client token: the CC answers 401 to them from now on.
    pub fn revoke_client_tokens(&self) {
        self.state().issued.clear();
    }

    /// Lets the cf CLI's client (`cf`, empty secret) trade `refresh` for `access_token`.
    pub fn add_refresh_token(&self, refresh: &str, access_token: &str) {
        self.state()
            .refresh_tokens
            .push((refresh.into(), access_token.into()));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// Recorded requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }
}

impl Drop for FakeCf {
    fn drop(&mut self) {
        for server in [self.server.take(), self.internal_server.take()]
            .into_iter()
            .flatten()
        {
            server.shutdown();
        }
    }
}

// ---- request handling -----------------------------------------------------------------------

fn handle(state: &Mutex<State>, base: &str, req: &Request) -> Response {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.requests.push(Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        raw_query: req.raw_query.clone(),
        authorization: req.header("authorization").map(str::to_string),
        content_type: req.header("content-type").map(str::to_string),
        body: String::from_utf8_lossy(&req.body).into_owned(),
    });
    let path = req.path.as_str();
    let uaa = path == "/check_token" || path == "/oauth/token";
    if uaa && s.fail_uaa {
        return Response::error(500, "fake UAA told to fail");
    }
    if !uaa && s.fail_cc {
        return v3_error(500, "CF-ServerError", "An unknown error occurred.", 10001);
    }
    match (req.method.as_str(), path) {
        ("POST", "/check_token") => check_token(&s, req),
        ("POST", "/oauth/token") => oauth_token(&mut s, req),
        ("GET", "/internal/v4/asg_latest_update") => match &s.asg_latest_update {
            Some(t) => Response::json(200, &json!({ "last_update": t })),
            None => v3_error(404, "CF-NotFound", "Unknown request", 10000),
        },
        ("GET", "/v3/security_groups") => {
            if let Err(resp) = cc_authorized(&s, req) {
                return resp;
            }
            let resp = v3_list(&s, base, req, s.security_groups.clone());
            let page = number(req, "page", 1).unwrap_or(1);
            if s.asg_change_after_page
                .as_ref()
                .is_some_and(|(p, _, _)| *p == page)
            {
                let (_, groups, stamp) = s.asg_change_after_page.take().unwrap();
                s.security_groups = groups;
                s.asg_latest_update = Some(stamp);
            }
            resp
        }
        ("GET", _) => {
            if let Err(resp) = cc_authorized(&s, req) {
                return resp;
            }
            cc_get(&s, base, req)
        }
        _ => Response::error(404, "not found"),
    }
}

fn form(req: &Request) -> Vec<(String, String)> {
    netman::http::parse_query(&String::from_utf8_lossy(&req.body))
}

fn basic_credentials(req: &Request) -> Option<String> {
    let encoded = req.header("authorization")?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    String::from_utf8(decoded).ok()
}

fn client_authenticated(s: &State, req: &Request) -> bool {
    basic_credentials(req) == Some(format!("{}:{}", s.client_id, s.client_secret))
}

fn uaa_error(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn check_token(s: &State, req: &Request) -> Response {
    if !client_authenticated(s, req) {
        return uaa_error(401, "unauthorized", "Bad credentials");
    }
    if !req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return uaa_error(415, "unsupported_media_type", "Content type not supported");
    }
    let form = form(req);
    let Some(token) = form.iter().find(|(k, _)| k == "token").map(|(_, v)| v) else {
        return uaa_error(400, "invalid_request", "Missing token parameter");
    };
    let Some(user) = s.users.iter().find(|u| &u.token == token) else {
        return uaa_error(
            400,
            "invalid_token",
            "The token expired, was revoked, or the token ID is incorrect.",
        );
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Response::json(
        200,
        &json!({
            "user_id": user.sub,
            "user_name": user.user_name,
            "email": format!("{}@example.com", user.user_name),
            "client_id": user.client_id,
            "exp": now + 600,
            "scope": user.scopes,
            "jti": format!("jti-{}", user.sub),
            "aud": ["cloud_controller", "network", "openid"],
            "sub": user.sub,
            "iss": "https://uaa.example.com/oauth/token",
            "iat": now,
            "cid": user.client_id,
            "grant_type": "password",
            "azp": user.client_id,
            "auth_time": now,
            "zid": "uaa",
            "rev_sig": "a1b2c3d4",
            "origin": "uaa",
            "revocable": false
        }),
    )
}

fn oauth_token(s: &mut State, req: &Request) -> Response {
    let form = form(req);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let grant = field("grant_type");
    if grant == Some("refresh_token") {
        if basic_credentials(req).as_deref() != Some("cf:") {
            return uaa_error(401, "unauthorized", "Bad credentials");
        }
        let refresh = field("refresh_token").unwrap_or_default();
        let Some((_, access)) = s.refresh_tokens.iter().find(|(r, _)| r == refresh) else {
            return uaa_error(401, "invalid_token", "Invalid refresh token (expired)");
        };
        return Response::json(
            200,
            &json!({
                "access_token": access,
                "token_type": "bearer",
                "refresh_token": refresh,
                "expires_in": 1199,
                "scope": "openid cloud_controller.read network.admin",
                "jti": uuid::Uuid::new_v4().to_string(),
            }),
        );
    }
    if !client_authenticated(s, req) {
        return uaa_error(401, "unauthorized", "Bad credentials");
    }
    if grant != Some("client_credentials") {
        return uaa_error(400, "unsupported_grant_type", "Unsupported grant type");
    }
    let token = format!("client-token-{}", uuid::Uuid::new_v4());
    let ttl = s.token_ttl_seconds;
    s.issued
        .push((token.clone(), Instant::now() + Duration::from_secs(ttl)));
    Response::json(
        200,
        &json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": ttl,
            "scope": "cloud_controller.admin_read_only uaa.resource",
            "jti": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

fn v3_error(status: u16, title: &str, detail: &str, code: u32) -> Response {
    Response::json(
        status,
        &json!({"errors": [{"detail": detail, "title": title, "code": code}]}),
    )
}

fn v2_error(status: u16, error_code: &str, description: &str, code: u32) -> Response {
    Response::json(
        status,
        &json!({"description": description, "error_code": error_code, "code": code}),
    )
}

fn cc_authorized(s: &State, req: &Request) -> Result<(), Response> {
    let token = req.header("authorization").and_then(|h| {
        h.strip_prefix("bearer ")
            .or_else(|| h.strip_prefix("Bearer "))
    });
    let now = Instant::now();
    let ok = token.is_some_and(|t| {
        s.issued.iter().any(|(i, until)| i == t && now < *until)
            || s.users.iter().any(|u| u.token == t)
    });
    if ok {
        return Ok(());
    }
    Err(if req.path.starts_with("/v2/") {
        v2_error(401, "CF-InvalidAuthToken", "Invalid Auth Token", 1000)
    } else {
        v3_error(401, "CF-InvalidAuthToken", "Invalid Auth Token", 1000)
    })
}

/// The comma-separated values of a v3 filter, if given.
fn filter(req: &Request, name: &str) -> Option<Vec<String>> {
    req.query_param(name)
        .map(|v| v.split(',').map(str::to_string).collect())
}

fn number(req: &Request, name: &str, default: usize) -> Result<usize, Response> {
    match req.query_param(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            v3_error(
                400,
                "CF-BadQueryParameter",
                &format!("The query parameter is invalid: {name} must be a positive integer"),
                10005,
            )
        }),
    }
}

fn cc_get(s: &State, base: &str, req: &Request) -> Response {
    let path = req.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["v3", "apps"] => {
            let (guids, names, spaces) = (
                filter(req, "guids"),
                filter(req, "names"),
                filter(req, "space_guids"),
            );
            let items: Vec<Value> = s
                .apps
                .iter()
                .filter(|a| guids.as_ref().is_none_or(|g| g.contains(&a.guid)))
                .filter(|a| names.as_ref().is_none_or(|n| n.contains(&a.name)))
                .filter(|a| spaces.as_ref().is_none_or(|sp| sp.contains(&a.space_guid)))
                .map(|a| app_json(base, a))
                .collect();
            v3_list(s, base, req, items)
        }
        ["v3", "spaces"] => {
            let (guids, names, orgs) = (
                filter(req, "guids"),
                filter(req, "names"),
                filter(req, "organization_guids"),
            );
            let items: Vec<Value> = s
                .spaces
                .iter()
                .filter(|sp| guids.as_ref().is_none_or(|g| g.contains(&sp.guid)))
                .filter(|sp| names.as_ref().is_none_or(|n| n.contains(&sp.name)))
                .filter(|sp| orgs.as_ref().is_none_or(|o| o.contains(&sp.org_guid)))
                .map(|sp| {
                    json!({
                        "guid": sp.guid,
                        "name": sp.name,
                        "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z",
                        "relationships": {"organization": {"data": {"guid": sp.org_guid}},
                                          "quota": {"data": null}},
                        "metadata": {"labels": {}, "annotations": {}},
                        "links": {
                            "self": {"href": format!("{base}/v3/spaces/{}", sp.guid)},
                            "organization": {"href": format!("{base}/v3/organizations/{}", sp.org_guid)},
                        }
                    })
                })
                .collect();
            v3_list(s, base, req, items)
        }
        ["v3", "organizations"] => {
            let (guids, names) = (filter(req, "guids"), filter(req, "names"));
            let items: Vec<Value> = s
                .orgs
                .iter()
                .filter(|o| guids.as_ref().is_none_or(|g| g.contains(&o.guid)))
                .filter(|o| names.as_ref().is_none_or(|n| n.contains(&o.name)))
                .map(|o| {
                    json!({
                        "guid": o.guid,
                        "name": o.name,
                        "suspended": false,
                        "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z",
                        "relationships": {"quota": {"data": {"guid": "default-quota"}}},
                        "metadata": {"labels": {}, "annotations": {}},
                        "links": {"self": {"href": format!("{base}/v3/organizations/{}", o.guid)}}
                    })
                })
                .collect();
            v3_list(s, base, req, items)
        }
        ["v2", "spaces", guid] => match s.spaces.iter().find(|sp| sp.guid == *guid) {
            Some(sp) => Response::json(200, &space_v2(sp)),
            None => v2_error(
                404,
                "CF-SpaceNotFound",
                &format!("The app space could not be found: {guid}"),
                40004,
            ),
        },
        ["v2", "spaces"] => {
            let mut developer = None;
            let mut name = None;
            let mut org = None;
            for (k, v) in &req.query {
                if k != "q" {
                    continue;
                }
                match v.split_once(':') {
                    Some(("developer_guid", x)) => developer = Some(x.to_string()),
                    Some(("name", x)) => name = Some(x.to_string()),
                    Some(("organization_guid", x)) => org = Some(x.to_string()),
                    _ => {
                        return v2_error(
                            400,
                            "CF-BadQueryParameter",
                            &format!("The query parameter is invalid: {v}"),
                            10005,
                        )
                    }
                }
            }
            let items: Vec<Value> = s
                .spaces
                .iter()
                .filter(|sp| developer.as_ref().is_none_or(|d| sp.developers.contains(d)))
                .filter(|sp| name.as_ref().is_none_or(|n| &sp.name == n))
                .filter(|sp| org.as_ref().is_none_or(|o| &sp.org_guid == o))
                .map(space_v2)
                .collect();
            v2_list(s, req, "/v2/spaces", items)
        }
        ["v2", "users", user, "spaces"] => {
            let known = s.users.iter().any(|u| u.sub == *user)
                || s.spaces.iter().any(|sp| {
                    sp.developers.iter().any(|d| d == user) || sp.members.iter().any(|m| m == user)
                });
            if !known {
                return v2_error(
                    404,
                    "CF-UserNotFound",
                    &format!("The user could not be found: {user}"),
                    20003,
                );
            }
            let items: Vec<Value> = s
                .spaces
                .iter()
                .filter(|sp| {
                    sp.developers.iter().any(|d| d == user) || sp.members.iter().any(|m| m == user)
                })
                .map(space_v2)
                .collect();
            v2_list(s, req, &format!("/v2/users/{user}/spaces"), items)
        }
        _ => v3_error(404, "CF-ResourceNotFound", "Unknown request", 10000),
    }
}

fn app_json(base: &str, a: &App) -> Value {
    json!({
        "guid": a.guid,
        "name": a.name,
        "state": "STARTED",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "lifecycle": {"type": "buildpack", "data": {"buildpacks": [], "stack": "cflinuxfs4"}},
        "relationships": {"space": {"data": {"guid": a.space_guid}}},
        "metadata": {"labels": {}, "annotations": {}},
        "links": {
            "self": {"href": format!("{base}/v3/apps/{}", a.guid)},
            "space": {"href": format!("{base}/v3/spaces/{}", a.space_guid)},
            "processes": {"href": format!("{base}/v3/apps/{}/processes", a.guid)},
        }
    })
}

fn space_v2(sp: &Space) -> Value {
    json!({
        "metadata": {
            "guid": sp.guid,
            "url": format!("/v2/spaces/{}", sp.guid),
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z"
        },
        "entity": {
            "name": sp.name,
            "organization_guid": sp.org_guid,
            "space_quota_definition_guid": null,
            "isolation_segment_guid": null,
            "allow_ssh": true,
            "organization_url": format!("/v2/organizations/{}", sp.org_guid),
            "developers_url": format!("/v2/spaces/{}/developers", sp.guid),
            "managers_url": format!("/v2/spaces/{}/managers", sp.guid),
            "auditors_url": format!("/v2/spaces/{}/auditors", sp.guid),
            "apps_url": format!("/v2/spaces/{}/apps", sp.guid)
        }
    })
}

/// (start, end, page count) of `page` (1-based) when pages hold `requested` items, capped by
/// `max_page_size`.
fn page_bounds(s: &State, requested: usize, total: usize, page: usize) -> (usize, usize, usize) {
    let size = s
        .max_page_size
        .map_or(requested, |m| requested.min(m))
        .max(1);
    let pages = total.div_ceil(size).max(1);
    let start = ((page.max(1) - 1) * size).min(total);
    let end = (start + size).min(total);
    (start, end, pages)
}

/// A query value in a pagination link: percent-encoded, with `,` and `:` kept readable.
fn link_value(v: &str) -> String {
    netman::policy::auth::form_encode(v)
        .replace("%2C", ",")
        .replace("%3A", ":")
}

fn v3_list(s: &State, base: &str, req: &Request, items: Vec<Value>) -> Response {
    let (per_page, page) = match (number(req, "per_page", 50), number(req, "page", 1)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if !(1..=5000).contains(&per_page) {
        return v3_error(
            400,
            "CF-BadQueryParameter",
            "The query parameter is invalid: Per page must be between 1 and 5000",
            10005,
        );
    }
    let size = s.max_page_size.map_or(per_page, |m| per_page.min(m));
    let total = items.len();
    let (start, end, pages) = page_bounds(s, per_page, total, page);
    // Links keep the request's filters, with this page's size and number.
    let link = |p: usize| {
        let mut pairs: Vec<String> = req
            .query
            .iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .map(|(k, v)| format!("{k}={}", link_value(v)))
            .collect();
        pairs.push(format!("page={p}"));
        pairs.push(format!("per_page={size}"));
        json!({"href": format!("{base}{}?{}", req.path, pairs.join("&"))})
    };
    let page = page.max(1);
    Response::json(
        200,
        &json!({
            "pagination": {
                "total_results": total,
                "total_pages": pages,
                "first": link(1),
                "last": link(pages),
                "next": if page < pages { link(page + 1) } else { Value::Null },
                "previous": if page > 1 { link(page - 1) } else { Value::Null },
            },
            "resources": items[start..end],
        }),
    )
}

fn v2_list(s: &State, req: &Request, path: &str, items: Vec<Value>) -> Response {
    let (per_page, page) = match (number(req, "results-per-page", 50), number(req, "page", 1)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if !(1..=100).contains(&per_page) {
        return v2_error(
            400,
            "CF-BadQueryParameter",
            "The query parameter is invalid: results-per-page must be between 1 and 100",
            10005,
        );
    }
    let size = s.max_page_size.map_or(per_page, |m| per_page.min(m));
    let total = items.len();
    let (start, end, pages) = page_bounds(s, per_page, total, page);
    let page = page.max(1);
    let qs: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "q")
        .map(|(k, v)| format!("{k}={}", link_value(v)))
        .collect();
    let link = |p: usize| {
        let mut pairs = vec!["order-direction=asc".to_string()];
        pairs.extend(qs.iter().cloned());
        pairs.push(format!("page={p}"));
        pairs.push(format!("results-per-page={size}"));
        format!("{path}?{}", pairs.join("&"))
    };
    Response::json(
        200,
        &json!({
            "total_results": total,
            "total_pages": pages,
            "prev_url": if page > 1 { Value::from(link(page - 1)) } else { Value::Null },
            "next_url": if page < pages { Value::from(link(page + 1)) } else { Value::Null },
            "resources": items[start..end],
        }),
    )
}
