//! The flow log's reading of the ASG table's log prefixes ([`super::LogPrefix`]): which
//! security group rule allowed a logged egress connection, or why it was refused. Plugged into
//! the flow log as its [`EgressRules`] when `enable_asg_syncing` is on; the networker's static
//! NetOut prefixes still go to [`StaticNetout`].

use super::compile::{LoggedRule, SPACE_KEY};
use super::prefix::LogPrefix;
use super::sync::{AsgAgent, Enforced};
use crate::api::security_groups::SecurityGroup;
use crate::asg::{parse_rules_indexed, Lifecycle, Rule as AsgRule};
use crate::flowlog::egress::{EgressRules, StaticNetout};
use crate::flowlog::event::{Rule, Verdict};
use crate::flowlog::packet::Ipv4Packet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A group's rules as parsed, kept while its rule text is the same.
type ParsedGroup = (String, Arc<Vec<(usize, AsgRule)>>);

pub struct AsgFlowRules {
    asg: Arc<AsgAgent>,
    netout: StaticNetout,
    /// By group guid (parsed only when an `ASG_OK` event needs it).
    parsed: Mutex<HashMap<String, ParsedGroup>>,
}

impl AsgFlowRules {
    pub fn new(asg: Arc<AsgAgent>, netout: StaticNetout) -> AsgFlowRules {
        asg.publish_enforced();
        AsgFlowRules {
            asg,
            netout,
            parsed: Mutex::new(HashMap::new()),
        }
    }

    fn rules_of(&self, group: &SecurityGroup) -> Arc<Vec<(usize, AsgRule)>> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((text, rules)) = parsed.get(&group.guid) {
            if *text == group.rules {
                return rules.clone();
            }
        }
        let rules = Arc::new(
            parse_rules_indexed(&group.rules)
                .map(|(good, _)| good)
                .unwrap_or_default(),
        );
        parsed.insert(group.guid.clone(), (group.rules.clone(), rules.clone()));
        rules
    }

    /// The first rule of the source container's groups that allows `p`, the globally enabled
    /// groups first, then those bound to its space (the table's order). Used for `ASG_OK` alone
    /// (`iptables_asg_logging`), whose prefix cannot name the rule: the table merges the rules
    /// of all groups into shared port and destination segments.
    fn deciding(&self, enforced: &Enforced, p: &Ipv4Packet) -> Option<LoggedRule> {
        let c = enforced.containers.get(&p.src)?;
        let lc = c.workload().and_then(Lifecycle::of_workload)?;
        let space = c
            .metadata
            .get(SPACE_KEY)
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let (global, bound): (Vec<&SecurityGroup>, Vec<&SecurityGroup>) = enforced
            .groups
            .iter()
            .filter(|g| crate::asg::applies(g, space, lc))
            .partition(|g| match lc {
                Lifecycle::Running => g.running_default,
                Lifecycle::Staging => g.staging_default,
            });
        let dport = p.ports.map(|(_, d)| d);
        global.into_iter().chain(bound).find_map(|g| {
            let rules = self.rules_of(g);
            let (index, rule) = rules
                .iter()
                .find(|(_, r)| r.allows(p.dst, p.protocol, dport, p.icmp))?;
            Some(LoggedRule {
                group_guid: g.guid.clone(),
                group_name: g.name.clone(),
                index: *index,
                protocol: rule.traffic.protocol(),
                description: rule.description.clone(),
            })
        })
    }
}

fn named(r: &LoggedRule) -> Rule {
    Rule::SecurityGroup {
        guid: r.group_guid.clone(),
        name: r.group_name.clone(),
        index: r.index,
        protocol: r.protocol.to_string(),
        description: r.description.clone(),
    }
}

impl EgressRules for AsgFlowRules {
    fn allowing(&self, handle: &str, packet: &Ipv4Packet) -> Rule {
        self.netout.allowing(handle, packet)
    }

    fn security_group(&self, prefix: &str, packet: &Ipv4Packet) -> Option<(Verdict, Rule)> {
        let enforced = self.asg.enforced();
        // A rule of a table no longer in force: allowed, by a rule not known any more.
        let known = |r: Option<LoggedRule>| r.as_ref().map_or(Rule::Unknown, named);
        Some(match LogPrefix::parse(prefix)? {
            LogPrefix::Rule { .. } => (
                Verdict::Allowed,
                known(enforced.logged.get(prefix.trim_end()).cloned()),
            ),
            LogPrefix::Allowed => (Verdict::Allowed, known(self.deciding(&enforced, packet))),
            LogPrefix::DenyNetworks => (Verdict::Denied, Rule::DenyNetwork),
            LogPrefix::Default => (Verdict::Denied, Rule::DefaultDeny),
            LogPrefix::UnknownSource => (Verdict::Denied, Rule::UnknownSource),
        })
    }

    fn refresh(&self) {
        self.netout.refresh();
    }
}
