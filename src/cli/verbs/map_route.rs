//! `map-route`: give an app an internal name (`HOST.DOMAIN`) that resolves on every cell to the
//! overlay IPs of its running instances.

use super::internal_routes::{self, Change, RouteArgs};
use crate::cli::context::{Ctx, Failure};

pub const HELP: &str = "\
NAME:
   map-route - Map an internal route to an app: HOSTNAME.DOMAIN resolves to its instances' overlay IPs

USAGE:
   netman map-route APP_NAME DOMAIN --hostname HOSTNAME

EXAMPLES:
   netman map-route backend apps.internal --hostname backend
   netman map-route --app-guids 5a1d7c3e-... apps.internal --hostname backend

   Containers then reach backend.apps.internal (every instance, shuffled) and 0.backend.apps.internal
   (instance 0). A name is not a permission: traffic still needs 'netman allow-access'.

OPTIONS:
   --hostname, -n     Hostname for the route (one label: letters, digits, hyphens)

SEE ALSO:
   unmap-route, routes, allow-access
";

pub fn run(ctx: &mut Ctx, args: RouteArgs) -> Result<(), Failure> {
    internal_routes::run(ctx, args, Change::Map)
}
