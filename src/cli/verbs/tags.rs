//! `tags`: the tag of every app (admin).

use crate::cli::context::{Ctx, Failure};
use crate::cli::output;

pub const HELP: &str = "\
NAME:
   tags - List the tags assigned to apps (admin)

USAGE:
   netman tags

SEE ALSO:
   list-access
";

pub fn run(ctx: &mut Ctx) -> Result<(), Failure> {
    let c = ctx.connect()?;
    ctx.say(&format!("Listing tags as {}...", c.user_name()));
    let resp = c.client.tags().map_err(|e| format!("getting tags: {e}"))?;
    if ctx.printed_json(&resp) {
        return Ok(());
    }
    ctx.say("OK\n");
    let rows: Vec<Vec<String>> = resp
        .tags
        .iter()
        .map(|t| vec![t.id.clone(), t.tag.clone(), t.kind.clone()])
        .collect();
    let text = output::table(&["Id", "Tag", "Type"], &rows);
    let _ = write!(ctx.out, "{text}");
    Ok(())
}
