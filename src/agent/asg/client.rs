//! The policy server's security groups as the agent fetches them (internal API, mutual TLS):
//! `GET /networking/v1/internal/security_groups?space_guids=..&limit=..&from=..` page by page,
//! and the cheap version check that says whether anything changed since the last fetch.

use crate::agent::client::{get_any_status, get_watch, Watched};
use crate::agent::Error;
use crate::api::security_groups::{SecurityGroup, SecurityGroupsResponse};
use crate::http::client::{agent, ClientTls};
use crate::policy::auth::form_encode;
use std::collections::BTreeSet;
use std::time::Duration;

/// Where security groups come from. The real one is [`AsgClient`]; tests script one.
pub trait AsgSource: Send + Sync {
    /// The server's security-groups version; `Ok(None)` when it has none (an original policy
    /// server): then the agent fetches every `asg_poll_interval_seconds`, as the original.
    fn version(&self) -> Result<Option<i64>, Error>;
    /// Every group that applies to any of `spaces` (all groups when `spaces` is `None`).
    fn groups(&self, spaces: Option<&BTreeSet<String>>) -> Result<Vec<SecurityGroup>, Error>;
    /// Waits up to `wait` for the version to move from `after` (the watch,
    /// `security_groups_last_updated?wait=&after=`); `Unsupported` on a server without it.
    fn watch(&self, after: i64, wait: Duration) -> Result<Watched, Error> {
        let _ = (after, wait);
        Ok(Watched::Unsupported)
    }
}

pub struct AsgClient {
    agent: ureq::Agent,
    base: String,
    timeout: Duration,
}

/// Groups per page asked for (`limit`; the original agent sends `per_page`, which the server
/// ignores: both are sent).
const PAGE: usize = 5000;
const BODY_LIMIT: u64 = 512 << 20;
/// Longest `space_guids` value sent; a cell with more spaces asks for every group.
const MAX_SPACES_QUERY: usize = 32 * 1024;
/// The version route (404 on a server without it).
pub const VERSION_PATH: &str = "/networking/v1/internal/security_groups_last_updated";

impl AsgClient {
    pub fn new(base_url: &str, tls: &ClientTls, timeout: Duration) -> Result<AsgClient, String> {
        Ok(AsgClient {
            agent: agent(tls, timeout)?,
            base: base_url.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    fn get(&self, path: &str) -> Result<(u16, String), Error> {
        get_any_status(&self.agent, &format!("{}{path}", self.base), BODY_LIMIT)
    }
}

fn status_error(url: String, status: u16, body: &str) -> Error {
    Error::Status {
        url,
        status,
        body: body.chars().take(300).collect(),
    }
}

/// The query naming the spaces, or `None` when they do not fit (ask for everything).
fn spaces_query(spaces: &BTreeSet<String>) -> Option<String> {
    let q = spaces
        .iter()
        .map(|s| form_encode(s))
        .collect::<Vec<_>>()
        .join(",");
    (q.len() <= MAX_SPACES_QUERY).then_some(q)
}

impl AsgSource for AsgClient {
    fn version(&self) -> Result<Option<i64>, Error> {
        let (status, body) = self.get(VERSION_PATH)?;
        match status {
            200 => body.trim().parse().map(Some).map_err(|_| Error::Decode {
                what: "security_groups_last_updated",
                message: format!("not an integer: {:?}", body.trim()),
            }),
            404 | 405 | 501 => Ok(None),
            _ => Err(status_error(
                format!("{}{VERSION_PATH}", self.base),
                status,
                &body,
            )),
        }
    }

    fn watch(&self, after: i64, wait: Duration) -> Result<Watched, Error> {
        let url = format!(
            "{}{VERSION_PATH}?wait={}&after={after}",
            self.base,
            wait.as_secs()
        );
        get_watch(
            &self.agent,
            url,
            wait + self.timeout,
            "security_groups_last_updated",
        )
    }

    fn groups(&self, spaces: Option<&BTreeSet<String>>) -> Result<Vec<SecurityGroup>, Error> {
        let mut query = format!("per_page={PAGE}&limit={PAGE}");
        if let Some(q) = spaces.and_then(spaces_query) {
            query.push_str("&space_guids=");
            query.push_str(&q);
        }
        let mut out = Vec::new();
        let mut from = 0i64;
        loop {
            let path = match from {
                0 => format!("/networking/v1/internal/security_groups?{query}"),
                f => format!("/networking/v1/internal/security_groups?{query}&from={f}"),
            };
            let (status, body) = self.get(&path)?;
            if status != 200 {
                return Err(status_error(format!("{}{path}", self.base), status, &body));
            }
            let page: SecurityGroupsResponse =
                serde_json::from_str(&body).map_err(|e| Error::Decode {
                    what: "internal security groups",
                    message: format!("decoding response: {e}"),
                })?;
            out.extend(page.security_groups);
            if page.next == 0 {
                return Ok(out);
            }
            if page.next <= from {
                return Err(Error::Decode {
                    what: "internal security groups",
                    message: format!("next {} does not move past from {from}", page.next),
                });
            }
            from = page.next;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spaces_are_encoded_and_too_many_ask_for_everything() {
        let few: std::collections::BTreeSet<String> = ["a b".to_string(), "c".into()].into();
        assert_eq!(super::spaces_query(&few).as_deref(), Some("a%20b,c"));
        let many = (0..2000).map(|i| format!("{i:036}")).collect();
        assert_eq!(super::spaces_query(&many), None);
    }
}
