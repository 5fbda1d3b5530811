//! The policy server as the agent tests see it: create/delete policies, stop, restart, and the
//! internal API's address and the agent's client certificate.
//!
//! INTERIM: until the `policy-server` binary is on main this serves the real internal API
//! handler (`netman::policy::internal::InternalApi`, real mutual TLS) over a small in-memory
//! store; it will be replaced by the real binary started through `tests/common/policy_server.rs`.
#![allow(dead_code)]

use super::AgentCerts;
use netman::api::policy::{format_tag, Policy, Tag};
use netman::http::{Server, ServerOptions};
use netman::pki::{Ca, Usage};
use netman::policy::internal::InternalApi;
use netman::policy::store::{PolicyFilter, Store, StoreError};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct MemStore {
    state: Mutex<(BTreeSet<Policy>, BTreeMap<String, u32>, i64)>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

impl Store for MemStore {
    fn create(&self, policies: &[Policy]) -> Result<(), StoreError> {
        let mut st = self.state.lock().unwrap();
        for p in policies {
            for id in [&p.source.id, &p.destination.id] {
                let next = st.1.len() as u32 + 1;
                st.1.entry(id.clone()).or_insert(next);
            }
            st.0.insert(p.untagged());
        }
        st.2 = now_ns();
        Ok(())
    }
    fn delete(&self, policies: &[Policy]) -> Result<(), StoreError> {
        let mut st = self.state.lock().unwrap();
        for p in policies {
            st.0.remove(&p.untagged());
        }
        st.2 = now_ns();
        Ok(())
    }
    fn list(&self, filter: &PolicyFilter) -> Result<Vec<Policy>, StoreError> {
        let st = self.state.lock().unwrap();
        Ok(st
            .0
            .iter()
            .filter(|p| match filter {
                PolicyFilter::Either(ids) => {
                    ids.contains(&p.source.id) || ids.contains(&p.destination.id)
                }
                _ => true,
            })
            .map(|p| {
                let mut p = p.clone();
                p.source.tag = Some(format_tag(st.1[&p.source.id], 2));
                p.destination.tag = Some(format_tag(st.1[&p.destination.id], 2));
                p
            })
            .collect())
    }
    fn tags(&self) -> Result<Vec<Tag>, StoreError> {
        Ok(Vec::new())
    }
    fn create_tag(&self, _: &str, _: &str) -> Result<Tag, StoreError> {
        Err(StoreError::Database("not in this stand-in".into()))
    }
    fn last_updated(&self) -> Result<i64, StoreError> {
        Ok(self.state.lock().unwrap().2)
    }
    fn source_policy_counts(&self, _: &[String]) -> Result<HashMap<String, usize>, StoreError> {
        Ok(HashMap::new())
    }
    fn count(&self) -> Result<usize, StoreError> {
        Ok(self.state.lock().unwrap().0.len())
    }
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

pub struct PolicyApi {
    dir: tempfile::TempDir,
    store: Arc<MemStore>,
    server: Option<Server>,
    port: u16,
    server_cert: (std::path::PathBuf, std::path::PathBuf),
    pub certs: AgentCerts,
}

impl PolicyApi {
    pub fn start() -> PolicyApi {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("agent test CA").unwrap();
        let server = ca
            .write_issued(
                dir.path(),
                "server",
                "policy-server.service.cf.internal",
                &["127.0.0.1", "localhost"],
                Usage::Server,
            )
            .unwrap();
        let client = ca
            .write_issued(
                dir.path(),
                "client",
                "vxlan-policy-agent",
                &[],
                Usage::Client,
            )
            .unwrap();
        let ca_path = ca.write_ca(dir.path()).unwrap();
        let mut api = PolicyApi {
            store: Arc::new(MemStore::default()),
            server: None,
            port: 0,
            server_cert: (server.cert, server.key),
            certs: AgentCerts {
                ca: ca_path,
                cert: client.cert,
                key: client.key,
            },
            dir,
        };
        api.store.state.lock().unwrap().2 = now_ns();
        api.spawn();
        api
    }

    fn spawn(&mut self) {
        let tls = netman::tls::server_config(
            &self.server_cert.0,
            &self.server_cert.1,
            Some(&self.certs.ca),
        )
        .unwrap();
        let mut registry = Registry::default();
        let handler = InternalApi {
            store: self.store.clone(),
            metrics: netman::metrics::HttpMetrics::register(&mut registry, "test"),
        };
        let server = Server::start(
            &format!("127.0.0.1:{}", self.port),
            ServerOptions {
                tls: Some(tls),
                ..ServerOptions::default()
            },
            handler,
        )
        .unwrap();
        self.port = server.local_addr().port();
        self.server = Some(server);
    }

    pub fn internal_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn allow(&self, policies: &[(&str, &str, &str, i64, i64)]) {
        let list: Vec<Policy> = policies
            .iter()
            .map(|(s, d, proto, a, b)| Policy::new(s, d, proto, *a, *b))
            .collect();
        self.store.create(&list).unwrap();
    }

    pub fn disallow(&self, policies: &[(&str, &str, &str, i64, i64)]) {
        let list: Vec<Policy> = policies
            .iter()
            .map(|(s, d, proto, a, b)| Policy::new(s, d, proto, *a, *b))
            .collect();
        self.store.delete(&list).unwrap();
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PolicyApi {
    fn drop(&mut self) {
        self.stop();
    }
}
