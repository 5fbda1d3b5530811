//! `list-access` (`network-policies`): the policies, with app names when a Cloud Controller is
//! known.

use crate::api::policy::{PoliciesResponse, Policy};
use crate::cli::context::{Ctx, Failure};
use crate::cli::names::Cc;
use crate::cli::output::{self, policy_row};
use clap::Args;
use std::collections::BTreeSet;

pub const HELP: &str = "\
NAME:
   list-access - List direct network traffic policies

USAGE:
   netman list-access [--app APP | --source SOURCE_APP]

EXAMPLES:
   netman list-access
   netman list-access --app frontend
   netman list-access --json

ALIAS:
   network-policies

OPTIONS:
   --app        List only policies where APP is the source or the destination
   --source     List only policies where SOURCE_APP is the source

SEE ALSO:
   allow-access, remove-access
";

#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    #[arg(long, value_name = "SOURCE_APP")]
    pub source: Option<String>,
}

pub fn run(ctx: &mut Ctx, a: ListArgs) -> Result<(), Failure> {
    if a.app.is_some() && a.source.is_some() {
        return Err(Failure::Usage {
            command: "list-access",
            reason: "Give either --app or --source, not both.".into(),
        });
    }
    let c = ctx.connect()?;
    ctx.say(&format!("Listing policies as {}...", c.user_name()));
    let space = match &c.cc {
        Some(cc) if c.target.space.is_some() => Some(c.target_space(cc)?),
        _ => None,
    };
    let resolve = |name: &str| -> Result<String, String> {
        match (&c.cc, &space) {
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
    let resp = c
        .client
        .list(&query_ref)
        .map_err(|e| format!("getting policies: {e}"))?;
    if ctx.printed_json(&resp) {
        return Ok(());
    }
    let rows = match &c.cc {
        None => resp
            .policies
            .iter()
            .map(|p| (policy_row(&p.source.id, &p.destination.id, p), None))
            .collect(),
        Some(cc) => named_rows(cc, &resp, space.as_deref())?,
    };
    ctx.say("OK\n");
    let _ = write!(ctx.out, "{}", table(rows));
    Ok(())
}

/// A policy's row, and the destination's space and org when it is in another space.
type Row = (Vec<String>, Option<(String, String)>);

/// The table, with the destination space and org columns when any destination is elsewhere.
fn table(rows: Vec<Row>) -> String {
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
    output::table(&header, &cells)
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
            (
                policy_row(&name(&p.source.id), &name(&p.destination.id), p),
                extra,
            )
        })
        .collect())
}
