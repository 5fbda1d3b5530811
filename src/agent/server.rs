//! The agent's loopback HTTP endpoints: the force-poll port (`/force-policy-poll-cycle`, called
//! by the networker on container create) and the debug port (metrics, health, log level and
//! `/iptables-c2c-logging`).

use super::cycle::Agent;
use crate::http::{Handler, Request, Response};
use crate::metrics::DebugHandler;
use std::sync::Arc;

pub struct ForcePoll {
    pub agent: Arc<Agent>,
}

impl Handler for ForcePoll {
    fn handle(&self, req: &Request) -> Response {
        match req.path.as_str() {
            "/force-policy-poll-cycle" => match self.agent.force() {
                Ok(applied) => {
                    log::info!("forced policy poll cycle: {applied:?}");
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

pub struct Debug {
    pub agent: Arc<Agent>,
    pub base: DebugHandler,
}

impl Handler for Debug {
    fn handle(&self, req: &Request) -> Response {
        if req.path == "/iptables-c2c-logging" {
            return self.c2c_logging(req);
        }
        self.base
            .route(req)
            .unwrap_or_else(|| Response::error(404, "not found"))
    }
}

impl Debug {
    fn c2c_logging(&self, req: &Request) -> Response {
        match req.method.as_str() {
            "GET" => Response::json(
                200,
                &serde_json::json!({"enabled": self.agent.logging().enabled}),
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
                match self.agent.set_logging(enabled) {
                    Ok(()) => {
                        log::warn!("c2c logging set to {enabled}");
                        Response::json(200, &serde_json::json!({"enabled": enabled}))
                    }
                    Err(e) => Response::error(500, &format!("setting c2c logging: {e}")),
                }
            }
            _ => Response::error(405, "method not allowed"),
        }
    }
}
