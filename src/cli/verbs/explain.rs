//! `explain`: whether SOURCE_APP may reach DESTINATION_APP and why, from the policy server (the
//! policies that allow it, or none and what is allowed instead), and with `--cell-debug` what
//! the destination cell's agent enforces (its set elements, present or missing).

use crate::api::policy::Policy;
use crate::cli::args::{parse_port, parse_protocol, PortRange};
use crate::cli::context::{Ctx, Failure};
use crate::cli::output::port_text;
use crate::cli::verbs::access::{guids, PolicyArgs};
use clap::Args;
use serde::Serialize;

pub const HELP: &str = "\
NAME:
   explain - Explain whether an app may reach another, and which policy decides

USAGE:
   netman explain SOURCE_APP DESTINATION_APP [--protocol (tcp | udp)] [--port PORT] [-s DESTINATION_SPACE_NAME [-o DESTINATION_ORG_NAME]] [--cell-debug URL]

EXAMPLES:
   netman explain frontend backend --protocol tcp --port 8080
   netman explain frontend backend
   netman explain frontend backend --port 8080 --cell-debug http://127.0.0.1:8721

OPTIONS:
   --protocol       Protocol to check (Default: tcp when --port is given, else any)
   --port           Port or range to check (Default: any)
   -s               Space of the destination app (Default: targeted space)
   -o               Org of the destination app (Default: targeted org if -s is given)
   --cell-debug     The destination cell's agent debug address: also show what it enforces

SEE ALSO:
   allow-access, list-access
";

#[derive(Debug, Clone, Default, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub apps: PolicyArgs,
    #[arg(long = "cell-debug", value_name = "URL")]
    pub cell_debug: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub source: String,
    pub destination: String,
    pub protocol: Option<String>,
    pub ports: Option<PortRange>,
    pub allowed: bool,
    /// The policies that allow it.
    pub policies: Vec<Policy>,
    /// The other policies from the source to the destination.
    pub allowed_instead: Vec<Policy>,
    /// The destination cell's answer, with `--cell-debug`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<serde_json::Value>,
}

fn usage(reason: &str) -> Failure {
    Failure::Usage {
        command: "explain",
        reason: reason.to_string(),
    }
}

fn covers(p: &Policy, protocol: Option<&str>, ports: Option<&PortRange>) -> bool {
    let (start, end) = (p.destination.ports.start, p.destination.ports.end);
    let end = if end == 0 { start } else { end };
    protocol.is_none_or(|proto| p.destination.protocol == proto)
        && ports.is_none_or(|r| start <= r.start && r.end <= end)
}

