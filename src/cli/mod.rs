//! The `netman` CLI: manage network policies on a policy server from a terminal, like the cf CLI
//! plugin of the original (`allow-access`, `list-access`, `remove-access`) with the modern cf
//! names as aliases (`add-network-policy`, `network-policies`, `remove-network-policy`), plus
//! `tags`, `whoami` and `cleanup`. Apps by GUID, or by name when a Cloud Controller is known.

pub mod args;
pub mod client;
pub mod names;
pub mod output;
pub mod target;
pub mod trace;

use crate::api::policy::{PoliciesResponse, Policy};
use args::{Cli, Command, ListArgs, PolicyArgs};
use clap::error::ErrorKind;
use clap::Parser;
use client::PolicyClient;
use names::Cc;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Write;
use target::{GlobalFlags, Target};

/// Why a command failed: bad usage (exit 1, help shown) or a failed operation (exit 1).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Usage {
        command: &'static str,
        reason: String,
    },
    Failed(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Failed(s)
    }
}

struct Ctx<'a> {
    json: bool,
    out: &'a mut dyn Write,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    fn say(&mut self, text: &str) {
        if !self.json {
            let _ = writeln!(self.out, "{text}");
        }
    }

    fn print_json<T: Serialize>(&mut self, value: &T) {
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
        let _ = writeln!(self.out, "{text}");
    }
}

/// Runs the CLI with the process's arguments and environment; returns the exit status.
pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let env = |k: &str| std::env::var(k).ok();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run(&argv, &env, &mut stdout.lock(), &mut stderr.lock())
}

/// Runs the CLI: `argv` includes the program name. Results go to `out`, `FAILED` and the error
/// to `err`. Returns 0 on success, 1 on any failure.
pub fn run(
    argv: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return parse_error(argv, e, out, err),
    };
    let json = cli.global.json;
    let truthy = |k: &str| {
        env(k).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    };
    trace::enable(truthy("CF_TRACE") || truthy("NETMAN_TRACE"));
    let Some(command) = cli.command else {
        let _ = write!(out, "{}", args::HELP);
        return 0;
    };
    let mut ctx = Ctx { json, out, env };
    let result = match command {
        Command::Help { command } => {
            let text = match command.as_deref() {
                None => args::HELP,
                Some(name) => match args::command_help(name) {
                    Some(text) => text,
                    None => {
                        let _ = writeln!(
                            err,
                            "FAILED\n'{name}' is not a registered command. See 'netman help'."
                        );
                        return 1;
                    }
                },
            };
            let _ = write!(ctx.out, "{text}");
            Ok(())
        }
        Command::AllowAccess(a) => write_policy(&mut ctx, &cli.global, a, true),
        Command::RemoveAccess(a) => write_policy(&mut ctx, &cli.global, a, false),
        Command::ListAccess(a) => list(&mut ctx, &cli.global, a),
        Command::Tags => tags(&mut ctx, &cli.global),
        Command::Whoami => whoami(&mut ctx, &cli.global),
        Command::Cleanup => cleanup(&mut ctx, &cli.global),
    };
    match result {
        Ok(()) => 0,
        Err(Failure::Usage { command, reason }) => {
            usage_failure(command, &reason, ctx.out, err);
            1
        }
        Err(Failure::Failed(message)) => {
            if json {
                ctx.print_json(&serde_json::json!({ "error": message }));
            } else {
                let _ = writeln!(err, "FAILED\n{message}");
            }
            1
        }
    }
}

fn usage_failure(command: &str, reason: &str, out: &mut dyn Write, err: &mut dyn Write) {
    let _ = writeln!(err, "FAILED\nIncorrect usage. {reason}\n");
    let help = args::command_help(command).unwrap_or(args::HELP);
    let _ = write!(out, "{help}");
}

fn parse_error(argv: &[String], e: clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(out, "{}", e.render());
            0
        }
        ErrorKind::InvalidSubcommand => {
            let name = argv
                .iter()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .cloned()
                .unwrap_or_default();
            let _ = writeln!(
                err,
                "FAILED\n'{name}' is not a registered command. See 'netman help'."
            );
            1
        }
        _ => {
            let command = argv
                .iter()
                .skip(1)
                .find(|a| args::command_help(a).is_some())
                .cloned()
                .unwrap_or_default();
            let rendered = e.render().to_string();
            let reason = rendered
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_string();
            usage_failure(&command, &reason, out, err);
            1
        }
    }
}

