//! `routes`: the internal routes, one line per name with its apps (names when a Cloud Controller
//! is known).

use crate::cli::context::{Ctx, Failure};
use crate::cli::output;
use std::collections::{BTreeMap, BTreeSet};

pub const HELP: &str = "\
NAME:
   routes - List internal routes

USAGE:
   netman routes

EXAMPLES:
   netman routes
   netman routes --json

SEE ALSO:
   map-route, unmap-route
";

pub fn run(ctx: &mut Ctx) -> Result<(), Failure> {
    let c = ctx.connect()?;
    ctx.say(&format!("Getting internal routes as {}...", c.user_name()));
    let resp = c
        .client
        .internal_routes()
        .map_err(|e| format!("getting internal routes: {e}"))?;
    if ctx.printed_json(&resp) {
        return Ok(());
    }
    let names = match &c.cc {
        None => Default::default(),
        Some(cc) => {
            let guids: BTreeSet<&str> = resp.routes.iter().map(|r| r.app_guid.as_str()).collect();
            let guids: Vec<&str> = guids.into_iter().collect();
            cc.apps(&guids)
                .map_err(|e| format!("getting app names: {e}"))?
                .into_iter()
                .map(|(guid, app)| (guid, app.name))
                .collect::<std::collections::HashMap<_, _>>()
        }
    };
    let mut by_name: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in &resp.routes {
        let app = names
            .get(&r.app_guid)
            .cloned()
            .unwrap_or_else(|| r.app_guid.clone());
        by_name
            .entry((r.host.clone(), r.domain.clone()))
            .or_default()
            .push(app);
    }
    let rows: Vec<Vec<String>> = by_name
        .into_iter()
        .map(|((host, domain), apps)| vec![host, domain, apps.join(", ")])
        .collect();
    ctx.say("");
    let _ = write!(
        ctx.out,
        "{}",
        output::table(&["host", "domain", "apps"], &rows)
    );
    Ok(())
}
