//! `allow-access` (`add-network-policy`): allow traffic from one app to another.

use super::access::{self, Change, PolicyArgs};
use crate::cli::context::{Ctx, Failure};

pub const HELP: &str = "\
NAME:
   allow-access - Allow direct network traffic from one app to another

USAGE:
   netman allow-access SOURCE_APP DESTINATION_APP [-s DESTINATION_SPACE_NAME [-o DESTINATION_ORG_NAME]] [--protocol (tcp | udp) --port RANGE]

EXAMPLES:
   netman allow-access frontend backend --protocol tcp --port 8081
   netman allow-access frontend backend --protocol tcp --port 8080-8090
   netman allow-access frontend backend -s backend-space -o backend-org --protocol udp --port 5353
   netman allow-access --app-guids 2ffe4b0f-... 5a1d7c3e-... --port 8080

ALIAS:
   add-network-policy

OPTIONS:
   --destination-app      Name of the app to connect to (instead of the DESTINATION_APP argument)
   -o                     The org of the destination app (Default: targeted org)
   --port                 Port or range of ports for connection to destination app (Default: 8080)
   --protocol             Protocol that apps are connected with (Default: tcp)
   -s                     The space of the destination app (Default: targeted space)

SEE ALSO:
   list-access, remove-access
";

pub fn run(ctx: &mut Ctx, args: PolicyArgs) -> Result<(), Failure> {
    access::run(ctx, args, Change::Allow)
}
