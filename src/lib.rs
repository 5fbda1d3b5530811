//! netman: container networking for Cloud Foundry-style platforms, as small synchronous binaries.
//!
//! One module per concern; the binaries in `src/bin/` are thin mains over these.

pub mod api; // wire types shared by servers and clients
pub mod asg; // application security groups: the rule model and which groups apply
pub mod clock; // the wall clock in Unix seconds, milliseconds, nanoseconds
pub mod config; // JSON config loading and checks
pub mod daemon; // conventions of every long-running binary
pub mod http; // the one HTTP layer: server (plain/TLS/mTLS) and clients
pub mod logging;
pub mod metrics; // Prometheus metrics and the debug server
pub mod netns; // network namespace helpers
pub mod os_error; // a failed system call: context and errno
pub mod steps; // per-step durations of one operation, one log line
pub mod tls; // PEM loading and rustls configs

pub mod db; // the SQL layer: config, dialects, pools, migrations, transactions
pub mod policy; // policy server: store, auth, external and internal APIs

pub mod cni; // CNI spec types and the plugin side (the runtime side is the networker's)
pub mod iptables; // typed iptables rules, rendering, iptables-restore, the shared lock
pub mod netlink; // synchronous rtnetlink wrapper
pub mod nfnetlink; // the nf_tables messages netman sends itself
pub mod overlay; // lease controller, per-cell daemon, overlay CNI plugin

pub mod cell; // the cell contract: mark layout, container store
pub mod flowlog; // NFLOG reading and flow log lines (run by the agent)

pub mod agent; // vxlan-policy-agent
pub mod networker; // garden-external-networker

pub mod cli; // the netman CLI
pub mod dns;
pub mod lab; // netman-lab
pub mod netmon; // netmon and the overlay watchdog
pub mod pki; // certificate generation (lab, generate-certs, tests) // per-cell DNS resolver: internal routes and forwarding
