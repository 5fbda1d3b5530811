//! vxlan-policy-agent: enforces network policy on this cell. See `netman::agent`.

use clap::Parser;
use netman::agent::client::PolicyClient;
use netman::agent::cycle::{run_poller, Settings};
use netman::agent::metrics::AgentMetrics;
use netman::agent::nft::{runner, C2cLogging, Table};
use netman::agent::server::{Debug, ForcePoll};
use netman::agent::{Agent, AgentConfig};
use netman::cell::Reader as StoreReader;
use netman::daemon::{self, DaemonArgs};
use netman::http::client::ClientTls;
use netman::http::{Server, ServerOptions};
use netman::metrics::DebugHandler;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

const SOURCE: &str = "vxlan-policy-agent";

#[derive(Parser)]
#[command(name = SOURCE, about = "Enforces container network policy on this cell")]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() {
    daemon::block_shutdown_signals();
    let args = Args::parse();
    args.daemon.init_logging(SOURCE);
    let config: AgentConfig = daemon::load_config(SOURCE, &args.daemon);

    let client = PolicyClient::new(
        &config.policy_server_url,
        &ClientTls {
            ca_cert_file: Some(config.ca_cert_file.clone()),
            client_cert_file: Some(config.client_cert_file.clone()),
            client_key_file: Some(config.client_key_file.clone()),
            skip_verification: false,
        },
        Duration::from_secs(config.client_timeout_seconds),
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, format!("policy server client: {e}")));

    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    let uptime = metrics.uptime.clone();
    let agent = Arc::new(Agent::new(
        Box::new(client),
        Box::new(Table {
            runner: runner(&config.nft_path),
        }),
        StoreReader::new(&config.cni_datastore_path),
        C2cLogging {
            enabled: config.iptables_c2c_logging,
            group: config.c2c_nflog_group,
            udp_per_sec: config.iptables_accepted_udp_logs_per_sec,
        },
        Settings {
            poll_interval: Duration::from_secs(config.poll_interval_seconds),
            full_sync_interval: Duration::from_secs(config.full_sync_interval_seconds),
            backoff_max: Duration::from_secs(config.backoff_max_seconds),
        },
        metrics,
    ));

    let health_agent = agent.clone();
    let debug = Server::start(
        &format!("{}:{}", config.debug_server_host, config.debug_server_port),
        ServerOptions {
            workers: 2,
            ..ServerOptions::default()
        },
        Debug {
            agent: agent.clone(),
            base: DebugHandler::new(
                Arc::new(registry),
                move || health_agent.health(),
                move || uptime.refresh(),
            ),
        },
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, format!("debug server: {e}")));
    let force = Server::start(
        &format!(
            "{}:{}",
            config.force_policy_poll_cycle_host, config.force_policy_poll_cycle_port
        ),
        ServerOptions {
            workers: 4,
            ..ServerOptions::default()
        },
        ForcePoll {
            agent: agent.clone(),
        },
    )
    .unwrap_or_else(|e| daemon::fail(SOURCE, format!("force-poll server: {e}")));
    log::info!(
        "started: debug {}, force-poll {}, policy server {}",
        debug.local_addr(),
        force.local_addr(),
        config.policy_server_url
    );

    let (stop, stopped) = std::sync::mpsc::channel();
    let poller = {
        let agent = agent.clone();
        std::thread::spawn(move || run_poller(agent, stopped))
    };

    let signal = daemon::wait_for_shutdown();
    log::info!("{signal}: stopping; the enforced rules stay in place for the next start");
    let _ = stop.send(());
    let _ = poller.join();
    force.shutdown();
    debug.shutdown();
}
