//! The `netman` CLI: manage network policies on a policy server from a terminal, like the cf CLI
//! plugin of the original (`allow-access`, `list-access`, `remove-access`) with the modern cf
//! names as aliases (`add-network-policy`, `network-policies`, `remove-network-policy`), plus
//! `tags`, `whoami` and `cleanup`. Apps by GUID, or by name when a Cloud Controller is known.
//!
//! [`verbs`] one file a verb; [`context`] what a verb works with; [`args`] the global options
//! and top-level help; [`target`] where to talk to and as whom; [`client`] the policy server's
//! API; [`names`] the Cloud Controller's app, space and org names; [`output`] tables.

pub mod args;
pub mod client;
pub mod context;
pub mod names;
pub mod output;
pub mod target;
pub mod trace;
pub mod verbs;

use args::Cli;
use clap::error::ErrorKind;
use clap::Parser;
use context::{Ctx, Failure};
use std::io::Write;

/// Runs the CLI with the process's arguments and environment; returns the exit status.
pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let env = |k: &str| std::env::var(k).ok();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run(&argv, &env, &mut stdout.lock(), &mut stderr.lock())
}

/// Runs the CLI: `argv` includes the program name. Results go to `out`, `FAILED` and the error
/// to `err`. Returns 0 on success, 1 on any failure.
pub fn run(
    argv: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return parse_error(argv, e, out, err),
    };
    let truthy = |k: &str| {
        env(k).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    };
    trace::enable(truthy("CF_TRACE") || truthy("NETMAN_TRACE"));
    let Some(command) = cli.command else {
        let _ = write!(out, "{}", args::HELP);
        return 0;
    };
    let mut ctx = Ctx {
        global: &cli.global,
        out,
        env,
    };
    match command.run(&mut ctx) {
        Ok(()) => 0,
        Err(Failure::Usage { command, reason }) => {
            usage_failure(command, &reason, ctx.out, err);
            1
        }
        Err(Failure::Failed(message)) => {
            if ctx.json() {
                ctx.print_json(&serde_json::json!({ "error": message }));
            } else {
                let _ = writeln!(err, "FAILED\n{message}");
            }
            1
        }
        Err(Failure::UnknownCommand(name)) => unknown_command(&name, err),
    }
}

fn unknown_command(name: &str, err: &mut dyn Write) -> i32 {
    let _ = writeln!(
        err,
        "FAILED\n'{name}' is not a registered command. See 'netman help'."
    );
    1
}

fn usage_failure(command: &str, reason: &str, out: &mut dyn Write, err: &mut dyn Write) {
    let _ = writeln!(err, "FAILED\nIncorrect usage. {reason}\n");
    let help = verbs::help(command).unwrap_or(args::HELP);
    let _ = write!(out, "{help}");
}

fn parse_error(argv: &[String], e: clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(out, "{}", e.render());
            0
        }
        ErrorKind::InvalidSubcommand => {
            let name = argv
                .iter()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .cloned()
                .unwrap_or_default();
            unknown_command(&name, err)
        }
        _ => {
            let command = argv
                .iter()
                .skip(1)
                .find(|a| verbs::help(a).is_some())
                .cloned()
                .unwrap_or_default();
            let rendered = e.render().to_string();
            let reason = rendered
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_string();
            usage_failure(&command, &reason, out, err);
            1
        }
    }
}
