//! `bind-running-security-group`, `bind-staging-security-group` and their `unbind-` forms: a
//! group applied to every app (running) or every staging container of the platform.

use super::asg::{done, AsgApi};
use super::security_group::NameArgs;
use crate::asg::Lifecycle;
use crate::cli::context::{Ctx, Failure};
use serde_json::json;

pub const BIND_RUNNING_HELP: &str = "\
NAME:
   bind-running-security-group - Bind a security group to the list of security groups to be used for running applications

USAGE:
   netman bind-running-security-group SECURITY_GROUP

   TIP: If Dynamic ASG's are enabled, changes will automatically apply for running and staging applications. Otherwise, changes will require an app restart (for running) or restage (for staging) to apply to existing applications.

SEE ALSO:
   apps, bind-security-group, bind-staging-security-group, restart, security-groups
";

pub const BIND_STAGING_HELP: &str = "\
NAME:
   bind-staging-security-group - Bind a security group to the list of security groups to be used for staging applications globally

USAGE:
   netman bind-staging-security-group SECURITY_GROUP

SEE ALSO:
   bind-running-security-group, bind-security-group, security-groups
";

pub const UNBIND_RUNNING_HELP: &str = "\
NAME:
   unbind-running-security-group - Unbind a security group from the set of security groups for running applications globally

USAGE:
   netman unbind-running-security-group SECURITY_GROUP

SEE ALSO:
   restart, security-groups
";

pub const UNBIND_STAGING_HELP: &str = "\
NAME:
   unbind-staging-security-group - Unbind a security group from the set of security groups for staging applications globally

USAGE:
   netman unbind-staging-security-group SECURITY_GROUP

SEE ALSO:
   security-groups
";

pub fn run(ctx: &mut Ctx, a: NameArgs, lifecycle: Lifecycle, on: bool) -> Result<(), Failure> {
    let c = ctx.connect()?;
    let api = AsgApi::new(&c)?;
    let who = c.user_name();
    ctx.say(&if on {
        format!(
            "Binding security group {} to {} as {who}...",
            a.name,
            lifecycle.name()
        )
    } else {
        format!(
            "Unbinding security group {} from defaults for {} as {who}...",
            a.name,
            lifecycle.name()
        )
    });
    let g = api.named(&a.name)?;
    let updated = api.expect(
        "PATCH",
        &format!("/{}", g.guid),
        Some(&json!({"globally_enabled": { lifecycle.name(): on }})),
    )?;
    done(ctx, &updated, true);
    Ok(())
}
