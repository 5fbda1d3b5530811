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
