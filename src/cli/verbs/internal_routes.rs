//! What `map-route` and `unmap-route` share: `APP DOMAIN --hostname HOST` (the cf CLI's shape),
//! checked before any server is asked, the app resolved by name, and the one route written.

use crate::api::sd::InternalRoute;
use crate::cli::context::{Ctx, Failure};
use crate::policy::sd::validate;
use clap::Args;

#[derive(Debug, Clone, Default, Args)]
pub struct RouteArgs {
    pub app: Option<String>,
    pub domain: Option<String>,
    #[arg(long, short = 'n', value_name = "HOSTNAME")]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Map,
    Unmap,
}

impl Change {
    fn command(self) -> &'static str {
        match self {
            Change::Map => "map-route",
            Change::Unmap => "unmap-route",
        }
    }
}

pub fn run(ctx: &mut Ctx, a: RouteArgs, change: Change) -> Result<(), Failure> {
    let usage = |reason: String| Failure::Usage {
        command: change.command(),
        reason,
    };
    let (Some(app), Some(domain)) = (&a.app, &a.domain) else {
        return Err(usage(
            "the required arguments `APP_NAME` and `DOMAIN` were not provided".into(),
        ));
    };
    let Some(hostname) = &a.hostname else {
        return Err(usage(
            "the required flag `--hostname` was not provided (internal routes need a hostname)"
                .into(),
        ));
    };
    let host = validate::host(hostname).map_err(usage)?;
    let domain = validate::domain(domain).map_err(usage)?;
    let c = ctx.connect()?;
    let verb = match change {
        Change::Map => "Mapping",
        Change::Unmap => "Removing",
    };
    ctx.say(&format!(
        "{verb} route {host}.{domain} {} app {app} as {}...",
        if change == Change::Map { "to" } else { "from" },
        c.user_name()
    ));
    let guid = match &c.cc {
        None => app.clone(),
        Some(cc) => cc
            .app_guid(app, &c.target_space(cc)?)?
            .ok_or_else(|| format!("App '{app}' not found."))?,
    };
    let route = InternalRoute::new(&guid, &host, &domain);
    let routes = std::slice::from_ref(&route);
    match change {
        Change::Map => c.client.map_routes(routes),
        Change::Unmap => c.client.unmap_routes(routes),
    }
    .map_err(|e| format!("{} route: {e}", change.command()))?;
    if !ctx.printed_json(&crate::api::sd::RoutesRequest {
        routes: vec![route],
    }) {
        ctx.say("OK");
    }
    Ok(())
}
