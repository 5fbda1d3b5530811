//! `bind-security-group NAME ORG [--space SPACE] [--lifecycle running|staging]` and
//! `unbind-security-group NAME ORG SPACE [--lifecycle ..]`, as the cf CLI's. ORG and SPACE are
//! names resolved through the Cloud Controller when one is known (bind without `--space`: every
//! space of the org), GUIDs otherwise (or with `--app-guids`).

use super::asg::{done, spaces_of, AsgApi};
use crate::asg::Lifecycle;
use crate::cli::context::{Ctx, Failure};
use clap::Args;
use serde_json::json;

pub const BIND_HELP: &str = "\
NAME:
   bind-security-group - Bind a security group to a particular space, or all existing spaces of an org

USAGE:
   netman bind-security-group SECURITY_GROUP ORG [--lifecycle (running | staging)] [--space SPACE]

   TIP: If Dynamic ASG's are enabled, changes will automatically apply for running and staging applications. Otherwise, changes will require an app restart (for running) or restage (for staging) to apply to existing applications.

   Without a Cloud Controller (or with --app-guids), ORG is shown as given and SPACE is a space GUID (required).

EXAMPLES:
   netman bind-security-group my-asg my-org --space my-space
   netman bind-security-group my-asg my-org --space my-space --lifecycle staging
   netman bind-security-group my-asg any-org --space 5a1d7c3e-... (no Cloud Controller)

OPTIONS:
   --lifecycle      Lifecycle phase the group applies to. (Default: running)
   --space          Space to bind the security group to. (Default: all existing spaces in org)

SEE ALSO:
   apps, bind-running-security-group, bind-staging-security-group, restart, security-groups
";

pub const UNBIND_HELP: &str = "\
NAME:
   unbind-security-group - Unbind a security group from a space

USAGE:
   netman unbind-security-group SECURITY_GROUP ORG SPACE [--lifecycle (running | staging)]

   TIP: If Dynamic ASG's are enabled, changes will automatically apply for running and staging applications. Otherwise, changes will require an app restart (for running) or restage (for staging) to apply to existing applications.

   Without a Cloud Controller (or with --app-guids), SPACE is a space GUID.

EXAMPLES:
   netman unbind-security-group my-asg my-org my-space --lifecycle staging

OPTIONS:
   --lifecycle      Lifecycle phase the group applies to. (Default: running)

SEE ALSO:
   apps, restart, security-groups
";

#[derive(Debug, Clone, Args)]
pub struct BindArgs {
    #[arg(value_name = "SECURITY_GROUP")]
    pub name: String,
    #[arg(value_name = "ORG")]
    pub org: String,
    #[arg(long, value_name = "SPACE")]
    pub space: Option<String>,
    #[arg(long, value_name = "LIFECYCLE", default_value = "running")]
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, Args)]
pub struct UnbindArgs {
    #[arg(value_name = "SECURITY_GROUP")]
    pub name: String,
    #[arg(value_name = "ORG")]
    pub org: String,
    #[arg(value_name = "SPACE")]
    pub space: String,
    #[arg(long, value_name = "LIFECYCLE", default_value = "running")]
    pub lifecycle: Lifecycle,
}

fn relationship(l: Lifecycle) -> &'static str {
    match l {
        Lifecycle::Running => "running_spaces",
        Lifecycle::Staging => "staging_spaces",
    }
}

pub fn bind(ctx: &mut Ctx, a: BindArgs) -> Result<(), Failure> {
    let c = ctx.connect()?;
    let api = AsgApi::new(&c)?;
    let spaces = spaces_of(&c, "bind-security-group", &a.org, a.space.as_deref())?;
    let who = c.user_name();
    let g = api.named(&a.name)?;
    let shown = a.space.clone().unwrap_or_else(|| "all spaces".into());
    ctx.say(&format!(
        "Assigning {} security group {} to space {shown} in org {} as {who}...",
        a.lifecycle.name(),
        a.name,
        a.org
    ));
    let data: Vec<_> = spaces.iter().map(|s| json!({ "guid": s })).collect();
    let bound = api.expect(
        "POST",
        &format!("/{}/relationships/{}", g.guid, relationship(a.lifecycle)),
        Some(&json!({ "data": data })),
    )?;
    done(ctx, &bound, true);
    Ok(())
}

pub fn unbind(ctx: &mut Ctx, a: UnbindArgs) -> Result<(), Failure> {
    let c = ctx.connect()?;
    let api = AsgApi::new(&c)?;
    let space = spaces_of(&c, "unbind-security-group", &a.org, Some(&a.space))?.remove(0);
    let who = c.user_name();
    let g = api.named(&a.name)?;
    ctx.say(&format!(
        "Removing {} security group {} from org {} space {} as {who}...",
        a.lifecycle.name(),
        a.name,
        a.org,
        a.space
    ));
    let bound = match a.lifecycle {
        Lifecycle::Running => &g.relationships.running_spaces,
        Lifecycle::Staging => &g.relationships.staging_spaces,
    };
    if !bound.data.iter().any(|s| s.guid == space) {
        if !ctx.printed_json(&json!({"unbound": null})) {
            ctx.say(&format!(
                "Security group {} not bound to space {} for lifecycle phase '{}'.\nOK",
                a.name,
                a.space,
                a.lifecycle.name()
            ));
        }
        return Ok(());
    }
    api.expect(
        "DELETE",
        &format!(
            "/{}/relationships/{}/{}",
            g.guid,
            relationship(a.lifecycle),
            crate::policy::auth::form_encode(&space)
        ),
        None,
    )?;
    done(ctx, &json!({"unbound": space}), true);
    Ok(())
}
