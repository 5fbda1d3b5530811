//! `remove-access` (`remove-network-policy`, `deny-access`): remove a policy.

use super::access::{self, Change, PolicyArgs};
use crate::cli::context::{Ctx, Failure};

pub const HELP: &str = "\
NAME:
   remove-access - Remove policy that allows direct network traffic from one app to another

USAGE:
   netman remove-access SOURCE_APP DESTINATION_APP [-s DESTINATION_SPACE_NAME [-o DESTINATION_ORG_NAME]] --protocol (tcp | udp) --port RANGE

EXAMPLES:
   netman remove-access frontend backend --protocol tcp --port 8081
   netman remove-access frontend backend --protocol tcp --port 8080-8090

ALIAS:
   remove-network-policy, deny-access

OPTIONS:
   --destination-app      Name of the app (instead of the DESTINATION_APP argument)
   -o                     The org of the destination app (Default: targeted org)
   --port                 Port or range of ports that destination app is connected with
   --protocol             Protocol that apps are connected with
   -s                     The space of the destination app (Default: targeted space)

SEE ALSO:
   allow-access, list-access
";

pub fn run(ctx: &mut Ctx, args: PolicyArgs) -> Result<(), Failure> {
    access::run(ctx, args, Change::Remove)
}
