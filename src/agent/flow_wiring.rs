//! Starting the flow log with the agent, and its routes beside the agent's own on the debug
//! port (`/health` says whether audit mode is on).

use super::asg::counters::AsgCounters;
use super::asg::flow_rules::AsgFlowRules;
use super::asg::AsgAgent;
use super::cycle::Agent;
use super::flows::{FlowMetrics, Flows};
use super::nft::runner;
use super::AgentConfig;
use crate::daemon::Worker;
use crate::flowlog::egress::{EgressRules, StaticNetout};
use crate::http::{Request, Response};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// `asg`: the ASG side when `enable_asg_syncing` is on (its log prefixes name its rules).
pub fn start(
    config: &AgentConfig,
    agent: &Arc<Agent>,
    asg: Option<Arc<AsgAgent>>,
    registry: &mut Registry,
) -> Result<(Option<Arc<Flows>>, Option<Worker>), String> {
    let Some(settings) = config.flow_settings()? else {
        return Ok((None, None));
    };
    let file = settings.file.display().to_string();
    let netout = StaticNetout::new(&config.netout_cache_dir);
    let asg_counters = asg
        .as_ref()
        .map(|asg| AsgCounters::new(Arc::clone(asg), &config.nft_path));
    let egress_rules: Box<dyn EgressRules> = match asg {
        Some(asg) => Box::new(AsgFlowRules::new(asg, netout)),
        None => Box::new(netout),
    };
    let (flows, reader) = Flows::start(
        settings,
        egress_rules,
        asg_counters,
        runner(&config.nft_path),
        &config.nft_path,
        FlowMetrics::register(registry),
    )?;
    let observer = flows.clone();
    agent.observe(Box::new(move |containers, policies, plan| {
        observer.observe(containers, policies, plan)
    }));
    log::info!("flow log to {file}");
    Ok((Some(flows), Some(reader)))
}

pub fn routes(
    agent_routes: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
    agent: Arc<Agent>,
    flows: Option<Arc<Flows>>,
    health: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
) -> impl Fn(&Request) -> Option<Response> + Send + Sync + 'static {
    move |req: &Request| {
        if let Some(r) = agent_routes(req) {
            return Some(r);
        }
        let flows = flows.as_ref()?;
        if req.path == "/health" && req.method == "GET" {
            let audit = flows.audit();
            if !audit.is_on() {
                return None;
            }
            // The agent's whole health (security groups included), with the audit state.
            return Some(match health() {
                Ok(()) => {
                    Response::json(200, &serde_json::json!({"healthy": true, "audit": audit}))
                }
                Err(e) => Response::json(500, &serde_json::json!({"error": e, "audit": audit})),
            });
        }
        let c2c_allowed = |set: Option<bool>| -> Result<bool, String> {
            if let Some(on) = set {
                agent
                    .set_logging(on)
                    .map_err(|e| format!("setting c2c logging: {e}"))?;
            }
            Ok(agent.logging().enabled)
        };
        flows.route(req, &c2c_allowed)
    }
}
