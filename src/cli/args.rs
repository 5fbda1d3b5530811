//! Command-line syntax (clap derive) and help texts written like the cf CLI's.

use clap::{Args, Parser, Subcommand};

pub const HELP: &str = "\
NAME:
   netman - Manage container-to-container network policies on a netman policy server

USAGE:
   netman [global options] command [arguments...] [command options]

COMMANDS:
   allow-access, add-network-policy          Allow direct network traffic from one app to another
   list-access, network-policies             List direct network traffic policies
   remove-access, remove-network-policy      Remove policy that allows direct network traffic from one app to another
   tags                                      List the tags assigned to apps (admin)
   whoami                                    Show who the policy server sees you as (admin)
   cleanup                                   Remove policies of apps that no longer exist (admin)

GLOBAL OPTIONS:
   --api URL                 Policy server or CF API endpoint (Default: NETMAN_API, else the cf CLI target)
   --token TOKEN             Access token, with or without 'bearer ' (Default: NETMAN_TOKEN, else the cf CLI token)
   --skip-ssl-validation     Skip verification of the API endpoint's TLS certificate
   --ca-cert FILE            Trust the CA in FILE (PEM) for the API endpoint
   --cc-api URL              Cloud Controller for app names (Default: NETMAN_CC_API, else the cf CLI target)
   --app-guids               Take SOURCE_APP and DESTINATION_APP as app GUIDs, not names
   --json                    Print results as JSON for scripts
   -h, --help                Show help
   -V, --version             Print the version

ENVIRONMENT:
   NETMAN_API=https://api.example.com        Policy server or CF API endpoint
   NETMAN_TOKEN=eyJ...                       Access token
   NETMAN_SKIP_SSL_VALIDATION=true           Same as --skip-ssl-validation
   NETMAN_CA_CERT=/path/to/ca.crt            Same as --ca-cert
   NETMAN_CC_API=https://api.example.com     Same as --cc-api
   NETMAN_ORG=org NETMAN_SPACE=space         Target org and space for app names (Default: the cf CLI target)
   CF_HOME=path/to/dir/                      Where the cf CLI config (.cf/config.json) is (Default: $HOME)
   CF_TRACE=true (or NETMAN_TRACE=true)      Print HTTP requests and responses to stderr (tokens hidden)

   Without a Cloud Controller, apps are given by GUID.
   Use 'netman help COMMAND' or 'netman COMMAND --help' for more about a command.
";

pub const HELP_ALLOW: &str = "\
NAME:
   allow-access - Allow direct network traffic from one app to another

USAGE:
   netman allow-access SOURCE_APP DESTINATION_APP [-s DESTINATION_SPACE_NAME [-o DESTINATION_ORG_NAME]] [--protocol (tcp | udp) --port RANGE]

EXAMPLES:
   netman allow-access frontend backend --protocol tcp --port 8081
   netman allow-access frontend backend --protocol tcp --port 8080-8090
   netman allow-access frontend backend -s backend-space -o backend-org --protocol udp --port 5353
   netman allow-access --app-guids 2ffe4b0f-... 5a1d7c3e-... --port 8080

ALIAS:
   add-network-policy

OPTIONS:
   --destination-app      Name of the app to connect to (instead of the DESTINATION_APP argument)
   -o                     The org of the destination app (Default: targeted org)
   --port                 Port or range of ports for connection to destination app (Default: 8080)
   --protocol             Protocol that apps are connected with (Default: tcp)
   -s                     The space of the destination app (Default: targeted space)

SEE ALSO:
   list-access, remove-access
";

pub const HELP_LIST: &str = "\
NAME:
   list-access - List direct network traffic policies

USAGE:
   netman list-access [--app APP | --source SOURCE_APP]

EXAMPLES:
   netman list-access
   netman list-access --app frontend
   netman list-access --json

ALIAS:
   network-policies

OPTIONS:
   --app        List only policies where APP is the source or the destination
   --source     List only policies where SOURCE_APP is the source

SEE ALSO:
   allow-access, remove-access
";

pub const HELP_REMOVE: &str = "\
NAME:
   remove-access - Remove policy that allows direct network traffic from one app to another

USAGE:
   netman remove-access SOURCE_APP DESTINATION_APP [-s DESTINATION_SPACE_NAME [-o DESTINATION_ORG_NAME]] --protocol (tcp | udp) --port RANGE

EXAMPLES:
   netman remove-access frontend backend --protocol tcp --port 8081
   netman remove-access frontend backend --protocol tcp --port 8080-8090

ALIAS:
   remove-network-policy, deny-access

OPTIONS:
   --destination-app      Name of the app (instead of the DESTINATION_APP argument)
   -o                     The org of the destination app (Default: targeted org)
   --port                 Port or range of ports that destination app is connected with
   --protocol             Protocol that apps are connected with
   -s                     The space of the destination app (Default: targeted space)

SEE ALSO:
   allow-access, list-access
";

