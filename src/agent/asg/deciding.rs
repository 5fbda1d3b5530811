//! Which rule decides an allowed new connection: the rule a counter ([`super::counting`]) and an
//! `ASG_OK` flow log line name. The table's own precedence, from the rules:
//! 1. the first layer that allows it: the groups globally enabled for the container's lifecycle,
//!    then those bound to its space (a group that is both counts as global);
//! 2. within it, a rule of protocol `all` if one allows it (the table looks destinations up
//!    first), then a logged rule (`log: true`) before an unlogged one, then the first in order
//!    (groups as the server lists them, rules by index).
//!
//! So a connection a logged rule logs is counted for that rule.

use crate::api::security_groups::SecurityGroup;
use crate::asg::{Lifecycle, Probe, Rule, Traffic};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A group's good rules with their index in its array.
pub type IndexedRules = Arc<Vec<(usize, Rule)>>;

/// The deciding rule: its group, its index in the group's array, the rule.
pub type Decided<'a> = (&'a SecurityGroup, usize, Rule);

fn is_global(g: &SecurityGroup, lc: Lifecycle) -> bool {
    match lc {
        Lifecycle::Running => g.running_default,
        Lifecycle::Staging => g.staging_default,
    }
}

/// The rule that decides a new connection of a container of `space` in `lc` to `dst` with
/// `probe`, if any allows it; `rules_of` gives a group's parsed rules.
pub fn deciding<'a>(
    groups: &'a [SecurityGroup],
    space: &str,
    lc: Lifecycle,
    dst: Ipv4Addr,
    probe: Probe,
    mut rules_of: impl FnMut(&SecurityGroup) -> IndexedRules,
) -> Option<Decided<'a>> {
    let (global, bound): (Vec<&'a SecurityGroup>, Vec<&'a SecurityGroup>) = groups
        .iter()
        .filter(|g| crate::asg::applies(g, space, lc))
        .partition(|g| is_global(g, lc));
    for layer in [global, bound] {
        // (all first, logged first, order) -> the smallest wins.
        let mut best: Option<((bool, bool, usize), Decided<'a>)> = None;
        let mut order = 0;
        for g in layer {
            for (index, rule) in rules_of(g).iter() {
                order += 1;
                if !rule.allows(dst, probe) {
                    continue;
                }
                let rank = (rule.traffic != Traffic::All, !rule.log, order);
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    best = Some((rank, (g, *index, rule.clone())));
                }
            }
        }
        if let Some((_, d)) = best {
            return Some(d);
        }
    }
    None
}
