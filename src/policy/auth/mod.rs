//! Authentication of external API callers. Three modes, chosen in config: `uaa` (check_token per
//! request), `jwt` (signed tokens verified locally), `tokens` (static bearer tokens from a file).

/// Who called, and with which scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub` of the token (a user id or a client id).
    pub subject: String,
    /// `user_name` when the token has one; whoami shows it, falling back to `subject`.
    pub user_name: String,
    pub scopes: Vec<String>,
}

pub const SCOPE_ADMIN: &str = "network.admin";
pub const SCOPE_WRITE: &str = "network.write";

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == SCOPE_ADMIN)
    }
    pub fn has_any_scope(&self, allowed: &[&str]) -> bool {
        self.scopes.iter().any(|s| allowed.contains(&s.as_str()))
    }
}

/// Why a token was not accepted. Every variant is answered with 401
/// `{"error": "failed to verify token with uaa"}` by the API; the text goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub trait Authenticator: Send + Sync {
    /// Verifies a bearer token (without the `Bearer ` prefix).
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

pub mod config;
pub mod jwt;
pub mod tokens;
pub mod uaa;

pub use config::{build, AuthConfig, AuthMode};

/// `application/x-www-form-urlencoded` encoding of one value (RFC 3986 unreserved characters
/// pass through, everything else is `%XX`).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `Authorization: Basic ...` value for a client id and secret (UAA's client authentication), as
/// the original's `SetBasicAuth` sent it: `id:secret`, not form-encoded.
pub fn basic_auth(client: &str, secret: &str) -> String {
    use base64::Engine;
    let raw = format!("{client}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}