fn flags(g: &args::Global) -> GlobalFlags {
    GlobalFlags {
        api: g.api.clone(),
        token: g.token.clone(),
        skip_ssl_validation: g.skip_ssl_validation,
        ca_cert: g.ca_cert.clone(),
        cc_api: g.cc_api.clone(),
        app_guids: g.app_guids,
    }
}

/// The target, the policy server client, and the CC (when app names are in use).
fn connect(ctx: &Ctx, g: &args::Global) -> Result<(Target, PolicyClient, Option<Cc>), Failure> {
    let target = target::resolve(&flags(g), ctx.env)?;
    let client = PolicyClient::new(&target)?;
    let cc = match (&target.cc, target.guids) {
        (Some(url), false) => Some(Cc::new(url, &target.token, &target.tls)?),
        _ => None,
    };
    Ok((target, client, cc))
}

/// The user name for progress lines: from a JWT, else the policy server's whoami.
fn user_name(target: &Target, client: &PolicyClient) -> String {
    target::user_from_token(&target.token)
        .or_else(|| client.whoami().ok().map(|w| w.subject))
        .unwrap_or_else(|| "unknown user".into())
}

/// The targeted space's GUID, resolving names through the CC when needed.
fn target_space(target: &Target, cc: &Cc) -> Result<String, String> {
    let no_space = || {
        "No space targeted. Target one with 'cf target -o ORG -s SPACE', or set NETMAN_ORG and NETMAN_SPACE, or give app GUIDs with '--app-guids'.".to_string()
    };
    let space = target.space.as_ref().ok_or_else(no_space)?;
    if let Some(guid) = &space.guid {
        return Ok(guid.clone());
    }
    let org = target_org(target, cc)?;
    cc.space_guid(&space.name, &org)
}

fn target_org(target: &Target, cc: &Cc) -> Result<String, String> {
    let org = target.org.as_ref().ok_or_else(|| {
        "No org targeted. Target one with 'cf target -o ORG', or set NETMAN_ORG.".to_string()
    })?;
    match &org.guid {
        Some(guid) => Ok(guid.clone()),
        None => cc.org_guid(&org.name),
    }
}

fn write_policy(
    ctx: &mut Ctx,
    g: &args::Global,
    a: PolicyArgs,
    allow: bool,
) -> Result<(), Failure> {
    let command: &'static str = if allow {
        "allow-access"
    } else {
        "remove-access"
    };
    let usage = |reason: &str| Failure::Usage {
        command,
        reason: reason.to_string(),
    };
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
    // Defaults as cf add-network-policy; remove needs both, as cf remove-network-policy.
    let (protocol, port) = match (&a.protocol, &a.port, allow) {
        (Some(p), Some(n), _) => (p.clone(), n.clone()),
        (p, n, true) => (
            p.clone().unwrap_or_else(|| "tcp".into()),
            n.clone().unwrap_or_else(|| "8080".into()),
        ),
        (None, _, false) => return Err(usage("the required flag `--protocol` was not provided")),
        (_, None, false) => return Err(usage("the required flag `--port` was not provided")),
    };
    let protocol = args::parse_protocol(&protocol).map_err(|e| usage(&e))?;
    let ports = args::parse_port(&port).map_err(|e| usage(&e))?;

    let (target, client, cc) = connect(ctx, g)?;
    if cc.is_none() && a.space.is_some() {
        return Err(usage(
            "-s and -o need app names and a Cloud Controller ('--cc-api' or the cf target); with app GUIDs they are not needed.",
        ));
    }
    let user = user_name(&target, &client);
    let verb = if allow { "Allowing" } else { "Denying" };
    ctx.say(&format!(
        "{verb} traffic from {source} to {destination} as {user}..."
    ));

    let (source_guid, destination_guid) = match &cc {
        None => (source.clone(), destination.clone()),
        Some(cc) => {
            let space = target_space(&target, cc)?;
            let source_guid = cc
                .app_guid(&source, &space)?
                .ok_or_else(|| format!("resolving source app: {source} not found"))?;
            let dest_space = match &a.space {
                None => space,
                Some(space_name) => {
                    let org = match &a.org {
                        Some(org_name) => cc.org_guid(org_name)?,
                        None => target_org(&target, cc)?,
                    };
                    cc.space_guid(space_name, &org)?
                }
            };
            let destination_guid = cc
                .app_guid(&destination, &dest_space)?
                .ok_or_else(|| format!("resolving destination app: {destination} not found"))?;
            (source_guid, destination_guid)
        }
    };
    let policy = Policy::new(
        &source_guid,
        &destination_guid,
        &protocol,
        ports.start,
        ports.end,
    );
    let what = if allow {
        "adding policies"
    } else {
        "deleting policies"
    };
    let result = if allow {
        client.create(std::slice::from_ref(&policy))
    } else {
        client.delete(std::slice::from_ref(&policy))
    };
    result.map_err(|e| format!("{what}: {e}"))?;
    if ctx.json {
        ctx.print_json(&crate::api::policy::PoliciesRequest {
            policies: vec![policy],
        });
    } else {
        ctx.say("OK");
    }
    Ok(())
}

