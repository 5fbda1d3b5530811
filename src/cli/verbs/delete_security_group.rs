//! `delete-security-group NAME [-f]`, as `cf delete-security-group`.

use super::asg::AsgApi;
use crate::cli::context::{Ctx, Failure};
use clap::Args;
use serde_json::json;
use std::io::BufRead;

pub const HELP: &str = "\
NAME:
   delete-security-group - Deletes a security group

USAGE:
   netman delete-security-group SECURITY_GROUP [-f]

EXAMPLES:
   netman delete-security-group my-asg -f

OPTIONS:
   -f      Force deletion without confirmation

SEE ALSO:
   security-groups
";

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    #[arg(value_name = "SECURITY_GROUP")]
    pub name: String,
    #[arg(short = 'f')]
    pub force: bool,
}

pub fn run(ctx: &mut Ctx, a: DeleteArgs) -> Result<(), Failure> {
    if !a.force && !ctx.json() {
        let _ = write!(
            ctx.out,
            "Really delete the security group {}? [yN]: ",
            a.name
        );
        let _ = ctx.out.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            ctx.say("Delete cancelled");
            return Ok(());
        }
    }
    let c = ctx.connect()?;
    let api = AsgApi::new(&c)?;
    ctx.say(&format!(
        "Deleting security group {} as {}...",
        a.name,
        c.user_name()
    ));
    let Some(g) = api.by_name(&a.name)? else {
        if ctx.printed_json(&json!({"deleted": null})) {
            return Ok(());
        }
        ctx.say(&format!("Security group '{}' does not exist.\nOK", a.name));
        return Ok(());
    };
    api.expect("DELETE", &format!("/{}", g.guid), None)?;
    if !ctx.printed_json(&json!({"deleted": g.guid})) {
        ctx.say("OK");
    }
    Ok(())
}
