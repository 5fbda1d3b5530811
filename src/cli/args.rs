//! The command line around the verbs (clap derive): the global options, the top-level help
//! written like the cf CLI's, and the parsers of values several verbs take. Each verb's own
//! arguments and help are in its file under [`super::verbs`].

use super::verbs::Command;
use clap::{Args, Parser};

pub const HELP: &str = "\
NAME:
   netman - Manage container-to-container network policies, security groups and internal routes on a netman policy server

USAGE:
   netman [global options] command [arguments...] [command options]

COMMANDS:
   allow-access, add-network-policy          Allow direct network traffic from one app to another
   list-access, network-policies             List direct network traffic policies
   remove-access, remove-network-policy      Remove policy that allows direct network traffic from one app to another
   explain                                   Explain whether an app may reach another, and which policy decides
   tags                                      List the tags assigned to apps (admin)
   whoami                                    Show who the policy server sees you as (admin)
   cleanup                                   Remove policies of apps that no longer exist (admin)
   map-route                                 Map an internal route (HOSTNAME.apps.internal) to an app
   unmap-route                               Remove an internal route from an app
   routes                                    List internal routes

SECURITY GROUPS (admin):
   security-groups                           List all security groups
   security-group                            Show a single security group
   create-security-group                     Create a security group
   update-security-group                     Update a security group
   delete-security-group                     Deletes a security group
   bind-security-group                       Bind a security group to a particular space, or all existing spaces of an org
   unbind-security-group                     Unbind a security group from a space
   bind-running-security-group               Bind a security group to the list of security groups to be used for running applications
   bind-staging-security-group               Bind a security group to the list of security groups to be used for staging applications globally
   unbind-running-security-group             Unbind a security group from the set of security groups for running applications globally
   unbind-staging-security-group             Unbind a security group from the set of security groups for staging applications globally

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

/// A validated port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
