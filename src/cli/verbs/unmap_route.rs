//! `unmap-route`: remove an app's internal name.

use super::internal_routes::{self, Change, RouteArgs};
use crate::cli::context::{Ctx, Failure};

pub const HELP: &str = "\
NAME:
   unmap-route - Remove an internal route from an app

USAGE:
   netman unmap-route APP_NAME DOMAIN --hostname HOSTNAME

EXAMPLES:
   netman unmap-route backend apps.internal --hostname backend

OPTIONS:
   --hostname, -n     Hostname of the route

SEE ALSO:
   map-route, routes
";

pub fn run(ctx: &mut Ctx, args: RouteArgs) -> Result<(), Failure> {
    internal_routes::run(ctx, args, Change::Unmap)
}