fn list(ctx: &mut Ctx, g: &args::Global, a: ListArgs) -> Result<(), Failure> {
    if a.app.is_some() && a.source.is_some() {
        return Err(Failure::Usage {
            command: "list-access",
            reason: "Give either --app or --source, not both.".into(),
        });
    }
    let (target, client, cc) = connect(ctx, g)?;
    let user = user_name(&target, &client);
    ctx.say(&format!("Listing policies as {user}..."));
    let space = match &cc {
        Some(cc) if target.space.is_some() => Some(target_space(&target, cc)?),
        _ => None,
    };
    let resolve = |name: &str| -> Result<String, String> {
        match (&cc, &space) {
            (Some(cc), Some(space)) => cc
                .app_guid(name, space)?
                .ok_or_else(|| format!("resolving app: {name} not found")),
            (Some(_), None) => Err(
                "No space targeted, so app names cannot be resolved. Target one with 'cf target -o ORG -s SPACE', or give GUIDs with '--app-guids'.".into(),
            ),
            (None, _) => Ok(name.to_string()),
        }
    };
    let query: Vec<(&str, String)> = match (&a.app, &a.source) {
        (Some(app), _) => vec![("id", resolve(app)?)],
        (_, Some(src)) => vec![("source_id", resolve(src)?)],
        _ => vec![],
    };
    let query_ref: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = client
        .list(&query_ref)
        .map_err(|e| format!("getting policies: {e}"))?;
    if ctx.json {
        ctx.print_json(&resp);
        return Ok(());
    }
    let rows = match &cc {
        None => resp
            .policies
            .iter()
            .map(|p| row(&p.source.id, &p.destination.id, p, None))
            .collect(),
        Some(cc) => named_rows(cc, &resp, space.as_deref())?,
    };
    ctx.say("OK\n");
    let cross = rows.iter().any(|(_, extra)| extra.is_some());
    let mut header = vec!["Source", "Destination", "Protocol", "Port"];
    if cross {
        header.extend(["Destination space", "Destination org"]);
    }
    let cells: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(mut r, extra)| {
            if cross {
                let (s, o) = extra.unwrap_or_default();
                r.extend([s, o]);
            }
            r
        })
        .collect();
    let text = output::table(&header, &cells);
    let _ = write!(ctx.out, "{text}");
    Ok(())
}

type Row = (Vec<String>, Option<(String, String)>);

fn row(source: &str, destination: &str, p: &Policy, extra: Option<(String, String)>) -> Row {
    (
        vec![
            source.to_string(),
            destination.to_string(),
            p.destination.protocol.clone(),
            output::port_text(p.destination.ports.start, p.destination.ports.end),
        ],
        extra,
    )
}

