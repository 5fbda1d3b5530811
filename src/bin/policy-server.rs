//! policy-server: the external policy API (bearer tokens), the internal API for cell agents
//! (mutual TLS), and a loopback debug server (metrics, health, log level).

use clap::{Parser, Subcommand};
use netman::daemon::{self, DaemonArgs};
use netman::policy::app::{self, Components, Settings};
use netman::policy::config::PolicyServerConfig;
use netman::policy::external::ExternalSettings;
use netman::policy::{auth, cc, store};
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
    /// Run the database migrations alone (retrying until the database answers or the
    /// connect timeout passes), then exit.
    Migrate,
}

fn main() {
    daemon::block_shutdown_signals();
    let cli = Cli::parse();
    cli.args.init_logging(SOURCE);
    let config: PolicyServerConfig = daemon::load_config(SOURCE, &cli.args);

    if let Some(Command::Migrate) = cli.command {
        match store::migrate(&config.database, config.tag_length) {
            Ok(version) => {
                println!("{SOURCE}: database schema at version {version}");
                return;
            }
            Err(e) => daemon::fail(SOURCE, format!("migrate: {e}")),
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
        http: config.http_settings(),
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
