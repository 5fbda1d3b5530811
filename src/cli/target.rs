//! Where the CLI talks to and as whom: flags, then `NETMAN_*` environment variables, then the cf
//! CLI's own config (`$CF_HOME/.cf/config.json`, else `$HOME/.cf/config.json`), so a logged-in cf
//! user needs nothing more.

use crate::http::client::ClientTls;
use serde::Deserialize;
use std::path::PathBuf;

/// The global options as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalFlags {
    pub api: Option<String>,
    pub token: Option<String>,
    pub skip_ssl_validation: bool,
    pub ca_cert: Option<String>,
    pub cc_api: Option<String>,
    pub app_guids: bool,
}

/// The parts of the cf CLI config this CLI reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CfConfig {
    #[serde(rename = "Target", default)]
    pub target: String,
    #[serde(rename = "AccessToken", default)]
    pub access_token: String,
    #[serde(rename = "SSLDisabled", default)]
    pub ssl_disabled: bool,
    #[serde(rename = "OrganizationFields", default)]
    pub organization: CfEntity,
    #[serde(rename = "SpaceFields", default)]
    pub space: CfEntity,
    #[serde(rename = "RefreshToken", default)]
    pub refresh_token: String,
    #[serde(rename = "UaaEndpoint", default)]
    pub uaa_endpoint: String,
    #[serde(rename = "AuthorizationEndpoint", default)]
    pub authorization_endpoint: String,
    #[serde(rename = "UAAOAuthClient", default)]
    pub uaa_client: String,
    #[serde(rename = "UAAOAuthClientSecret", default)]
    pub uaa_client_secret: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CfEntity {
    #[serde(rename = "GUID", default)]
    pub guid: String,
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// An org or space the commands work in: by name (resolved through the CC), or also by GUID
/// (as the cf config records it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub guid: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL of the policy server's external API (or of the CF API that routes `/networking`).
    pub api: String,
    pub token: String,
    pub tls: ClientTls,
    /// The Cloud Controller, when app names can be resolved.
    pub cc: Option<String>,
    pub org: Option<Named>,
    pub space: Option<Named>,
    /// Arguments are app GUIDs (no CC, or `--app-guids`).
    pub guids: bool,
}

/// Where the cf CLI keeps its config.
pub fn cf_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let home = env("CF_HOME")
        .filter(|h| !h.is_empty())
        .or_else(|| env("HOME"))?;
    Some(PathBuf::from(home).join(".cf").join("config.json"))
}

