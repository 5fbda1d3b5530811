//! The policy server's internal API as the agent uses it, over mutual TLS.

use super::Error;
use crate::api::policy::{PoliciesResponse, Policy};
use crate::api::policy::{WATCH_HEADER, WATCH_UNAFFECTED};
use crate::http::client::{agent, body_string, ClientTls};
use crate::policy::auth::form_encode;
use std::time::Duration;

/// What a watch of the policy version found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// The version now (the same as `after` when the wait passed without a change).
    Version(i64),
    /// The version moved, but by changes that touched none of the watched apps: the policies
    /// fetched at `after` are still those at this version.
    Unaffected(i64),
    /// The server has no watch (an original policy server): poll instead.
    Unsupported,
}

/// Where policies come from. The real one is [`PolicyClient`]; tests of the loop script one.
pub trait PolicySource: Send + Sync {
    /// `policies_last_updated`: Unix nanoseconds of the last policy change.
    fn last_updated(&self) -> Result<i64, Error>;
    /// Policies whose source or destination is one of `app_ids` (never empty).
    fn policies(&self, app_ids: &[String]) -> Result<Vec<Policy>, Error>;
    /// Waits up to `wait` for a change after version `after` that touches one of `app_ids`
    /// (any change when `app_ids` is empty).
    fn watch(&self, after: i64, wait: Duration, app_ids: &[String]) -> Result<Watched, Error> {
        let _ = (after, wait, app_ids);
        Ok(Watched::Unsupported)
    }
}

pub struct PolicyClient {
    agent: ureq::Agent,
    base: String,
    timeout: Duration,
}

const BODY_LIMIT: u64 = 256 << 20;

impl PolicyClient {
    pub fn new(base_url: &str, tls: &ClientTls, timeout: Duration) -> Result<PolicyClient, String> {
        Ok(PolicyClient {
            agent: agent(tls, timeout)?,
            base: base_url.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    fn get(&self, path_and_query: &str) -> Result<String, Error> {
        let url = format!("{}{path_and_query}", self.base);
        let (status, body) = get_any_status(&self.agent, &url, BODY_LIMIT)?;
        if status != 200 {
            let body: String = body.chars().take(300).collect();
            return Err(Error::Status { url, status, body });
        }
        Ok(body)
    }
}

/// `GET url` on the internal API: the status and the body (read up to `limit` bytes), whatever
/// the status; a failed request or read is an [`Error::Request`] naming the URL.
pub(crate) fn get_any_status(
    agent: &ureq::Agent,
    url: &str,
    limit: u64,
) -> Result<(u16, String), Error> {
    let request = |message: String| Error::Request {
        url: url.to_string(),
        message,
    };
    let mut resp = agent.get(url).call().map_err(|e| request(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = body_string(&mut resp, limit).map_err(request)?;
    Ok((status, body))
}

/// The longest `id=` value one request carries.
const MAX_IDS_QUERY: usize = 32 * 1024;

/// Comma-joined, percent-encoded ids, split so that no batch exceeds `max` bytes (one id longer
/// than that still goes alone).
fn id_batches(ids: &[String], max: usize) -> Vec<String> {
    let mut batches = Vec::new();
    let mut current = String::new();
    for id in ids {
        // Unreserved characters only: the server splits `id` on literal commas.
        let id = form_encode(id);
        if !current.is_empty() && current.len() + 1 + id.len() > max {
            batches.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&id);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

impl PolicySource for PolicyClient {
    fn last_updated(&self) -> Result<i64, Error> {
        let body = self.get("/networking/v1/internal/policies_last_updated")?;
        body.trim().parse().map_err(|_| Error::Decode {
            what: "policies_last_updated",
            message: format!("not an integer: {:?}", body.trim()),
        })
    }

    fn policies(&self, app_ids: &[String]) -> Result<Vec<Policy>, Error> {
        // A busy cell's ids do not fit one URL (HTTP clients cap it near 64 KiB): ask in batches
        // and merge, dropping policies that two batches both returned.
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for batch in id_batches(app_ids, MAX_IDS_QUERY) {
            let body = self.get(&format!("/networking/v1/internal/policies?id={batch}"))?;
            let resp: PoliciesResponse =
                serde_json::from_str(&body).map_err(|e| Error::Decode {
                    what: "internal policies",
                    message: format!("decoding response: {e}"),
                })?;
            for p in resp.policies {
                if seen.insert(p.clone()) {
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    fn watch(&self, after: i64, wait: Duration, app_ids: &[String]) -> Result<Watched, Error> {
        let mut url = format!(
            "{}/networking/v1/internal/policies_last_updated?wait={}&after={after}",
            self.base,
            wait.as_secs()
        );
        // Too many ids for one URL: watch every change instead.
        if let [ids] = id_batches(app_ids, MAX_IDS_QUERY).as_slice() {
            url.push_str("&id=");
            url.push_str(ids);
        }
        get_watch(
            &self.agent,
            url,
            wait + self.timeout,
            "policies_last_updated",
        )
    }
}

/// One watch request (`...?wait=&after=`), given up after `timeout`. A server without the watch
/// (not found, refused, or the parameters ignored: no [`WATCH_HEADER`]) is
/// [`Watched::Unsupported`].
pub(crate) fn get_watch(
    agent: &ureq::Agent,
    url: String,
    timeout: Duration,
    what: &'static str,
) -> Result<Watched, Error> {
    let mut resp = agent
        .get(&url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call()
        .map_err(|e| Error::Request {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    let mark = resp
        .headers()
        .get(WATCH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let marked = mark.is_some();
    let body = body_string(&mut resp, 4096).map_err(|message| Error::Request {
        url: url.clone(),
        message,
    })?;
    match status {
        404 | 405 | 501 => return Ok(Watched::Unsupported),
        400 if !marked => return Ok(Watched::Unsupported),
        200 if !marked => return Ok(Watched::Unsupported),
        200 => {}
        _ => {
            let body: String = body.chars().take(300).collect();
            return Err(Error::Status { url, status, body });
        }
    }
    let version = body.trim().parse().map_err(|_| Error::Decode {
        what,
        message: format!("not an integer: {:?}", body.trim()),
    })?;
    Ok(match mark.as_deref() {
        Some(WATCH_UNAFFECTED) => Watched::Unaffected(version),
        _ => Watched::Version(version),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_id_lists_are_split_into_batches_that_keep_every_id() {
        let ids: Vec<String> = (0..5000).map(|i| format!("{i:036}")).collect();
        let batches = super::id_batches(&ids, 32 * 1024);
        assert!(batches.len() > 1 && batches.iter().all(|b| b.len() <= 32 * 1024));
        let back: Vec<String> = batches
            .iter()
            .flat_map(|b| b.split(','))
            .map(str::to_string)
            .collect();
        assert_eq!(back, ids);
        assert_eq!(
            super::id_batches(&["a b".into()], 1),
            vec!["a%20b".to_string()]
        );
    }

    #[test]
    fn ids_are_percent_encoded_but_guids_stay_readable() {
        assert_eq!(
            crate::policy::auth::form_encode("4a2d-b5_c.~"),
            "4a2d-b5_c.~"
        );
        assert_eq!(crate::policy::auth::form_encode("a,b&c d"), "a%2Cb%26c%20d");
    }
}
