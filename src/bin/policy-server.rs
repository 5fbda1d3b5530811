//! policy-server: the external policy API (bearer tokens), the internal API for cell agents
//! (mutual TLS), and a loopback debug server (metrics, health, log level).

use clap::{Parser, Subcommand};
use netman::daemon::{self, DaemonArgs};
use netman::policy::adopt::MigrateOptions;
use netman::policy::app::{self, Components, Settings};
use netman::policy::config::PolicyServerConfig;
use netman::policy::external::ExternalSettings;
use netman::policy::{admin, auth, cc, store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const SOURCE: &str = "policy-server";

#[derive(Parser)]
#[command(name = "policy-server", version, about = "netman policy server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: DaemonArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the database to netman's schema, then exit: create it, apply missing migrations,
    /// or adopt the original cf-networking policy server's database in place (every policy and
    /// tag kept). Waits for the database like the server does.
    Migrate {
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Convert netman's schema back to the original's (cf-networking HEAD).
        #[arg(long)]
        to_original: bool,
    },
    /// Write every policy, tag and security group as one JSON document.
    Export {
        /// Write here (atomically) instead of to standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Load an export document into an empty database (of any backend).
    Import {
        /// Replace the policies, tags and security groups the database holds.
        #[arg(long)]
        replace: bool,
        /// Validate the document only; touch no database.
        #[arg(long)]
        dry_run: bool,
        /// The document (`-` or none: standard input).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

fn main() {
    daemon::block_shutdown_signals();
    let cli = Cli::parse_from(admin::hoist_server_flags(std::env::args_os()));
    cli.args.init_logging(SOURCE);
    let config: PolicyServerConfig = daemon::load_config(SOURCE, &cli.args);

    if let Some(command) = cli.command {
        let result = match command {
            Command::Migrate {
                dry_run,
                to_original,
            } => admin::migrate(
                &config,
                MigrateOptions {
                    dry_run,
                    to_original,
                },
            ),
            Command::Export { output } => admin::export(&config, output.as_deref()),
            Command::Import {
                replace,
                dry_run,
                file,
            } => admin::import(&config, file.as_deref(), replace, dry_run),
        };
        match result {
            Ok(()) => return,
            Err(e) => daemon::fail(SOURCE, e),
        }
    }

    let store = store::open(&config.database, config.tag_length)
        .unwrap_or_else(|e| daemon::fail(SOURCE, format!("opening the database: {e}")));
    let authenticator =
        auth::build(&config.auth).unwrap_or_else(|e| daemon::fail(SOURCE, format!("auth: {e}")));
    let cloud_controller: Option<Arc<dyn cc::CloudController>> =
        match (config.cc_config(), config.auth.uaa_client_config()) {
            (Some(cc_config), Some(uaa)) => Some(
                cc::HttpCloudController::new(&cc_config, &uaa)
                    .map(|c| Arc::new(c) as Arc<dyn cc::CloudController>)
                    .unwrap_or_else(|e| daemon::fail(SOURCE, format!("cloud controller: {e}"))),
            ),
            _ => None,
        };

    let settings = Settings {
        external_addr: format!("{}:{}", config.listen_host, config.listen_port),
        external_tls: config.enable_tls.then(|| {
            (
                PathBuf::from(&config.external_cert_file),
                PathBuf::from(&config.external_key_file),
            )
        }),
        internal_addr: format!(
            "{}:{}",
            config.internal_listen_host, config.internal_listen_port
        ),
        internal_tls: (
            PathBuf::from(&config.ca_cert_file),
            PathBuf::from(&config.server_cert_file),
            PathBuf::from(&config.server_key_file),
        ),
        debug_addr: format!("{}:{}", config.debug_server_host, config.debug_server_port),
        external: ExternalSettings {
            max_policies_per_source: config.max_policies_per_app_source,
            enable_space_developer_self_service: config.enable_space_developer_self_service,
            allowed_cors_domains: config.allowed_cors_domains.clone(),
            tls_enabled: config.enable_tls,
        },
        cleanup_interval: (config.cleanup_interval_seconds > 0)
            .then(|| Duration::from_secs(config.cleanup_interval_seconds)),
        http_workers: config.http_workers,
    };
    let running = app::start(
        settings,
        Components {
            store,
            auth: authenticator,
            cc: cloud_controller,
        },
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, e));
    log::warn!(
        "policy-server started: external {} internal {} debug {}",
        running.external.local_addr(),
        running.internal.local_addr(),
        running.debug.local_addr()
    );
    let signal = daemon::wait_for_shutdown();
    log::warn!("policy-server stopping on {signal}");
    running.shutdown();
}
