//! `security-group NAME`: one group's rules and bindings, as `cf security-group`.

use super::asg::{binding_rows, table, AsgApi, Places};
use crate::cli::context::{Ctx, Failure};
use clap::Args;

pub const HELP: &str = "\
NAME:
   security-group - Show a single security group

USAGE:
   netman security-group SECURITY_GROUP

EXAMPLES:
   netman security-group dns
   netman security-group dns --json

SEE ALSO:
   bind-running-security-group, bind-security-group, bind-staging-security-group, security-groups
";

#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    #[arg(value_name = "SECURITY_GROUP")]
    pub name: String,
}

pub fn run(ctx: &mut Ctx, a: NameArgs) -> Result<(), Failure> {
    let c = ctx.connect()?;
    let api = AsgApi::new(&c)?;
    ctx.say(&format!(
        "Getting info for security group {} as {}...",
        a.name,
        c.user_name()
    ));
    let g = api.named(&a.name)?;
    if ctx.printed_json(&g) {
        return Ok(());
    }
    let places = Places::of(c.cc.as_ref(), &[&g])?;
    ctx.say("OK\n");
    let rules = serde_json::to_string_pretty(&g.rules).unwrap_or_else(|_| "[]".into());
    ctx.say(&format!("name:    {}\nrules:\n{rules}\n", g.name));
    let rows: Vec<Vec<String>> = binding_rows(&g, &places)
        .into_iter()
        .map(|r| r.to_vec())
        .collect();
    if rows.is_empty() {
        ctx.say("No spaces assigned");
    } else {
        let _ = write!(
            ctx.out,
            "{}",
            table(&["organization", "space", "lifecycle"], &rows)
        );
    }
    Ok(())
}
