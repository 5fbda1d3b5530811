//! garden-external-networker: garden's network plugin. garden execs it per container operation:
//! `--action up|down|net-in|net-out|bulk-net-out|reconcile --handle H --configFile F`, JSON on
//! stdin/stdout. It runs the CNI chain (`cni_exec`), bind-mounts the netns (`bind_mount`), records
//! the container for the policy agent (in the cell's store, `crate::cell::store`), maps host ports
//! (`ports`) and installs the container's NetIn/NetOut/c2c rules (`rules`, through
//! `crate::iptables`) behind the cell-wide default deny (`guard`). The actions are in `lifecycle`; failures are `Error`s, printed as one line
//! of stderr by the binary.

pub mod bind_mount;
pub mod cni_cache;
pub mod cni_exec;
pub mod config;
pub mod error;
pub mod guard;
pub mod lifecycle;
pub mod names;
pub mod ports;
pub mod protocol;
pub mod rules;

pub use config::Config;
pub use error::Error;
pub use lifecycle::Networker;

use protocol::parse_stdin;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    Up,
    Down,
    #[value(name = "net-in")]
    NetIn,
    #[value(name = "net-out")]
    NetOut,
    #[value(name = "bulk-net-out")]
    BulkNetOut,
    Reconcile,
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "garden-external-networker",
    about = "garden's external network plugin (netman). This is a plugin for Garden-runC. Don't run it directly."
)]
pub struct Args {
    #[arg(long, value_enum, required_unless_present = "check_config")]
    pub action: Option<Action>,
    /// Container handle (all actions but reconcile).
    #[arg(long)]
    pub handle: Option<String>,
    #[arg(long = "configFile", value_name = "FILE")]
    pub config_file: PathBuf,
    /// Validate the config and the CNI config it points to, then exit (no action runs).
    #[arg(long, conflicts_with_all = ["action", "handle"])]
    pub check_config: bool,
}

/// `--check-config`: the config was loaded (every key checked); the CNI config directory must
/// hold a loadable network configuration, or every `up` would fail.
pub fn check_config(args: &Args, config: &Config) -> Result<String, Error> {
    let dir = std::path::Path::new(&config.cni_config_dir);
    match cni_exec::load(dir)? {
        Some(list) => Ok(format!(
            "garden-external-networker: config {} is valid (CNI network {:?} from {})",
            args.config_file.display(),
            list.conf.name,
            list.file.display()
        )),
        None => Err(Error::NoCniConfig(dir.to_path_buf())),
    }
}

/// Runs one action; `stdin` is read only by the actions that take input (its error is a
/// message). Returns the stdout text.
pub fn run(
    args: &Args,
    config: Config,
    stdin: impl FnOnce() -> Result<String, String>,
) -> Result<String, Error> {
    if args.check_config {
        return check_config(args, &config);
    }
    let missing = |flag: &str| Error::Input(format!("missing required flag --{flag}"));
    let action = args.action.ok_or_else(|| missing("action"))?;
    let handle = match (&args.handle, action) {
        (Some(h), _) => {
            names::validate_handle(h)?;
            h.clone()
        }
        (None, Action::Reconcile) => String::new(),
        (None, _) => return Err(missing("handle")),
    };
    let stdin = || stdin().map_err(Error::Input);
    let n = Networker::new(config);
    match action {
        Action::Up => {
            let input: protocol::UpInput = parse_stdin("up", &stdin()?)?;
            let out = n.up(&handle, &input)?;
            Ok(serde_json::to_string(&out).expect("serialisable"))
        }
        Action::Down => {
            n.down(&handle)?;
            Ok(String::new())
        }
        Action::NetIn => {
            let input: protocol::NetInInput = parse_stdin("net-in", &stdin()?)?;
            let out = n.net_in(&handle, &input)?;
            Ok(serde_json::to_string(&out).expect("serialisable"))
        }
        Action::NetOut => {
            let input: protocol::NetOutInput = parse_stdin("net-out", &stdin()?)?;
            n.net_out(
                &handle,
                input.container_ip,
                std::slice::from_ref(&input.netout_rule),
            )?;
            Ok(String::new())
        }
        Action::BulkNetOut => {
            let input: protocol::BulkNetOutInput = parse_stdin("bulk-net-out", &stdin()?)?;
            n.net_out(&handle, input.container_ip, &input.netout_rules)?;
            Ok(String::new())
        }
        Action::Reconcile => {
            let text = stdin()?;
            let input: protocol::ReconcileInput = if text.trim().is_empty() {
                Default::default()
            } else {
                parse_stdin("reconcile", &text)?
            };
            let out = n.reconcile(input.handles.as_deref())?;
            Ok(serde_json::to_string(&out).expect("serialisable"))
        }
    }
}
