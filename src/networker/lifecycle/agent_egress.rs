//! Dynamic ASGs from the networker's side: asking the policy agent to own a container's egress
//! at `up` (`/force-asgs-for-container`) and to forget it at `down`
//! (`/force-orphaned-asgs-cleanup`), answered as the original's agent answers (reference §6.4).

use super::Networker;
use crate::networker::Error;
use std::time::Duration;

/// Who enforces a container's egress (ASGs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// The networker's own `netout--H` chain from garden's `netout_rules`.
    Static,
    /// The policy agent's ASG table; the container has no NetOut chain.
    Agent,
}

const DISABLED: u16 = 405;

/// What the agent answered.
enum Answer {
    Status(u16, String),
    /// Nothing listens at the address.
    NoAgent(String),
    Failed(String),
}

impl Networker {
    /// GET `<policy_agent_asg_url><route>?container=<handle>`; `None` when no URL is configured.
    fn asg_call(&self, route: &str, handle: &str) -> Option<(String, Answer)> {
        let base = self.config.policy_agent_asg_url.as_ref()?;
        let url = format!("{}{route}?container={handle}", base.trim_end_matches('/'));
        let agent = match crate::http::client::agent(
            &Default::default(),
            Duration::from_secs(self.config.policy_agent_timeout_seconds),
        ) {
            Ok(a) => a,
            Err(m) => return Some((url, Answer::Failed(m))),
        };
        let answer = match agent.get(&url).call() {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let body = crate::http::client::body_string(&mut resp, 4096).unwrap_or_default();
                Answer::Status(status, body.trim().to_string())
            }
            Err(e) if super::is_refused(&e) => Answer::NoAgent(e.to_string()),
            Err(e) => Answer::Failed(e.to_string()),
        };
        Some((url, answer))
    }

    /// At `up`, once the container is in the store: 200 -> the agent holds its egress rules now;
    /// 405 (syncing disabled) -> the static path; anything else (no agent listening included)
    /// fails the `up`, since then no one would enforce the container's egress.
    pub(super) fn agent_egress(&self, handle: &str) -> Result<Egress, Error> {
        let Some((url, answer)) = self.asg_call("/force-asgs-for-container", handle) else {
            return Ok(Egress::Static);
        };
        match answer {
            Answer::Status(200, _) => Ok(Egress::Agent),
            Answer::Status(DISABLED, _) => Ok(Egress::Static),
            Answer::Status(status, message) => Err(Error::AsgSync {
                url,
                status: Some(status),
                message,
            }),
            Answer::NoAgent(message) | Answer::Failed(message) => Err(Error::AsgSync {
                url,
                status: None,
                message,
            }),
        }
    }

    /// At `down`, once the container left the store: 405 and no agent listening are fine (the
    /// agent drops the container at its next cycle anyway); other failures are reported.
    pub(super) fn agent_egress_cleanup(&self, handle: &str) -> Result<(), Error> {
        let Some((url, answer)) = self.asg_call("/force-orphaned-asgs-cleanup", handle) else {
            return Ok(());
        };
        match answer {
            Answer::Status(200 | DISABLED, _) => Ok(()),
            Answer::NoAgent(message) => {
                log::warn!("ASG cleanup {url}: no agent listening ({message})");
                Ok(())
            }
            Answer::Status(status, message) => Err(Error::AsgSync {
                url,
                status: Some(status),
                message,
            }),
            Answer::Failed(message) => Err(Error::AsgSync {
                url,
                status: None,
                message,
            }),
        }
    }
}