pub const HELP_TAGS: &str = "\
NAME:
   tags - List the tags assigned to apps (admin)

USAGE:
   netman tags

SEE ALSO:
   list-access
";

pub const HELP_WHOAMI: &str = "\
NAME:
   whoami - Show who the policy server sees you as (admin)

USAGE:
   netman whoami
";

pub const HELP_CLEANUP: &str = "\
NAME:
   cleanup - Remove policies of apps that no longer exist (admin)

USAGE:
   netman cleanup

SEE ALSO:
   list-access
";

/// Help text of a command by any of its names.
pub fn command_help(name: &str) -> Option<&'static str> {
    Some(match name {
        "allow-access" | "add-network-policy" => HELP_ALLOW,
        "list-access" | "network-policies" => HELP_LIST,
        "remove-access" | "remove-network-policy" | "deny-access" => HELP_REMOVE,
        "tags" => HELP_TAGS,
        "whoami" => HELP_WHOAMI,
        "cleanup" => HELP_CLEANUP,
        _ => return None,
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "netman",
    version,
    override_help = HELP,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    #[arg(long, global = true, value_name = "URL")]
    pub api: Option<String>,
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    #[arg(long, global = true)]
    pub skip_ssl_validation: bool,
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<String>,
    #[arg(long, global = true, value_name = "URL")]
    pub cc_api: Option<String>,
    #[arg(long, global = true)]
    pub app_guids: bool,
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(name = "allow-access", visible_alias = "add-network-policy", override_help = HELP_ALLOW)]
    AllowAccess(PolicyArgs),
    #[command(name = "list-access", visible_alias = "network-policies", override_help = HELP_LIST)]
    ListAccess(ListArgs),
    #[command(
        name = "remove-access",
        visible_aliases = ["remove-network-policy", "deny-access"],
        override_help = HELP_REMOVE
    )]
    RemoveAccess(PolicyArgs),
    #[command(override_help = HELP_TAGS)]
    Tags,
    #[command(override_help = HELP_WHOAMI)]
    Whoami,
    #[command(override_help = HELP_CLEANUP)]
    Cleanup,
    /// `netman help [COMMAND]`
    #[command(hide = true)]
    Help { command: Option<String> },
}

#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    pub source: Option<String>,
    pub destination: Option<String>,
    /// The cf CLI 6 form of the destination.
    #[arg(long = "destination-app", value_name = "DESTINATION_APP")]
    pub destination_app: Option<String>,
    #[arg(short = 's', value_name = "DESTINATION_SPACE_NAME")]
    pub space: Option<String>,
    #[arg(short = 'o', value_name = "DESTINATION_ORG_NAME")]
    pub org: Option<String>,
    #[arg(long)]
    pub protocol: Option<String>,
    #[arg(long)]
    pub port: Option<String>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    #[arg(long, value_name = "SOURCE_APP")]
    pub source: Option<String>,
}

/// A validated port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: i64,
    pub end: i64,
}

/// `N` or `N-M`, each 1-65535, start <= end. Messages as the original plugin printed them.
pub fn parse_port(value: &str) -> Result<PortRange, String> {
    let bad = || format!("Port is not valid: {value}");
    let number = |s: &str| -> Result<i64, String> {
        if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (start, end) = match value.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let n = number(value)?;
            (n, n)
        }
    };
    if !(1..=65535).contains(&start) || !(1..=65535).contains(&end) {
        return Err("Port is not valid. Must be in range <1-65535>.".into());
    }
    if start > end {
        return Err(format!(
            "Port is not valid: {value}. The start of a range must not be greater than its end."
        ));
    }
    Ok(PortRange { start, end })
}

pub fn parse_protocol(value: &str) -> Result<String, String> {
    match value {
        "tcp" | "udp" => Ok(value.to_string()),
        _ => Err("Protocol is not valid. Must be tcp or udp.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ports_and_protocols() {
        assert_eq!(
            parse_port("8080").unwrap(),
            PortRange {
                start: 8080,
                end: 8080
            }
        );
        assert_eq!(
            parse_port("1-65535").unwrap(),
            PortRange {
                start: 1,
                end: 65535
            }
        );
        for bad in [
            "",
            "x",
            "80-",
            "-80",
            "8o",
            "80-90-100",
            " 80",
            "+80",
            "9999999999",
        ] {
            assert_eq!(
                parse_port(bad).unwrap_err(),
                format!("Port is not valid: {bad}")
            );
        }
        for range in ["0", "65536", "0-10", "10-70000"] {
            assert_eq!(
                parse_port(range).unwrap_err(),
                "Port is not valid. Must be in range <1-65535>."
            );
        }
        assert!(parse_port("90-80")
            .unwrap_err()
            .contains("greater than its end"));
        assert_eq!(parse_protocol("udp").unwrap(), "udp");
        for bad in ["TCP", "icmp", "all", ""] {
            assert_eq!(
                parse_protocol(bad).unwrap_err(),
                "Protocol is not valid. Must be tcp or udp."
            );
        }
    }
}
