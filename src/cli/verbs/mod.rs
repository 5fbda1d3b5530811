//! The CLI's verbs, one file each: its help text (`HELP`), its arguments (if any) and its `run`.
//!
//! A new verb: a file here with those three, then in this file a variant of [`Command`], its arm
//! in [`Command::run`] and its names in [`help`]; and a line in the top-level help
//! (`super::args::HELP`).

pub mod access;
pub mod allow_access;
pub mod cleanup;
pub mod explain;
pub mod list_access;
pub mod remove_access;
pub mod tags;
pub mod whoami;

use super::context::{Ctx, Failure};
use clap::Subcommand;
#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(name = "allow-access", visible_alias = "add-network-policy", override_help = allow_access::HELP)]
    AllowAccess(access::PolicyArgs),
    #[command(name = "list-access", visible_alias = "network-policies", override_help = list_access::HELP)]
    ListAccess(list_access::ListArgs),
    #[command(
        name = "remove-access",
        visible_aliases = ["remove-network-policy", "deny-access"],
        override_help = remove_access::HELP
    )]
    RemoveAccess(access::PolicyArgs),
    #[command(override_help = explain::HELP)]
    Explain(explain::ExplainArgs),
    #[command(override_help = tags::HELP)]
    Tags,
    #[command(override_help = whoami::HELP)]
    Whoami,
    #[command(override_help = cleanup::HELP)]
    Cleanup,
    /// `netman help [COMMAND]`
    #[command(hide = true)]
    Help { command: Option<String> },
}

impl Command {
    pub fn run(self, ctx: &mut Ctx) -> Result<(), Failure> {
        match self {
            Command::AllowAccess(a) => allow_access::run(ctx, a),
            Command::RemoveAccess(a) => remove_access::run(ctx, a),
            Command::ListAccess(a) => list_access::run(ctx, a),
            Command::Explain(a) => explain::run(ctx, a),
            Command::Tags => tags::run(ctx),
            Command::Whoami => whoami::run(ctx),
            Command::Cleanup => cleanup::run(ctx),
            Command::Help { command } => show_help(ctx, command.as_deref()),
        }
    }
}

/// Help text of a command by any of its names.
pub fn help(name: &str) -> Option<&'static str> {
    Some(match name {
        "allow-access" | "add-network-policy" => allow_access::HELP,
        "list-access" | "network-policies" => list_access::HELP,
        "remove-access" | "remove-network-policy" | "deny-access" => remove_access::HELP,
        "explain" => explain::HELP,
        "tags" => tags::HELP,
        "whoami" => whoami::HELP,
        "cleanup" => cleanup::HELP,
        _ => return None,
    })
}

/// `netman help [COMMAND]`: the top-level help, or the command's.
fn show_help(ctx: &mut Ctx, command: Option<&str>) -> Result<(), Failure> {
    let text = match command {
        None => super::args::HELP,
        Some(name) => help(name).ok_or_else(|| Failure::UnknownCommand(name.to_string()))?,
    };
    let _ = write!(ctx.out, "{text}");
    Ok(())
}
