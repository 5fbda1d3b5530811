//! What a verb works with: the global options, the output, the environment; how it fails; and the
//! connection to the policy server (and the Cloud Controller when app names are in use).

use super::args::Global;
use super::client::PolicyClient;
use super::names::Cc;
use super::target::{self, GlobalFlags, Target};
use serde::Serialize;
use std::io::Write;

/// Why a command failed: bad usage (exit 1, help shown), a failed operation (exit 1), or a
/// command that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Usage {
        command: &'static str,
        reason: String,
    },
    Failed(String),
    UnknownCommand(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Failed(s)
    }
}

pub struct Ctx<'a> {
    pub global: &'a Global,
    pub out: &'a mut dyn Write,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    pub fn json(&self) -> bool {
        self.global.json
    }

    /// A progress or result line; nothing in `--json` mode.
    pub fn say(&mut self, text: &str) {
        if !self.json() {
            let _ = writeln!(self.out, "{text}");
        }
    }

    pub fn print_json<T: Serialize>(&mut self, value: &T) {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
        let _ = writeln!(self.out, "{text}");
    }

    /// Prints `value` in `--json` mode and says so (`true`); the caller prints text otherwise.
    pub fn printed_json<T: Serialize>(&mut self, value: &T) -> bool {
        if self.json() {
            self.print_json(value);
        }
        self.json()
    }

    /// The target, the policy server client, and the CC (when app names are in use).
    pub fn connect(&self) -> Result<Connection, Failure> {
        let target = target::resolve(&flags(self.global), self.env)?;
        let client = PolicyClient::new(&target)?;
        let cc = match (&target.cc, target.guids) {
            (Some(url), false) => Some(Cc::new(url, &target.token, &target.tls)?),
            _ => None,
        };
        Ok(Connection { target, client, cc })
    }
}

fn flags(g: &Global) -> GlobalFlags {
    GlobalFlags {
        api: g.api.clone(),
        token: g.token.clone(),
        skip_ssl_validation: g.skip_ssl_validation,
        ca_cert: g.ca_cert.clone(),
        cc_api: g.cc_api.clone(),
        app_guids: g.app_guids,
    }
}

/// Where the verb talks to and as whom.
pub struct Connection {
    pub target: Target,
    pub client: PolicyClient,
    /// The Cloud Controller, when apps are given by name.
    pub cc: Option<Cc>,
}

impl Connection {
    /// The user name for progress lines: from a JWT, else the policy server's whoami.
    pub fn user_name(&self) -> String {
        target::user_from_token(&self.target.token)
            .or_else(|| self.client.whoami().ok().map(|w| w.subject))
            .unwrap_or_else(|| "unknown user".into())
    }

    /// The targeted space's GUID, resolving names through the CC when needed.
    pub fn target_space(&self, cc: &Cc) -> Result<String, String> {
        let no_space = || {
            "No space targeted. Target one with 'cf target -o ORG -s SPACE', or set NETMAN_ORG and NETMAN_SPACE, or give app GUIDs with '--app-guids'.".to_string()
        };
        let space = self.target.space.as_ref().ok_or_else(no_space)?;
        if let Some(guid) = &space.guid {
            return Ok(guid.clone());
        }
        let org = self.target_org(cc)?;
        cc.space_guid(&space.name, &org)
    }

    pub fn target_org(&self, cc: &Cc) -> Result<String, String> {
        let org = self.target.org.as_ref().ok_or_else(|| {
            "No org targeted. Target one with 'cf target -o ORG', or set NETMAN_ORG.".to_string()
        })?;
        match &org.guid {
            Some(guid) => Ok(guid.clone()),
            None => cc.org_guid(&org.name),
        }
    }
}
