//! The real `policy-server` binary (SQLite, static tokens, generated certificates; started by
//! `tests/support/policy_server.rs`) as the agent tests use it: create and delete policies through
//! the external API, stop and restart it, and the internal API's address and the agent's client
//! certificate.

use super::AgentCerts;
use crate::support::policy_server::{v1_body, PolicyServer, ADMIN_TOKEN};
use std::net::SocketAddr;

pub struct PolicyApi {
    server: PolicyServer,
    pub certs: AgentCerts,
}

impl PolicyApi {
    pub fn start() -> PolicyApi {
        let server = PolicyServer::start();
        let certs = AgentCerts {
            ca: server.certs.ca.clone(),
            cert: server.certs.client.0.clone(),
            key: server.certs.client.1.clone(),
        };
        PolicyApi { server, certs }
    }

    pub fn internal_addr(&self) -> SocketAddr {
        let port = self.server.config["internal_listen_port"]
            .as_u64()
            .expect("internal port") as u16;
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The external API's base URL.
    pub fn external_url(&self) -> &str {
        &self.server.external
    }

    /// Creates policies (source, destination, protocol, start, end) as an admin.
    pub fn allow(&self, policies: &[(&str, &str, &str, i64, i64)]) {
        self.post("/networking/v1/external/policies", "create", policies);
    }

    pub fn disallow(&self, policies: &[(&str, &str, &str, i64, i64)]) {
        self.post(
            "/networking/v1/external/policies/delete",
            "delete",
            policies,
        );
    }

    fn post(&self, path: &str, verb: &str, policies: &[(&str, &str, &str, i64, i64)]) {
        let (status, body) = self
            .server
            .post(path, Some(ADMIN_TOKEN), &v1_body(policies));
        assert_eq!(status, 200, "{verb} policies: {body}");
    }

    pub fn stop(&mut self) {
        self.server.kill();
    }

    pub fn restart(&mut self) {
        self.server.kill();
        self.server.spawn();
    }

    pub fn log(&self) -> String {
        self.server.log()
    }
}
