//! The flow log's parts that know nothing of the agent: reading NFLOG messages over netlink
//! ([`socket`], [`packet`]), what a prefix means ([`kind`]), the line ([`event`]), who is behind
//! an address ([`identity`]), which egress rule allowed ([`egress`]) and the rotated file
//! ([`sink`]), also sent to syslog ([`syslog`]). The agent runs it: [`crate::agent::flows`].

pub mod egress;
pub mod event;
pub mod identity;
pub mod kind;
pub mod packet;
pub mod sink;
pub mod socket;
pub mod syslog;
