//! `whoami`: who the policy server sees the caller as (admin).

use crate::cli::context::{Ctx, Failure};

pub const HELP: &str = "\
NAME:
   whoami - Show who the policy server sees you as (admin)

USAGE:
   netman whoami
";

pub fn run(ctx: &mut Ctx) -> Result<(), Failure> {
    let c = ctx.connect()?;
    let who = c
        .client
        .whoami()
        .map_err(|e| format!("getting the current user: {e}"))?;
    if !ctx.printed_json(&who) {
        ctx.say(&who.subject);
    }
    Ok(())
}
