//! `create-security-group NAME RULES.json`, as `cf create-security-group`.

use super::asg::{read_rules, AsgApi};
use crate::cli::context::{Ctx, Failure};
use clap::Args;
use serde_json::json;

pub const HELP: &str = "\
NAME:
   create-security-group - Create a security group

USAGE:
   netman create-security-group SECURITY_GROUP PATH_TO_JSON_RULES_FILE

   The provided path can be an absolute or relative path to a file. The file should have
   a single array with JSON objects inside describing the rules. The JSON Base Object is
   omitted and only the square brackets and associated child object are required in the file.

   Valid json file example:
   [
     {
       \"protocol\": \"tcp\",
       \"destination\": \"10.0.11.0/24\",
       \"ports\": \"80,443\",
       \"description\": \"Allow http and https traffic to ZoneA\"
     }
   ]

   protocol: tcp, udp, icmp or all; destination: an IPv4 address, CIDR, A-B range or a comma
   list of these; ports (tcp, udp): N, N-M or a comma list; type and code (icmp): -1 for any;
   log: true or false.

EXAMPLES:
   netman create-security-group my-asg rules.json

SEE ALSO:
   bind-security-group, bind-running-security-group, bind-staging-security-group, security-groups
";

#[derive(Debug, Clone, Args)]
pub struct RulesArgs {
    #[arg(value_name = "SECURITY_GROUP")]
    pub name: String,
    #[arg(value_name = "PATH_TO_JSON_RULES_FILE")]
    pub rules: String,
}

pub fn run(ctx: &mut Ctx, a: RulesArgs) -> Result<(), Failure> {
    let rules = read_rules(&a.rules)?;
    let c = ctx.connect()?;
    let api = AsgApi::new(&c)?;
    ctx.say(&format!(
        "Creating security group {} as {}...",
        a.name,
        c.user_name()
    ));
    match api.call("POST", "", Some(&json!({"name": a.name, "rules": rules})))? {
        Ok(created) => {
            if !ctx.printed_json(&created) {
                ctx.say("OK");
            }
            Ok(())
        }
        Err(r) if r.status == 422 && r.detail.contains("already exists") => {
            if ctx.json() {
                return Err(Failure::Failed(r.detail));
            }
            ctx.say(&format!("Security group {} already exists\nOK", a.name));
            Ok(())
        }
        Err(r) => Err(Failure::Failed(super::asg::explain(r))),
    }
}
