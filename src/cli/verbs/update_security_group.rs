//! `update-security-group NAME RULES.json`, as `cf update-security-group`.

use super::asg::{done, read_rules, AsgApi};
use super::create_security_group::RulesArgs;
use crate::cli::context::{Ctx, Failure};
use serde_json::json;

pub const HELP: &str = "\
NAME:
   update-security-group - Update a security group

USAGE:
   netman update-security-group SECURITY_GROUP PATH_TO_JSON_RULES_FILE

   The provided path can be an absolute or relative path to a file. It should have a single
   array with JSON objects inside describing the rules (see 'netman help create-security-group').

   TIP: If Dynamic ASG's are enabled, changes will automatically apply for running and staging applications. Otherwise, changes will require an app restart (for running) or restage (for staging) to apply to existing applications.

EXAMPLES:
   netman update-security-group my-asg rules.json

SEE ALSO:
   restage, security-groups
";

pub fn run(ctx: &mut Ctx, a: RulesArgs) -> Result<(), Failure> {
    let rules = read_rules(&a.rules)?;
    let c = ctx.connect()?;
    let api = AsgApi::new(&c)?;
    ctx.say(&format!(
        "Updating security group {} as {}...",
        a.name,
        c.user_name()
    ));
    let g = api.named(&a.name)?;
    let updated = api.expect(
        "PATCH",
        &format!("/{}", g.guid),
        Some(&json!({"rules": rules})),
    )?;
    done(ctx, &updated, true);
    Ok(())
}
