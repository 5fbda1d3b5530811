//! A running agent: the policy server client, the nftables dataplane and the container store
//! wired into an [`Agent`], its poller thread, the force-poll port and the debug port.

use super::asg::client::AsgClient;
use super::asg::sync::Timing;
use super::asg::{AsgAgent, AsgMetrics};
use super::client::PolicyClient;
use super::cycle::{run_poller, Agent};
use super::metrics::AgentMetrics;
use super::nft::{runner, C2cLogging, Table};
use super::server::{debug_routes, ForcePoll};
use super::watch_loop;
use super::AgentConfig;
use crate::cell::Reader as StoreReader;
use crate::daemon::debug::{self, DebugHandler};
use crate::daemon::{client_tls, Worker};
use crate::http::{Server, ServerOptions};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

pub struct RunningAgent {
    pub debug: Server,
    pub force: Server,
    policy_server_url: String,
    poller: Worker,
    asg_poller: Option<Worker>,
    flow_reader: Option<Worker>,
}

pub fn start(config: AgentConfig) -> Result<RunningAgent, String> {
    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    let uptime = metrics.uptime.clone();
    let agent = Arc::new(agent(&config, metrics)?);
    let asg = asg_agent(&config, &mut registry)?;
    let asg_health = asg.clone();
    let (flows, flow_reader) =
        super::flow_wiring::start(&config, &agent, asg.clone(), &mut registry)?;
    let health_agent = agent.clone();
    let health: Arc<dyn Fn() -> Result<(), String> + Send + Sync> = Arc::new(move || {
        health_agent.health()?;
        asg_health.as_ref().map_or(Ok(()), |a| a.health())
    });
    let scraped = agent.clone();
    let scraped_flows = flows.clone();
    let debug = debug::serve(
        &format!("{}:{}", config.debug_server_host, config.debug_server_port),
        DebugHandler::new(
            Arc::new(registry),
            {
                let health = health.clone();
                move || health()
            },
            move || {
                uptime.refresh();
                scraped.refresh_staleness();
                if let Some(f) = &scraped_flows {
                    f.refresh_counters();
                }
            },
        )
        .with_routes(super::flow_wiring::routes(
            debug_routes(agent.clone()),
            agent.clone(),
            flows,
            health,
        )),
    )?;
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
            asg: asg.clone(),
        },
    )
    .map_err(|e| format!("force-poll server: {e}"))?;
    let asg_loop = config.asg_loop_settings();
    Ok(RunningAgent {
        debug,
        force,
        policy_server_url: config.policy_server_url,
        poller: Worker::spawn(move |stopped| run_poller(agent, stopped)),
        asg_poller: asg
            .map(|asg| Worker::spawn(move |stopped| watch_loop::run(asg, asg_loop, stopped))),
        flow_reader,
    })
}

/// The ASG side when `enable_asg_syncing` is on; with it off, a table left by an earlier run is
/// removed (it would refuse egress that the networker's own chains now decide).
fn asg_agent(
    config: &AgentConfig,
    registry: &mut Registry,
) -> Result<Option<Arc<AsgAgent>>, String> {
    let runner = runner(&config.nft_path);
    let Some(settings) = config.asg_settings() else {
        if let Err(e) = AsgAgent::remove_table(runner.as_ref()) {
            log::warn!("removing the ASG table: {e}");
        }
        return Ok(None);
    };
    let client = AsgClient::new(
        &config.policy_server_url,
        &client_tls(
            &config.ca_cert_file,
            &config.client_cert_file,
            &config.client_key_file,
        ),
        Duration::from_secs(config.client_timeout_seconds),
    )
    .map_err(|e| format!("security groups client: {e}"))?;
    Ok(Some(Arc::new(AsgAgent::new(
        Box::new(client),
        runner,
        StoreReader::new(&config.cni_datastore_path),
        settings,
        Timing {
            full_sync: Duration::from_secs(config.asg_poll_interval_seconds),
        },
        AsgMetrics::register(registry),
    ))))
}

/// The agent over the configured policy server client, nftables table and container store.
fn agent(config: &AgentConfig, metrics: AgentMetrics) -> Result<Agent, String> {
    let client = PolicyClient::new(
        &config.policy_server_url,
        &client_tls(
            &config.ca_cert_file,
            &config.client_cert_file,
            &config.client_key_file,
        ),
        Duration::from_secs(config.client_timeout_seconds),
    )
    .map_err(|e| format!("policy server client: {e}"))?;
    Ok(Agent::new(
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
        config.cycle_settings(),
        metrics,
    ))
}

impl crate::daemon::Running for RunningAgent {
    fn describe(&self) -> String {
        format!(
            "debug {}, force-poll {}, policy server {}",
            self.debug.local_addr(),
            self.force.local_addr(),
            self.policy_server_url
        )
    }

    fn stop(self) {
        self.poller.stop();
        if let Some(p) = self.asg_poller {
            p.stop();
        }
        if let Some(reader) = self.flow_reader {
            reader.stop();
        }
        self.force.shutdown();
        self.debug.shutdown();
        log::info!("the enforced rules stay in place for the next start");
    }
}
