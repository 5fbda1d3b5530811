//! The `auth` section of the policy server's config, its checks, and building the authenticator.
//!
//! ```json
//! "auth": {"mode": "uaa", "uaa_url": "https://uaa.service.cf.internal:8443",
//!          "uaa_client": "network-policy", "uaa_client_secret": "...", "uaa_ca_cert_file": "/path/uaa-ca.crt"}
//! "auth": {"mode": "jwt", "jwt_jwks_file": "/path/token_keys.json", "jwt_issuer": "https://uaa.example.com/oauth/token",
//!          "jwt_audience": "network-policy"}
//! "auth": {"mode": "tokens", "tokens_file": "/path/tokens.json"}
//! ```

use super::jwt::{JwtAuthenticator, JwtConfig};
use super::tokens::{check_listen_host, StaticTokens};
use super::uaa::{UaaAuthenticator, UaaClientConfig};
use super::Authenticator;
use crate::config::{require_nonempty, require_positive, require_readable_file, Validate};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Uaa,
    Jwt,
    Tokens,
}

fn default_timeout() -> u64 {
    5
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,

    /// `uaa`: base URL of UAA (`https://host:port`).
    #[serde(default)]
    pub uaa_url: Option<String>,
    /// `uaa`: port appended to `uaa_url` when set (the original kept them apart).
    #[serde(default)]
    pub uaa_port: Option<u16>,
    #[serde(default)]
    pub uaa_client: Option<String>,
    #[serde(default)]
    pub uaa_client_secret: Option<String>,
    /// CA that signed UAA's certificate (PEM).
    #[serde(default)]
    pub uaa_ca_cert_file: Option<String>,
    #[serde(default)]
    pub skip_ssl_validation: bool,
    /// Timeout of one UAA request.
    #[serde(default = "default_timeout")]
    pub request_timeout_seconds: u64,

    /// `jwt`: PEM public keys (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    #[serde(default)]
    pub jwt_public_key_files: Vec<String>,
    /// `jwt`: a JWKS document (`{"keys": [...]}`, UAA's `/token_keys`).
    #[serde(default)]
    pub jwt_jwks_file: Option<String>,
    #[serde(default)]
    pub jwt_issuer: Option<String>,
    #[serde(default)]
    pub jwt_audience: Option<String>,

    /// `tokens`: the static tokens file.
    #[serde(default)]
    pub tokens_file: Option<String>,
    /// `tokens`: allow a listen address other than loopback.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

impl AuthConfig {
    /// A `tokens` config for a file (lab, tests).
    pub fn tokens(path: &Path) -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Tokens,
            uaa_url: None,
            uaa_port: None,
            uaa_client: None,
            uaa_client_secret: None,
            uaa_ca_cert_file: None,
            skip_ssl_validation: false,
            request_timeout_seconds: default_timeout(),
            jwt_public_key_files: Vec::new(),
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            tokens_file: Some(path.display().to_string()),
            allow_non_loopback: false,
        }
    }

    /// UAA client settings (`uaa` mode; also what the Cloud Controller client uses for its own
    /// token when the `auth` section has them).
    pub fn uaa_client_config(&self) -> Option<UaaClientConfig> {
        let url = self.uaa_url.as_ref()?;
        let url = match self.uaa_port {
            Some(port) => format!("{}:{port}", url.trim_end_matches('/')),
            None => url.clone(),
        };
        Some(UaaClientConfig {
            url,
            client: self.uaa_client.clone()?,
            client_secret: self.uaa_client_secret.clone().unwrap_or_default(),
            ca_cert_file: self.uaa_ca_cert_file.clone(),
            skip_ssl_validation: self.skip_ssl_validation,
            timeout: Duration::from_secs(self.request_timeout_seconds),
        })
    }

    /// The start-time rule of `tokens` mode: only on loopback unless `allow_non_loopback`.
    /// Other modes accept any address.
    pub fn check_listen_host(&self, listen_host: &str) -> Result<(), String> {
        match self.mode {
            AuthMode::Tokens => check_listen_host(listen_host, self.allow_non_loopback),
            _ => Ok(()),
        }
    }

    fn refuse_keys_of_other_modes(&self) -> Result<(), String> {
        let set: [(&str, bool, AuthMode); 11] = [
            ("uaa_url", self.uaa_url.is_some(), AuthMode::Uaa),
            ("uaa_port", self.uaa_port.is_some(), AuthMode::Uaa),
            ("uaa_client", self.uaa_client.is_some(), AuthMode::Uaa),
            (
                "uaa_client_secret",
                self.uaa_client_secret.is_some(),
                AuthMode::Uaa,
            ),
            (
                "uaa_ca_cert_file",
                self.uaa_ca_cert_file.is_some(),
                AuthMode::Uaa,
            ),
            (
                "jwt_public_key_files",
                !self.jwt_public_key_files.is_empty(),
                AuthMode::Jwt,
            ),
            ("jwt_jwks_file", self.jwt_jwks_file.is_some(), AuthMode::Jwt),
            ("jwt_issuer", self.jwt_issuer.is_some(), AuthMode::Jwt),
            ("jwt_audience", self.jwt_audience.is_some(), AuthMode::Jwt),
            ("tokens_file", self.tokens_file.is_some(), AuthMode::Tokens),
            (
                "allow_non_loopback",
                self.allow_non_loopback,
                AuthMode::Tokens,
            ),
        ];
        for (key, present, owner) in set {
            // The UAA client keys may also serve the Cloud Controller client in any mode.
            let shared = owner == AuthMode::Uaa;
            if present && owner != self.mode && !shared {
                return Err(format!(
                    "'auth.{key}' belongs to auth mode '{}', but auth.mode is '{}'",
                    mode_name(owner),
                    mode_name(self.mode)
                ));
            }
        }
        Ok(())
    }
}

