//! The loopback debug server every long-running binary exposes: `GET /metrics` (Prometheus),
//! `GET /health`, `GET|PUT|POST /log-level`, plus any routes of the daemon's own (the agent's
//! `/iptables-c2c-logging`).

use crate::http::{Handler, Request, Response, Server, ServerOptions};
use crate::metrics::{encode, CONTENT_TYPE};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Worker threads of a debug server: it answers one scraper and an operator's curl.
const WORKERS: usize = 4;

type HealthCheck = dyn Fn() -> Result<(), String> + Send + Sync;
type Refresh = dyn Fn() + Send + Sync;
type Routes = dyn Fn(&Request) -> Option<Response> + Send + Sync;

/// The handler of the loopback debug port.
pub struct DebugHandler {
    registry: Arc<Registry>,
    health: Box<HealthCheck>,
    refresh: Box<Refresh>,
    routes: Option<Box<Routes>>,
}

impl DebugHandler {
    /// `health` answers `/health` (an error is a 500 with its text); `refresh` runs before every
    /// `/metrics` answer (uptime, gauges read on demand).
    pub fn new(
        registry: Arc<Registry>,
        health: impl Fn() -> Result<(), String> + Send + Sync + 'static,
        refresh: impl Fn() + Send + Sync + 'static,
    ) -> DebugHandler {
        DebugHandler {
            registry,
            health: Box::new(health),
            refresh: Box::new(refresh),
            routes: None,
        }
    }

    /// Routes of the daemon's own, asked first; `None` for paths they do not own.
    pub fn with_routes(
        mut self,
        routes: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
    ) -> DebugHandler {
        self.routes = Some(Box::new(routes));
        self
    }

    /// Serves the common debug routes; `None` for paths it does not own.
    fn common(&self, req: &Request) -> Option<Response> {
        Some(match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => {
                (self.refresh)();
                Response::new(200)
                    .with_header("content-type", CONTENT_TYPE)
                    .with_body(encode(&self.registry).into_bytes())
            }
            ("GET", "/health") => match (self.health)() {
                Ok(()) => Response::json(200, &serde_json::json!({"healthy": true})),
                Err(e) => Response::error(500, &e),
            },
            ("GET", "/log-level") => {
                Response::text(200, log::max_level().to_string().to_lowercase())
            }
            ("PUT" | "POST", "/log-level") => set_log_level(req),
            _ => return None,
        })
    }
}

fn set_log_level(req: &Request) -> Response {
    let text = String::from_utf8_lossy(&req.body);
    match crate::logging::parse_level(&text) {
        Ok(level) => {
            log::set_max_level(level);
            log::info!("log level set to {level}");
            Response::new(204)
        }
        Err(e) => Response::error(400, &e),
    }
}

impl Handler for DebugHandler {
    fn handle(&self, req: &Request) -> Response {
        self.routes
            .as_ref()
            .and_then(|routes| routes(req))
            .or_else(|| self.common(req))
            .unwrap_or_else(|| Response::error(404, "not found"))
    }
}

/// Starts the debug server on `addr` (a loopback address: the configs check it).
pub fn serve(addr: &str, handler: DebugHandler) -> Result<Server, String> {
    Server::start(
        addr,
        ServerOptions {
            workers: WORKERS,
            ..ServerOptions::default()
        },
        handler,
    )
    .map_err(|e| format!("debug server: {e}"))
}