/// Rows with app names: policies whose source app is in the targeted space (all policies when
/// no space is targeted); a destination in another space shows its space and org.
fn named_rows(cc: &Cc, resp: &PoliciesResponse, space: Option<&str>) -> Result<Vec<Row>, String> {
    let guids: BTreeSet<&str> = resp
        .policies
        .iter()
        .flat_map(|p| [p.source.id.as_str(), p.destination.id.as_str()])
        .collect();
    let guids: Vec<&str> = guids.into_iter().collect();
    let apps = cc
        .apps(&guids)
        .map_err(|e| format!("getting app names: {e}"))?;
    let visible: Vec<&Policy> = resp
        .policies
        .iter()
        .filter(|p| match space {
            None => true,
            Some(space) => apps
                .get(&p.source.id)
                .is_some_and(|a| a.space_guid == space),
        })
        .collect();
    let foreign: BTreeSet<&str> = visible
        .iter()
        .filter_map(|p| apps.get(&p.destination.id))
        .map(|a| a.space_guid.as_str())
        .filter(|s| space.is_some_and(|t| t != *s))
        .collect();
    let (spaces, orgs) = if foreign.is_empty() {
        Default::default()
    } else {
        let list: Vec<&str> = foreign.into_iter().collect();
        let spaces = cc
            .spaces(&list)
            .map_err(|e| format!("getting space names: {e}"))?;
        let org_guids: BTreeSet<&str> = spaces.values().map(|(_, o)| o.as_str()).collect();
        let org_guids: Vec<&str> = org_guids.into_iter().collect();
        let orgs = cc
            .orgs(&org_guids)
            .map_err(|e| format!("getting org names: {e}"))?;
        (spaces, orgs)
    };
    let name = |guid: &str| {
        apps.get(guid)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| guid.to_string())
    };
    Ok(visible
        .into_iter()
        .map(|p| {
            let extra = apps.get(&p.destination.id).and_then(|d| {
                if space.is_some_and(|t| t != d.space_guid) {
                    let (space_name, org_guid) =
                        spaces.get(&d.space_guid).cloned().unwrap_or_default();
                    let org_name = orgs.get(&org_guid).cloned().unwrap_or_default();
                    Some((space_name, org_name))
                } else {
                    None
                }
            });
            row(&name(&p.source.id), &name(&p.destination.id), p, extra)
        })
        .collect())
}

fn tags(ctx: &mut Ctx, g: &args::Global) -> Result<(), Failure> {
    let (target, client, _) = connect(ctx, g)?;
    let user = user_name(&target, &client);
    ctx.say(&format!("Listing tags as {user}..."));
    let resp = client.tags().map_err(|e| format!("getting tags: {e}"))?;
    if ctx.json {
        ctx.print_json(&resp);
        return Ok(());
    }
    ctx.say("OK\n");
    let rows: Vec<Vec<String>> = resp
        .tags
        .iter()
        .map(|t| vec![t.id.clone(), t.tag.clone(), t.kind.clone()])
        .collect();
    let text = output::table(&["Id", "Tag", "Type"], &rows);
    let _ = write!(ctx.out, "{text}");
    Ok(())
}

fn whoami(ctx: &mut Ctx, g: &args::Global) -> Result<(), Failure> {
    let (_, client, _) = connect(ctx, g)?;
    let who = client
        .whoami()
        .map_err(|e| format!("getting the current user: {e}"))?;
    if ctx.json {
        ctx.print_json(&who);
    } else {
        ctx.say(&who.subject);
    }
    Ok(())
}

fn cleanup(ctx: &mut Ctx, g: &args::Global) -> Result<(), Failure> {
    let (target, client, _) = connect(ctx, g)?;
    let user = user_name(&target, &client);
    ctx.say(&format!("Cleaning up stale policies as {user}..."));
    let resp = client
        .cleanup()
        .map_err(|e| format!("cleaning up policies: {e}"))?;
    if ctx.json {
        ctx.print_json(&resp);
        return Ok(());
    }
    ctx.say("OK\n");
    ctx.say(&format!("Removed {} stale policies", resp.total_policies));
    if !resp.policies.is_empty() {
        let rows: Vec<Vec<String>> = resp
            .policies
            .iter()
            .map(|p| row(&p.source.id, &p.destination.id, p, None).0)
            .collect();
        let text = output::table(&["Source", "Destination", "Protocol", "Port"], &rows);
        let _ = write!(ctx.out, "\n{text}");
    }
    Ok(())
}
