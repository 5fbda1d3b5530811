//! Static bearer tokens from a JSON file, for the local lab and tests:
//! `{"<token>": {"subject": "...", "user_name": "...", "scopes": ["network.admin"]}, ...}`.
//! Meant for loopback listeners only ([`check_listen_host`]).

use super::{AuthError, Authenticator, Identity};
use ring::digest::{digest, SHA256};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    subject: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// Tokens are held as SHA-256 digests: the file's secrets are not kept in memory as such.
pub struct StaticTokens {
    by_digest: HashMap<Vec<u8>, Identity>,
}

fn token_digest(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

impl StaticTokens {
    pub fn load(path: &Path) -> Result<StaticTokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading tokens file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<StaticTokens, String> {
        let entries: BTreeMap<String, Entry> =
            serde_json::from_str(text).map_err(|e| e.to_string())?;
        if entries.is_empty() {
            return Err("no tokens defined".into());
        }
        let mut by_digest = HashMap::new();
        for (token, entry) in entries {
            if token.trim().is_empty() || token.chars().any(char::is_whitespace) {
                return Err(format!(
                    "token for subject {:?} is empty or contains whitespace",
                    entry.subject
                ));
            }
            if entry.subject.trim().is_empty() {
                return Err("an entry has an empty subject".into());
            }
            by_digest.insert(
                token_digest(&token),
                Identity {
                    subject: entry.subject,
                    user_name: entry.user_name,
                    scopes: entry.scopes,
                },
            );
        }
        Ok(StaticTokens { by_digest })
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

impl Authenticator for StaticTokens {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        self.by_digest
            .get(&token_digest(token))
            .cloned()
            .ok_or_else(|| AuthError("token not found in the tokens file".into()))
    }
}

/// Static tokens are for a loopback listener: refuse any other listen host unless
/// `allow_non_loopback` is set. `localhost` counts as loopback; `0.0.0.0` and `::` do not.
pub fn check_listen_host(listen_host: &str, allow_non_loopback: bool) -> Result<(), String> {
    if allow_non_loopback {
        return Ok(());
    }
    let host = listen_host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "auth mode 'tokens' serves static tokens and is refused on the non-loopback listen address {listen_host:?}; listen on 127.0.0.1 or set 'auth.allow_non_loopback' to true"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_rule() {
        for ok in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"] {
            assert!(check_listen_host(ok, false).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0", "::", "10.0.0.1", "example.com", ""] {
            let err = check_listen_host(bad, false).unwrap_err();
            assert!(err.contains("allow_non_loopback"), "{err}");
            assert!(check_listen_host(bad, true).is_ok());
        }
    }
}
