//! The agent's loopback HTTP endpoints: the force-poll port (`/force-policy-poll-cycle`, called
//! by the networker on container create) and its own route on the debug port,
//! `/iptables-c2c-logging` (next to the common metrics, health and log level).

use super::cycle::Agent;
use crate::http::{Handler, Request, Response};
use std::sync::Arc;

pub struct ForcePoll {
    pub agent: Arc<Agent>,
    /// The ASG side; `None` when `enable_asg_syncing` is off (its routes answer 405).
    pub asg: Option<Arc<super::asg::AsgAgent>>,
}

impl Handler for ForcePoll {
    fn handle(&self, req: &Request) -> Response {
        if let Some(r) = super::asg::endpoints::route(self.asg.as_deref(), req) {
            return r;
        }
        match req.path.as_str() {
            "/force-policy-poll-cycle" => match self.agent.force() {
                Ok(applied) => {
                    log::debug!("forced policy poll cycle: {applied:?}");
                    Response::new(200)
                }
                Err(e) => {
                    log::error!("forced policy poll cycle: {e}");
                    Response::error(500, &format!("failed to force policy poll cycle: {e}"))
                }
            },
            _ => Response::error(404, "not found"),
        }
    }
}

/// The agent's routes on the debug port: `/iptables-c2c-logging`; `None` for other paths.
pub fn debug_routes(agent: Arc<Agent>) -> impl Fn(&Request) -> Option<Response> + Send + Sync {
    move |req: &Request| (req.path == "/iptables-c2c-logging").then(|| c2c_logging(&agent, req))
}

fn c2c_logging(agent: &Agent, req: &Request) -> Response {
    match req.method.as_str() {
        "GET" => Response::json(
            200,
            &serde_json::json!({"enabled": agent.logging().enabled}),
        ),
        "PUT" | "POST" => {
            let body: serde_json::Value = match serde_json::from_slice(&req.body) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                _ => return Response::error(400, "decoding request body as json"),
            };
            let enabled = match body.get("enabled") {
                None | Some(serde_json::Value::Null) => {
                    return Response::error(400, "missing required key 'enabled'")
                }
                Some(serde_json::Value::Bool(b)) => *b,
                Some(_) => return Response::error(400, "decoding request body as json"),
            };
            match agent.set_logging(enabled) {
                Ok(()) => {
                    log::info!("c2c logging set to {enabled}");
                    Response::json(200, &serde_json::json!({"enabled": enabled}))
                }
                Err(e) => Response::error(500, &format!("setting c2c logging: {e}")),
            }
        }
        _ => Response::error(405, "method not allowed"),
    }
}
