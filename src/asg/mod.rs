//! Application security groups (issue 14), shared by the policy server and the cell agent: the
//! typed rule model parsed from the Cloud Controller's rule JSON ([`rule`]), and which groups
//! apply to a container ([`select`]).

pub mod rule;
pub mod select;

pub use rule::{
    parse_rules, parse_rules_lenient, Destination, IcmpSelector, PortRange, Probe, Rule, RuleError,
    Traffic,
};
pub use select::{applies, effective_rules, groups_for, Lifecycle};
