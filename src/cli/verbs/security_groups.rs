//! `security-groups`: every security group and where it applies, as `cf security-groups`.

use super::asg::{binding_rows, table, AsgApi, Places};
use crate::cli::context::{Ctx, Failure};

pub const HELP: &str = "\
NAME:
   security-groups - List all security groups

USAGE:
   netman security-groups

EXAMPLES:
   netman security-groups
   netman security-groups --json

SEE ALSO:
   bind-running-security-group, bind-security-group, bind-staging-security-group, security-group
";

pub fn run(ctx: &mut Ctx) -> Result<(), Failure> {
    let c = ctx.connect()?;
    let api = AsgApi::new(&c)?;
    ctx.say(&format!("Getting security groups as {}...", c.user_name()));
    let groups = api.all()?;
    if ctx.printed_json(&groups) {
        return Ok(());
    }
    let all: Vec<_> = groups.iter().collect();
    let places = Places::of(c.cc.as_ref(), &all)?;
    ctx.say("OK\n");
    if groups.is_empty() {
        ctx.say("No security groups.");
        return Ok(());
    }
    let mut rows = Vec::new();
    for g in &groups {
        let bindings = binding_rows(g, &places);
        if bindings.is_empty() {
            rows.push(vec![
                g.name.clone(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for [org, space, lifecycle] in bindings {
            rows.push(vec![g.name.clone(), org, space, lifecycle]);
        }
    }
    let _ = write!(
        ctx.out,
        "{}",
        table(&["name", "organization", "space", "lifecycle"], &rows)
    );
    Ok(())
}
