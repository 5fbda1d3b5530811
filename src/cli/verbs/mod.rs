//! The CLI's verbs, one file each: its help text (`HELP`), its arguments (if any) and its `run`.
//!
//! A new verb: a file here with those three, then in this file a variant of [`Command`], its arm
//! in [`Command::run`] and its names in [`help`]; and a line in the top-level help
//! (`super::args::HELP`).

pub mod access;
pub mod allow_access;
pub mod asg;
pub mod bind_global_security_group;
pub mod bind_security_group;
pub mod cleanup;
pub mod create_security_group;
pub mod delete_security_group;
pub mod explain;
pub mod internal_routes;
pub mod list_access;
pub mod map_route;
pub mod remove_access;
pub mod routes;
pub mod security_group;
pub mod security_groups;
pub mod tags;
pub mod unmap_route;
pub mod update_security_group;
pub mod whoami;

use super::context::{Ctx, Failure};
use crate::asg::Lifecycle;
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
    #[command(name = "security-groups", override_help = security_groups::HELP)]
    SecurityGroups,
    #[command(name = "security-group", override_help = security_group::HELP)]
    SecurityGroup(security_group::NameArgs),
    #[command(name = "create-security-group", override_help = create_security_group::HELP)]
    CreateSecurityGroup(create_security_group::RulesArgs),
    #[command(name = "update-security-group", override_help = update_security_group::HELP)]
    UpdateSecurityGroup(create_security_group::RulesArgs),
    #[command(name = "delete-security-group", override_help = delete_security_group::HELP)]
    DeleteSecurityGroup(delete_security_group::DeleteArgs),
    #[command(name = "bind-security-group", override_help = bind_security_group::BIND_HELP)]
    BindSecurityGroup(bind_security_group::BindArgs),
    #[command(name = "unbind-security-group", override_help = bind_security_group::UNBIND_HELP)]
    UnbindSecurityGroup(bind_security_group::UnbindArgs),
    #[command(name = "bind-running-security-group", override_help = bind_global_security_group::BIND_RUNNING_HELP)]
    BindRunningSecurityGroup(security_group::NameArgs),
    #[command(name = "bind-staging-security-group", override_help = bind_global_security_group::BIND_STAGING_HELP)]
    BindStagingSecurityGroup(security_group::NameArgs),
    #[command(name = "unbind-running-security-group", override_help = bind_global_security_group::UNBIND_RUNNING_HELP)]
    UnbindRunningSecurityGroup(security_group::NameArgs),
    #[command(name = "unbind-staging-security-group", override_help = bind_global_security_group::UNBIND_STAGING_HELP)]
    UnbindStagingSecurityGroup(security_group::NameArgs),
    #[command(name = "map-route", override_help = map_route::HELP)]
    MapRoute(internal_routes::RouteArgs),
    #[command(name = "unmap-route", override_help = unmap_route::HELP)]
    UnmapRoute(internal_routes::RouteArgs),
    #[command(override_help = routes::HELP)]
    Routes,
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
            Command::SecurityGroups => security_groups::run(ctx),
            Command::SecurityGroup(a) => security_group::run(ctx, a),
            Command::CreateSecurityGroup(a) => create_security_group::run(ctx, a),
            Command::UpdateSecurityGroup(a) => update_security_group::run(ctx, a),
            Command::DeleteSecurityGroup(a) => delete_security_group::run(ctx, a),
            Command::BindSecurityGroup(a) => bind_security_group::bind(ctx, a),
            Command::UnbindSecurityGroup(a) => bind_security_group::unbind(ctx, a),
            Command::BindRunningSecurityGroup(a) => {
                bind_global_security_group::run(ctx, a, Lifecycle::Running, true)
            }
            Command::BindStagingSecurityGroup(a) => {
                bind_global_security_group::run(ctx, a, Lifecycle::Staging, true)
            }
            Command::UnbindRunningSecurityGroup(a) => {
                bind_global_security_group::run(ctx, a, Lifecycle::Running, false)
            }
            Command::UnbindStagingSecurityGroup(a) => {
                bind_global_security_group::run(ctx, a, Lifecycle::Staging, false)
            }
            Command::MapRoute(a) => map_route::run(ctx, a),
            Command::UnmapRoute(a) => unmap_route::run(ctx, a),
            Command::Routes => routes::run(ctx),
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
        "security-groups" => security_groups::HELP,
        "security-group" => security_group::HELP,
        "create-security-group" => create_security_group::HELP,
        "update-security-group" => update_security_group::HELP,
        "delete-security-group" => delete_security_group::HELP,
        "bind-security-group" => bind_security_group::BIND_HELP,
        "unbind-security-group" => bind_security_group::UNBIND_HELP,
        "bind-running-security-group" => bind_global_security_group::BIND_RUNNING_HELP,
        "bind-staging-security-group" => bind_global_security_group::BIND_STAGING_HELP,
        "unbind-running-security-group" => bind_global_security_group::UNBIND_RUNNING_HELP,
        "unbind-staging-security-group" => bind_global_security_group::UNBIND_STAGING_HELP,
        "map-route" => map_route::HELP,
        "unmap-route" => unmap_route::HELP,
        "routes" => routes::HELP,
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