pub fn read_cf_config(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<CfConfig>, String> {
    let Some(path) = cf_config_path(env) else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            format!(
                "reading the cf CLI config {}: {e}. Fix or remove the file, or run 'cf login' again.",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading the cf CLI config {}: {e}", path.display())),
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `bearer eyJ...` (as the cf config stores it) or a bare token.
pub fn strip_bearer(token: &str) -> &str {
    let t = token.trim();
    for prefix in ["bearer ", "Bearer ", "BEARER "] {
        if let Some(rest) = t.strip_prefix(prefix) {
            return rest.trim();
        }
    }
    t
}

pub fn resolve(
    flags: &GlobalFlags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Target, String> {
    let cf = read_cf_config(env)?.unwrap_or_default();
    let cf_target = nonempty(Some(cf.target.clone()));

    let explicit_api = nonempty(flags.api.clone()).or_else(|| nonempty(env("NETMAN_API")));
    let from_cf = explicit_api.is_none() && cf_target.is_some();
    let api = explicit_api.or(cf_target.clone()).ok_or(
        "No API endpoint set. Use '--api URL' or set NETMAN_API, or log in with 'cf login' first.",
    )?;
    if !(api.starts_with("http://") || api.starts_with("https://")) {
        return Err(format!(
            "The API endpoint {api:?} is not a URL. Give it as https://host[:port] (or http://)."
        ));
    }
    let given_token = nonempty(flags.token.clone()).or_else(|| nonempty(env("NETMAN_TOKEN")));
    let token_from_cf = given_token.is_none();
    let token = given_token
        .or_else(|| nonempty(Some(cf.access_token.clone())))
        .ok_or(
            "Not logged in. Use '--token TOKEN' or set NETMAN_TOKEN, or log in with 'cf login' first.",
        )?;
    let mut token = strip_bearer(&token).to_string();

    let skip = flags.skip_ssl_validation
        || env("NETMAN_SKIP_SSL_VALIDATION").is_some_and(|v| truthy(&v))
        || (from_cf && cf.ssl_disabled);
    let ca_cert_file = nonempty(flags.ca_cert.clone()).or_else(|| nonempty(env("NETMAN_CA_CERT")));

    // The cf CLI's access token expires after minutes; renew it with its refresh token, as cf
    // itself does (the cf config file is left alone).
    if token_from_cf && token_expired(&token, now()) {
        token = refresh_cf_token(&cf, skip || cf.ssl_disabled)?;
    }

    // The CC: given explicitly, or the cf target when the policy server is reached through it.
    let cc = nonempty(flags.cc_api.clone())
        .or_else(|| nonempty(env("NETMAN_CC_API")))
        .or_else(|| if from_cf { cf_target.clone() } else { None })
        .map(|u| u.trim_end_matches('/').to_string());

    let named = |env_name: &str, cf_entity: &CfEntity| -> Option<Named> {
        match nonempty(env(env_name)) {
            Some(name) => Some(Named { name, guid: None }),
            None if !cf_entity.name.is_empty() || !cf_entity.guid.is_empty() => Some(Named {
                name: cf_entity.name.clone(),
                guid: nonempty(Some(cf_entity.guid.clone())),
            }),
            None => None,
        }
    };
    let org = named("NETMAN_ORG", &cf.organization);
    let space = match nonempty(env("NETMAN_SPACE")) {
        Some(name) => Some(Named { name, guid: None }),
        // The cf space belongs to the cf org: ignore it when another org is chosen.
        None if env("NETMAN_ORG").is_some_and(|o| !o.trim().is_empty()) => None,
        None => named("NETMAN_SPACE", &cf.space),
    };

    Ok(Target {
        api: api.trim_end_matches('/').to_string(),
        token,
        tls: ClientTls {
            ca_cert_file,
            skip_verification: skip,
            ..Default::default()
        },
        guids: flags.app_guids || cc.is_none(),
        cc,
        org,
        space,
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether a JWT's `exp` is past (or within 10 s). Opaque tokens never count as expired.
pub fn token_expired(token: &str, now: i64) -> bool {
    jwt_claims(token)
        .and_then(|c| c.get("exp").and_then(|e| e.as_i64()))
        .is_some_and(|exp| exp <= now + 10)
}

/// `POST <UaaEndpoint>/oauth/token` with `grant_type=refresh_token`, as the cf CLI's client.
fn refresh_cf_token(cf: &CfConfig, skip_ssl_validation: bool) -> Result<String, String> {
    let expired = |why: String| {
        format!("Your cf login has expired and could not be renewed ({why}). Log in again with 'cf login'.")
    };
    let uaa = nonempty(Some(cf.uaa_endpoint.clone()))
        .or_else(|| nonempty(Some(cf.authorization_endpoint.clone())))
        .ok_or_else(|| expired("the cf config has no UaaEndpoint".into()))?;
    if cf.refresh_token.is_empty() {
        return Err(expired("the cf config has no RefreshToken".into()));
    }
    let client = if cf.uaa_client.is_empty() {
        "cf"
    } else {
        &cf.uaa_client
    };
    let agent = crate::http::client::agent(
        &ClientTls {
            skip_verification: skip_ssl_validation,
            ..Default::default()
        },
        std::time::Duration::from_secs(30),
    )?;
    let url = format!("{}/oauth/token", uaa.trim_end_matches('/'));
    let mut resp = agent
        .post(&url)
        .header(
            "Authorization",
            crate::policy::auth::basic_auth(client, &cf.uaa_client_secret),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "application/json")
        .send(format!(
            "grant_type=refresh_token&refresh_token={}",
            crate::policy::auth::form_encode(&cf.refresh_token)
        ))
        .map_err(|e| expired(format!("{url}: {e}")))?;
    let status = resp.status().as_u16();
    let body = crate::http::client::body_string(&mut resp, 1 << 20).map_err(expired)?;
    if status != 200 {
        return Err(expired(format!("{url} answered {status}: {}", body.trim())));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| expired(format!("{url}: {e}")))?;
    v["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| expired(format!("{url}: no access_token")))
}

/// A user name for messages (`Listing policies as <user>...`): the `user_name` (or `sub`,
/// `client_id`) claim of a JWT access token, read without verification; `None` for opaque tokens.
pub fn user_from_token(token: &str) -> Option<String> {
    let claims = jwt_claims(token)?;
    ["user_name", "sub", "client_id"]
        .iter()
        .find_map(|k| {
            claims
                .get(*k)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn flags_beat_env_and_bearer_is_stripped() {
        let env = env_of(&[
            ("NETMAN_API", "http://env:1"),
            ("NETMAN_TOKEN", "bearer env-tok"),
        ]);
        let t = resolve(&GlobalFlags::default(), &env).unwrap();
        assert_eq!(
            (t.api.as_str(), t.token.as_str()),
            ("http://env:1", "env-tok")
        );
        assert!(t.guids && t.cc.is_none());
        let flags = GlobalFlags {
            api: Some("https://flag:2/".into()),
            token: Some("flag-tok".into()),
            ..Default::default()
        };
        let t = resolve(&flags, &env).unwrap();
        assert_eq!(
            (t.api.as_str(), t.token.as_str()),
            ("https://flag:2", "flag-tok")
        );
    }

    #[test]
    fn missing_target_or_token_says_what_to_do() {
        let err = resolve(&GlobalFlags::default(), &env_of(&[])).unwrap_err();
        assert!(err.contains("--api") && err.contains("cf login"), "{err}");
        let err = resolve(
            &GlobalFlags::default(),
            &env_of(&[("NETMAN_API", "http://x")]),
        )
        .unwrap_err();
        assert!(err.contains("--token"), "{err}");
        let err = resolve(
            &GlobalFlags::default(),
            &env_of(&[("NETMAN_API", "x:80"), ("NETMAN_TOKEN", "t")]),
        )
        .unwrap_err();
        assert!(err.contains("not a URL"), "{err}");
    }

    #[test]
    fn user_name_comes_from_a_jwt_payload() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let tok = format!(
            "{}.{}.sig",
            enc("{}"),
            enc(r#"{"user_name":"admin","sub":"x"}"#)
        );
        assert_eq!(user_from_token(&tok).as_deref(), Some("admin"));
        let tok = format!("{}.{}.sig", enc("{}"), enc(r#"{"client_id":"cli"}"#));
        assert_eq!(user_from_token(&tok).as_deref(), Some("cli"));
        assert_eq!(user_from_token("opaque-token"), None);
        let exp = |e: i64| format!("{}.{}.sig", enc("{}"), enc(&format!(r#"{{"exp":{e}}}"#)));
        assert!(token_expired(&exp(1000), 2000));
        assert!(token_expired(&exp(2005), 2000)); // about to expire
        assert!(!token_expired(&exp(3000), 2000));
        assert!(!token_expired("opaque-token", 2000));
    }
}
