//! What `allow-access` and `remove-access` share: their arguments, their checks, app names
//! resolved to GUIDs, and the one policy written or deleted.

use crate::api::policy::Policy;
use crate::cli::args::{parse_port, parse_protocol};
use crate::cli::context::{Connection, Ctx, Failure};
use clap::Args;

#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    pub source: Option<String>,
    pub destination: Option<String>,
    /// The cf CLI 6 form of the destination.
    #[arg(long = "destination-app", value_name = "DESTINATION_APP")]
    pub destination_app: Option<String>,
    #[arg(short = 's', value_name = "DESTINATION_SPACE_NAME")]
    pub space: Option<String>,
    #[arg(short = 'o', value_name = "DESTINATION_ORG_NAME")]
    pub org: Option<String>,
    #[arg(long)]
    pub protocol: Option<String>,
    #[arg(long)]
    pub port: Option<String>,
}

/// Allow (add the policy) or remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Allow,
    Remove,
}

impl Change {
    fn command(self) -> &'static str {
        match self {
            Change::Allow => "allow-access",
            Change::Remove => "remove-access",
        }
    }
}

/// The checked arguments: apps as given, protocol, port range.
struct Wanted {
    source: String,
    destination: String,
    protocol: String,
    start: i64,
    end: i64,
}

pub fn run(ctx: &mut Ctx, a: PolicyArgs, change: Change) -> Result<(), Failure> {
    let wanted = check(&a, change)?;
    let c = ctx.connect()?;
    if c.cc.is_none() && a.space.is_some() {
        return Err(usage(change,
            "-s and -o need app names and a Cloud Controller ('--cc-api' or the cf target); with app GUIDs they are not needed.",
        ));
    }
    let verb = match change {
        Change::Allow => "Allowing",
        Change::Remove => "Denying",
    };
    ctx.say(&format!(
        "{verb} traffic from {} to {} as {}...",
        wanted.source,
        wanted.destination,
        c.user_name()
    ));
    let (source_guid, destination_guid) = guids(&c, &a, &wanted.source, &wanted.destination)?;
    let policy = Policy::new(
        &source_guid,
        &destination_guid,
        &wanted.protocol,
        wanted.start,
        wanted.end,
    );
    let result = match change {
        Change::Allow => c
            .client
            .create(std::slice::from_ref(&policy))
            .map_err(|e| format!("adding policies: {e}")),
        Change::Remove => c
            .client
            .delete(std::slice::from_ref(&policy))
            .map_err(|e| format!("deleting policies: {e}")),
    };
    result?;
    if !ctx.printed_json(&crate::api::policy::PoliciesRequest {
        policies: vec![policy],
    }) {
        ctx.say("OK");
    }
    Ok(())
}

fn usage(change: Change, reason: &str) -> Failure {
    Failure::Usage {
        command: change.command(),
        reason: reason.to_string(),
    }
}

/// The arguments checked before anything is asked of a server, with the cf CLI's defaults:
/// `allow` takes tcp and 8080 when not given; `remove` needs both.
fn check(a: &PolicyArgs, change: Change) -> Result<Wanted, Failure> {
    let usage = |reason: &str| usage(change, reason);
    let destination = match (&a.destination, &a.destination_app) {
        (Some(_), Some(_)) => {
            return Err(usage("Give the destination app either as DESTINATION_APP or with --destination-app, not both."))
        }
        (Some(d), None) | (None, Some(d)) => Some(d.clone()),
        (None, None) => None,
    };
    let (source, destination) = match (&a.source, destination) {
        (Some(s), Some(d)) => (s.clone(), d),
        (Some(_), None) => {
            return Err(usage(
                "the required argument `DESTINATION_APP` was not provided",
            ))
        }
        _ => {
            return Err(usage(
                "the required arguments `SOURCE_APP` and `DESTINATION_APP` were not provided",
            ))
        }
    };
    if a.org.is_some() && a.space.is_none() {
        return Err(usage(
            "-o DESTINATION_ORG_NAME needs -s DESTINATION_SPACE_NAME.",
        ));
    }
    let (protocol, port) = match (&a.protocol, &a.port, change) {
        (Some(p), Some(n), _) => (p.clone(), n.clone()),
        (p, n, Change::Allow) => (
            p.clone().unwrap_or_else(|| "tcp".into()),
            n.clone().unwrap_or_else(|| "8080".into()),
        ),
        (None, _, Change::Remove) => {
            return Err(usage("the required flag `--protocol` was not provided"))
        }
        (_, None, Change::Remove) => {
            return Err(usage("the required flag `--port` was not provided"))
        }
    };
    let protocol = parse_protocol(&protocol).map_err(|e| usage(&e))?;
    let ports = parse_port(&port).map_err(|e| usage(&e))?;
    Ok(Wanted {
        source,
        destination,
        protocol,
        start: ports.start,
        end: ports.end,
    })
}

/// The GUIDs of the source and destination apps: as given with `--app-guids` (or without a
/// CC), else resolved by name in the targeted space (the destination in `-s`/`-o` if given).
pub fn guids(
    c: &Connection,
    a: &PolicyArgs,
    source: &str,
    destination: &str,
) -> Result<(String, String), Failure> {
    let Some(cc) = &c.cc else {
        return Ok((source.to_string(), destination.to_string()));
    };
    let space = c.target_space(cc)?;
    let source_guid = cc
        .app_guid(source, &space)?
        .ok_or_else(|| format!("resolving source app: {source} not found"))?;
    let destination_space = match &a.space {
        None => space,
        Some(space_name) => {
            let org = match &a.org {
                Some(org_name) => cc.org_guid(org_name)?,
                None => c.target_org(cc)?,
            };
            cc.space_guid(space_name, &org)?
        }
    };
    let destination_guid = cc
        .app_guid(destination, &destination_space)?
        .ok_or_else(|| format!("resolving destination app: {destination} not found"))?;
    Ok((source_guid, destination_guid))
}
