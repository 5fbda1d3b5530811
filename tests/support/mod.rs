//! What the integration tests and the benches share: one `wait_until`, one `Proc`, one `certs`,
//! free ports, the database servers, the fakes (UAA/Cloud Controller, DNS upstreams), the real
//! policy server, and the three labs a test builds its cells in (`overlay`: controller and
//! daemons on an underlay bridge; `agent_lab`: VTEPs, containers and the policy agent;
//! `networker_fixture`: the garden-external-networker's cell). Every lab is made of
//! `netman::lab::netns::NamedNetns` namespaces and `netman::pki` certificates, the lab's own code.
//!
//! A test file: `mod support;` (then e.g. `use support::overlay::*;`). A bench:
//! `#[path = "../tests/support/mod.rs"] mod support;`.
#![allow(dead_code)]

pub mod agent_lab;
pub mod asg_cell;
pub mod bind;
pub mod certs;
pub mod cf_networking;
pub mod cli;
pub mod db;
pub mod dns;
pub mod fake_cf;
pub mod flow_lines;
pub mod kill_loop;
pub mod lab_cli;
pub mod machine;
pub mod networker_fixture;
pub mod original_wire;
pub mod overlay;
pub mod policy_server;
pub mod ports;
pub mod proc;
pub mod sd;
pub mod wait;

// Not every test uses every helper.
#[allow(unused_imports)]
pub use {
    certs::{certs, Certs},
    ports::free_port,
    proc::Proc,
    wait::{poll, wait_for, wait_until},
};

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test of any running test process uses: `<prefix><pid>x<n>` (short enough for
/// a namespace or interface name with a few more characters).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}
