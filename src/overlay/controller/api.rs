//! The lease API over mutual TLS: `PUT /leases/acquire`, `PUT /leases/renew`,
//! `PUT /leases/release`, `GET /leases`.

use super::error::{Error, ErrorKind};
use super::leases::Controller;
use super::metrics::ControllerMetrics;
use crate::http::{Request, Response};
use crate::overlay::Lease;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

#[derive(Deserialize)]
struct AcquireRequest {
    underlay_ip: String,
    #[serde(default)]
    single_overlay_ip: bool,
}

#[derive(Deserialize)]
struct ReleaseRequest {
    underlay_ip: String,
}

/// The mTLS API handler.
pub struct ApiHandler {
    pub controller: Arc<Controller>,
    pub metrics: Option<ControllerMetrics>,
}

impl ApiHandler {
    /// The route's name (for metrics) and the answer.
    fn route(&self, req: &Request) -> (&'static str, Result<Response, Error>) {
        let empty = || Response::json(200, &serde_json::json!({}));
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/leases/acquire") => (
                "acquire",
                decode::<AcquireRequest>(&req.body).and_then(|r| {
                    self.controller
                        .acquire(&r.underlay_ip, r.single_overlay_ip)
                        .map(|l| Response::json(200, &l))
                }),
            ),
            ("PUT", "/leases/renew") => (
                "renew",
                decode::<Lease>(&req.body).and_then(|l| self.controller.renew(&l).map(|_| empty())),
            ),
            ("PUT", "/leases/release") => (
                "release",
                decode::<ReleaseRequest>(&req.body)
                    .and_then(|r| self.controller.release(&r.underlay_ip).map(|_| empty())),
            ),
            ("GET", "/leases") => (
                "list",
                self.controller
                    .list()
                    .map(|l| Response::json(200, &serde_json::json!({ "leases": l }))),
            ),
            (_, "/leases/acquire" | "/leases/renew" | "/leases/release" | "/leases") => {
                ("other", Err(ErrorKind::MethodNotAllowed.into()))
            }
            _ => ("other", Err(ErrorKind::NotFound.into())),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| ErrorKind::BadRequest(e.to_string()).into())
}

impl crate::http::Handler for ApiHandler {
    fn handle(&self, req: &Request) -> Response {
        let started = Instant::now();
        let (route, result) = self.route(req);
        let resp = result.unwrap_or_else(|e| {
            if e.status >= 500 {
                log::error!("{} {}: {e}", req.method, req.path);
            }
            Response::error(e.status, &e.to_string())
        });
        if let Some(m) = &self.metrics {
            m.http.observe(route, resp.status, started.elapsed());
        }
        resp
    }
}