fn mode_name(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Uaa => "uaa",
        AuthMode::Jwt => "jwt",
        AuthMode::Tokens => "tokens",
    }
}

fn opt<'a>(key: &str, value: &'a Option<String>) -> Result<&'a str, String> {
    let v = value.as_deref().unwrap_or("");
    require_nonempty(key, v)?;
    Ok(v)
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "invalid '{key}': {url:?} is not an http:// or https:// URL"
        ));
    }
    Ok(())
}

impl Validate for AuthConfig {
    fn validate(&self) -> Result<(), String> {
        self.refuse_keys_of_other_modes()?;
        require_positive("auth.request_timeout_seconds", self.request_timeout_seconds)?;
        if let Some(ca) = &self.uaa_ca_cert_file {
            require_readable_file("auth.uaa_ca_cert_file", ca)?;
        }
        match self.mode {
            AuthMode::Uaa => {
                let url = opt("auth.uaa_url", &self.uaa_url)?;
                check_url("auth.uaa_url", url)?;
                opt("auth.uaa_client", &self.uaa_client)?;
                opt("auth.uaa_client_secret", &self.uaa_client_secret)?;
                if self.uaa_port == Some(0) {
                    return Err("invalid 'auth.uaa_port': port must be in 1-65535".into());
                }
            }
            AuthMode::Jwt => {
                if self.jwt_public_key_files.is_empty() && self.jwt_jwks_file.is_none() {
                    return Err(
                        "auth mode 'jwt' needs 'auth.jwt_public_key_files' or 'auth.jwt_jwks_file'"
                            .into(),
                    );
                }
                for f in &self.jwt_public_key_files {
                    require_readable_file("auth.jwt_public_key_files", f)?;
                }
                if let Some(f) = &self.jwt_jwks_file {
                    require_readable_file("auth.jwt_jwks_file", f)?;
                }
                opt("auth.jwt_issuer", &self.jwt_issuer)?;
                if let Some(aud) = &self.jwt_audience {
                    require_nonempty("auth.jwt_audience", aud)?;
                }
            }
            AuthMode::Tokens => {
                let f = opt("auth.tokens_file", &self.tokens_file)?;
                require_readable_file("auth.tokens_file", f)?;
            }
        }
        Ok(())
    }
}

/// Builds the configured authenticator; loads and checks key and token files. Errors name the key.
pub fn build(config: &AuthConfig) -> Result<Arc<dyn Authenticator>, String> {
    config.validate()?;
    Ok(match config.mode {
        AuthMode::Uaa => {
            let client = config
                .uaa_client_config()
                .ok_or("missing required config 'auth.uaa_url'")?;
            Arc::new(UaaAuthenticator::new(&client).map_err(|e| format!("auth (uaa): {e}"))?)
        }
        AuthMode::Jwt => Arc::new(
            JwtAuthenticator::new(&JwtConfig {
                public_key_files: config.jwt_public_key_files.clone(),
                jwks_file: config.jwt_jwks_file.clone(),
                issuer: config.jwt_issuer.clone().unwrap_or_default(),
                audience: config.jwt_audience.clone(),
            })
            .map_err(|e| format!("auth (jwt): {e}"))?,
        ),
        AuthMode::Tokens => {
            let path = config.tokens_file.as_deref().unwrap_or_default();
            Arc::new(
                StaticTokens::load(Path::new(path))
                    .map_err(|e| format!("invalid 'auth.tokens_file': {e}"))?,
            )
        }
    })
}
