//! `cleanup`: remove the policies of apps that no longer exist (admin).

use crate::cli::context::{Ctx, Failure};
use crate::cli::output::{self, policy_row};

pub const HELP: &str = "\
NAME:
   cleanup - Remove policies of apps that no longer exist (admin)

USAGE:
   netman cleanup

SEE ALSO:
   list-access
";

pub fn run(ctx: &mut Ctx) -> Result<(), Failure> {
    let c = ctx.connect()?;
    ctx.say(&format!(
        "Cleaning up stale policies as {}...",
        c.user_name()
    ));
    let resp = c
        .client
        .cleanup()
        .map_err(|e| format!("cleaning up policies: {e}"))?;
    if ctx.printed_json(&resp) {
        return Ok(());
    }
    ctx.say("OK\n");
    ctx.say(&format!("Removed {} stale policies", resp.total_policies));
    if !resp.policies.is_empty() {
        let rows: Vec<Vec<String>> = resp
            .policies
            .iter()
            .map(|p| policy_row(&p.source.id, &p.destination.id, p))
            .collect();
        let text = output::table(&["Source", "Destination", "Protocol", "Port"], &rows);
        let _ = write!(ctx.out, "\n{text}");
    }
    Ok(())
}
