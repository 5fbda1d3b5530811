//! The flow log's reading of the ASG table's log prefixes ([`super::LogPrefix`]): which
//! security group rule allowed a logged egress connection, or why it was refused. Plugged into
//! the flow log as its [`EgressRules`] when `enable_asg_syncing` is on; the networker's static
//! NetOut prefixes still go to [`StaticNetout`].

use super::compile::{LoggedRule, SPACE_KEY};
use super::deciding::deciding;
use super::prefix::LogPrefix;
use super::sync::{AsgAgent, Enforced};
use crate::api::security_groups::SecurityGroup;
use crate::asg::rule::{parse_rules_indexed, Probe};
use crate::asg::{Lifecycle, Rule as AsgRule};
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

    fn rules_of(&self, enforced: &Enforced, group: &SecurityGroup) -> Arc<Vec<(usize, AsgRule)>> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((text, rules)) = parsed.get(&group.guid) {
            if *text == group.rules {
                return rules.clone();
            }
        }
        // Groups deleted since are forgotten now and then, so the cache stays the groups' size.
        if parsed.len() > enforced.groups.len() + 64 {
            let live: std::collections::HashSet<&str> =
                enforced.groups.iter().map(|g| g.guid.as_str()).collect();
            parsed.retain(|guid, _| live.contains(guid.as_str()));
        }
        let rules = Arc::new(
            parse_rules_indexed(&group.rules)
                .map(|(good, _)| good)
                .unwrap_or_default(),
        );
        parsed.insert(group.guid.clone(), (group.rules.clone(), rules.clone()));
        rules
    }

    /// The rule of the source container's groups that decides `p` ([`super::deciding`]: the
    /// rule its counter counts). Used for `ASG_OK` alone (`iptables_asg_logging`), whose prefix
    /// cannot name it: the table merges the rules of all groups into shared port and
    /// destination segments.
    fn deciding(&self, enforced: &Enforced, p: &Ipv4Packet) -> Option<LoggedRule> {
        let c = enforced.containers.get(&p.src)?;
        let lc = c.workload().and_then(Lifecycle::of_workload)?;
        let space = c
            .metadata
            .get(SPACE_KEY)
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let probe = match (p.protocol, p.ports, p.icmp) {
            (6, Some((_, port)), _) => Probe::Tcp(port),
            (17, Some((_, port)), _) => Probe::Udp(port),
            (1, _, Some((icmp_type, code))) => Probe::Icmp { icmp_type, code },
            (other, _, _) => Probe::Other(other),
        };
        let (g, index, rule) = deciding(&enforced.groups, space, lc, p.dst, probe, |g| {
            self.rules_of(enforced, g)
        })?;
        Some(LoggedRule {
            group_guid: g.guid.clone(),
            group_name: g.name.clone(),
            index,
            protocol: rule.traffic.protocol(),
            description: rule.description.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::asg::client::AsgSource;
    use crate::agent::asg::sync::Timing;
    use crate::agent::asg::{AsgMetrics, DenyNetworks, Settings};
    use crate::agent::nft::Runner;
    use crate::agent::Error;
    use crate::cell::{Container, Reader, Store};
    use serde_json::json;
    use std::collections::BTreeSet;

    struct Groups(Vec<SecurityGroup>);

    impl AsgSource for Groups {
        fn version(&self) -> Result<Option<i64>, Error> {
            Ok(Some(1))
        }
        fn groups(&self, _: Option<&BTreeSet<String>>) -> Result<Vec<SecurityGroup>, Error> {
            Ok(self.0.clone())
        }
    }

    /// The table is not what is tried here: only what the compiled state says of it.
    struct NoKernel;

    impl Runner for NoKernel {
        fn run(&self, _: &str) -> Result<(), crate::agent::nft::Error> {
            Ok(())
        }
    }

    fn group(guid: &str, rules: serde_json::Value, global: bool, spaces: &[&str]) -> SecurityGroup {
        SecurityGroup {
            guid: guid.into(),
            name: format!("name-{guid}"),
            rules: rules.to_string(),
            staging_default: false,
            running_default: global,
            staging_space_guids: vec![],
            running_space_guids: spaces.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn packet(
        src: &str,
        dst: &str,
        protocol: u8,
        dport: u16,
        icmp: Option<(u8, u8)>,
    ) -> Ipv4Packet {
        Ipv4Packet {
            protocol,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ports: (protocol != 1).then_some((40000, dport)),
            icmp,
            len: 60,
        }
    }

    fn sg(guid: &str, index: usize, protocol: &str, description: &str) -> Rule {
        Rule::SecurityGroup {
            guid: guid.into(),
            name: format!("name-{guid}"),
            index,
            protocol: protocol.into(),
            description: description.into(),
        }
    }

    #[test]
    fn prefixes_name_the_rule_in_force_and_asg_ok_alone_the_first_rule_that_allows() {
        let dir = tempfile::tempdir().unwrap();
        let store_path = dir.path().join("store.json");
        let mut app = Container::for_app("app1", "10.255.0.2".parse().unwrap(), "app-1");
        app.metadata.insert("space_id".into(), json!("space-1"));
        app.metadata
            .insert("container_workload".into(), json!("app"));
        Store::new(&store_path).add(app).unwrap();
        let groups = vec![
            group(
                "s",
                json!([{"protocol": "bogus"},
                       {"protocol": "tcp", "destination": "1.1.1.0/24", "ports": "443", "log": true, "description": "d"},
                       {"protocol": "tcp", "destination": "1.1.1.0/24", "ports": "80"},
                       {"protocol": "icmp", "destination": "2.2.2.2", "type": 8, "code": -1}]),
                false,
                &["space-1"],
            ),
            group(
                "g",
                json!([{"protocol": "tcp", "destination": "1.1.1.1", "ports": "80"}]),
                true,
                &[],
            ),
        ];
        let asg = Arc::new(AsgAgent::new(
            Box::new(Groups(groups)),
            Box::new(NoKernel),
            Reader::new(&store_path),
            Settings {
                overlay: "10.255.0.0/16".parse().unwrap(),
                deny: DenyNetworks::default(),
                log_all: true,
                nflog_group: 1,
                denied_logs_per_sec: 1,
                accepted_udp_logs_per_sec: 100,
            },
            Timing {
                full_sync: std::time::Duration::from_secs(60),
            },
            AsgMetrics::register(&mut prometheus_client::registry::Registry::default()),
        ));
        let rules = AsgFlowRules::new(asg.clone(), StaticNetout::new(dir.path()));
        let web = packet("10.255.0.2", "1.1.1.1", 6, 443, None);
        // Nothing enforced yet: a rule prefix names no known rule.
        assert_eq!(
            rules.security_group("ASG_OK s 1", &web),
            Some((Verdict::Allowed, Rule::Unknown))
        );
        asg.poll().unwrap();

        // A logged rule by its prefix: the index counts the rule the cell could not read.
        assert_eq!(
            rules.security_group("ASG_OK s 1", &web),
            Some((Verdict::Allowed, sg("s", 1, "tcp", "d")))
        );
        assert_eq!(
            rules.security_group("ASG_OK s 7", &web),
            Some((Verdict::Allowed, Rule::Unknown)),
            "a rule no longer in force"
        );
        // `ASG_OK` alone: the globally enabled groups first, then the space's.
        let allowed = |p: &Ipv4Packet| rules.security_group("ASG_OK", p).map(|(_, r)| r);
        assert_eq!(
            allowed(&packet("10.255.0.2", "1.1.1.1", 6, 80, None)),
            Some(sg("g", 0, "tcp", ""))
        );
        assert_eq!(
            allowed(&packet("10.255.0.2", "1.1.1.2", 6, 80, None)),
            Some(sg("s", 2, "tcp", ""))
        );
        assert_eq!(
            allowed(&packet("10.255.0.2", "2.2.2.2", 1, 0, Some((8, 3)))),
            Some(sg("s", 3, "icmp", ""))
        );
        assert_eq!(
            allowed(&packet("10.255.0.2", "2.2.2.2", 1, 0, Some((0, 0)))),
            Some(Rule::Unknown),
            "no rule allows an echo reply type"
        );
        assert_eq!(
            allowed(&packet("10.255.0.9", "1.1.1.1", 6, 80, None)),
            Some(Rule::Unknown),
            "not a container of the cell"
        );
        // Denials need no lookup.
        for (prefix, rule) in [
            ("ASG_DENY deny_networks", Rule::DenyNetwork),
            ("ASG_DENY default ", Rule::DefaultDeny),
            ("ASG_DENY unknown_source", Rule::UnknownSource),
        ] {
            assert_eq!(
                rules.security_group(prefix, &web),
                Some((Verdict::Denied, rule))
            );
        }
        // Not the ASG table's words: nothing (the flow log counts it as unrecognised).
        for prefix in ["ASG_OK s x", "ASG_DENY", "ASG_DENY other", "OK_app1"] {
            assert_eq!(rules.security_group(prefix, &web), None, "{prefix}");
        }
    }
}