pub fn run(ctx: &mut Ctx, a: ExplainArgs) -> Result<(), Failure> {
    let apps = &a.apps;
    let destination = match (&apps.destination, &apps.destination_app) {
        (Some(_), Some(_)) => return Err(usage("Give the destination app once.")),
        (Some(d), None) | (None, Some(d)) => d.clone(),
        (None, None) => {
            return Err(usage(
                "the required arguments `SOURCE_APP` and `DESTINATION_APP` were not provided",
            ))
        }
    };
    let Some(source) = apps.source.clone() else {
        return Err(usage("the required argument `SOURCE_APP` was not provided"));
    };
    let ports = apps
        .port
        .as_deref()
        .map(parse_port)
        .transpose()
        .map_err(|e| usage(&e))?;
    let protocol = match (&apps.protocol, &ports) {
        (Some(p), _) => Some(parse_protocol(p).map_err(|e| usage(&e))?),
        (None, Some(_)) => Some("tcp".to_string()),
        (None, None) => None,
    };
    let cell_debug = a
        .cell_debug
        .as_deref()
        .map(|u| {
            let ok = u.starts_with("http://") || u.starts_with("https://");
            ok.then(|| u.trim_end_matches('/').to_string())
                .ok_or_else(|| usage(&format!("--cell-debug {u:?} is not an http:// URL")))
        })
        .transpose()?;

    let c = ctx.connect()?;
    let what = match (&protocol, &ports) {
        (Some(p), Some(r)) => format!(" on {p} {}", port_text(r.start, r.end)),
        (Some(p), None) => format!(" on {p}"),
        _ => String::new(),
    };
    ctx.say(&format!(
        "Explaining traffic from {source} to {destination}{what} as {}...",
        c.user_name()
    ));
    let (source_guid, destination_guid) = guids(&c, apps, &source, &destination)?;
    let listed = c
        .client
        .list(&[("source_id", source_guid.as_str())])
        .map_err(|e| format!("getting policies: {e}"))?;
    let (policies, allowed_instead): (Vec<Policy>, Vec<Policy>) = listed
        .policies
        .into_iter()
        .filter(|p| p.source.id == source_guid && p.destination.id == destination_guid)
        .partition(|p| covers(p, protocol.as_deref(), ports.as_ref()));
    let cell = match &cell_debug {
        Some(url) => Some(ask_cell(
            url,
            &source_guid,
            &destination_guid,
            protocol.as_deref(),
            ports.as_ref(),
        )?),
        None => None,
    };
    let e = Explanation {
        source: source_guid,
        destination: destination_guid,
        protocol,
        ports,
        allowed: !policies.is_empty(),
        policies,
        allowed_instead,
        cell,
    };
    if ctx.printed_json(&e) {
        return Ok(());
    }
    ctx.say("OK\n");
    let rule = |p: &Policy| {
        format!(
            "{} {}",
            p.destination.protocol,
            port_text(p.destination.ports.start, p.destination.ports.end)
        )
    };
    if e.allowed {
        for p in &e.policies {
            ctx.say(&format!(
                "ALLOWED by policy {source} -> {destination} {}",
                rule(p)
            ));
        }
    } else {
        ctx.say(&format!(
            "DENIED: no policy allows {source} to reach {destination}{what} (default deny)"
        ));
        if e.allowed_instead.is_empty() {
            ctx.say(&format!("No policy from {source} to {destination} at all."));
        } else {
            let list: Vec<String> = e.allowed_instead.iter().map(rule).collect();
            ctx.say(&format!("Allowed instead: {}", list.join(", ")));
        }
    }
    if let Some(cell) = &e.cell {
        ctx.say(&cell_text(cell));
    }
    Ok(())
}

/// The destination cell agent's `/enforced` answer.
fn ask_cell(
    url: &str,
    source: &str,
    destination: &str,
    protocol: Option<&str>,
    ports: Option<&PortRange>,
) -> Result<serde_json::Value, Failure> {
    let (Some(protocol), Some(ports)) = (protocol, ports) else {
        return Err(usage(
            "--cell-debug needs --port (the cell is asked about one port)",
        ));
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let port = ports.start.to_string();
    let mut resp = agent
        .get(&format!("{url}/enforced"))
        .query("source", source)
        .query("destination", destination)
        .query("protocol", protocol)
        .query("port", &port)
        .call()
        .map_err(|e| format!("asking the cell at {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        return Err(Failure::Failed(format!(
            "asking the cell at {url}: {status} {body}"
        )));
    }
    serde_json::from_str(&body).map_err(|e| Failure::Failed(format!("the cell's answer: {e}")))
}

fn cell_text(cell: &serde_json::Value) -> String {
    let containers = cell["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        return "Cell: no container of the destination app runs on this cell.".into();
    }
    let mut out = String::from("Cell enforces:");
    for c in containers {
        let state = if c["present"].as_bool() == Some(true) {
            "present"
        } else {
            "missing"
        };
        out.push_str(&format!(
            "\n   {} ({}): {} element {state}",
            c["ip"].as_str().unwrap_or("?"),
            c["handle"].as_str().unwrap_or("?"),
            c["element"].as_str().unwrap_or("?"),
        ));
    }
    out
}
