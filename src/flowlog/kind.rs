//! What an NFLOG prefix says: which rule logged the packet. The prefixes are the cell's
//! contract between the rules that log (agent table, flow table, the networker's NetOut chains)
//! and this reader.

use super::event::{Direction, Verdict};

/// Allowed c2c connections (the agent's table, when c2c logging is on).
pub const C2C_ALLOWED: &str = "OK_C2C ";
/// Denied c2c connections (the flow table).
pub const C2C_DENIED: &str = "DENY_C2C ";
/// Denied on the source cell: a container whose app is no policy's source (so its packets
/// carry no tag) sending to another cell (the flow table).
pub const C2C_DENIED_AT_SOURCE: &str = "DENY_C2C_SRC ";
/// Audit mode: would have been denied, passed (the flow table).
pub const C2C_AUDIT: &str = "AUDIT_C2C ";
/// The networker's NetOut logging: `OK_<handle>` (a logged allow rule) and `DENY_<handle>`
/// (before the final reject; `DENYNET_<handle>` before a deny network's reject).
pub const EGRESS_ALLOWED: &str = "OK_";
pub const EGRESS_DENIED: &str = "DENY_";
pub const EGRESS_DENY_NETWORK: &str = "DENYNET_";
/// The agent's ASG table (dynamic security groups): `ASG_OK`, `ASG_OK <group> <index>`,
/// `ASG_DENY <why>` (`crate::agent::asg::LogPrefix`, which the agent reads back).
pub const ASG_ALLOWED: &str = "ASG_OK";
pub const ASG_DENIED: &str = "ASG_DENY";

/// The kinds of event that can be switched on and off separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    C2cAllowed,
    C2cDenied,
    C2cDeniedAtSource,
    C2cAudit,
    EgressAllowed,
    EgressDenied,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::C2cAllowed => "c2c_allowed",
            Kind::C2cDenied => "c2c_denied",
            Kind::C2cDeniedAtSource => "c2c_denied_at_source",
            Kind::C2cAudit => "c2c_audit",
            Kind::EgressAllowed => "egress_allowed",
            Kind::EgressDenied => "egress_denied",
        }
    }

    pub fn verdict(self) -> Verdict {
        match self {
            Kind::C2cAllowed | Kind::EgressAllowed => Verdict::Allowed,
            Kind::C2cDenied | Kind::C2cDeniedAtSource | Kind::EgressDenied => Verdict::Denied,
            Kind::C2cAudit => Verdict::Audit,
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            Kind::C2cAllowed | Kind::C2cDenied | Kind::C2cAudit => Direction::C2cIngress,
            Kind::C2cDeniedAtSource => Direction::C2cEgress,
            Kind::EgressAllowed | Kind::EgressDenied => Direction::Egress,
        }
    }
}

/// A prefix read: the kind, and which rules logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub kind: Kind,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The agent's table or the flow table.
    C2c,
    /// The networker's NetOut chain of container `handle`; `deny_network`: before a deny
    /// network's reject.
    Netout { handle: String, deny_network: bool },
    /// The agent's ASG table: the rest of the prefix names the rule (read by
    /// [`super::egress::EgressRules::security_group`]).
    SecurityGroup,
}

/// The networker's own c2c deny log (`DENY_C2C_<handle>`, its `iptables_c2c_logging`): read
/// and left out on purpose, since the flow table logs those connections itself.
pub const NETWORKER_C2C_DENIED: &str = "DENY_C2C_";

/// Whether a prefix [`classify`] does not read is one the flow log leaves out on purpose (not an
/// unrecognised prefix).
pub fn is_left_out(prefix: &str) -> bool {
    prefix.starts_with(NETWORKER_C2C_DENIED) && classify(prefix).is_none()
}

/// Whether `prefix` is `word` alone or `word` and more words.
fn first_word_is(prefix: &str, word: &str) -> bool {
    prefix
        .strip_prefix(word)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

pub fn classify(prefix: &str) -> Option<Prefix> {
    let c2c = |kind| Prefix {
        kind,
        origin: Origin::C2c,
    };
    let egress = |kind, handle: &str, deny_network| {
        (!handle.is_empty()).then(|| Prefix {
            kind,
            origin: Origin::Netout {
                handle: handle.to_string(),
                deny_network,
            },
        })
    };
    let asg = |kind| {
        Some(Prefix {
            kind,
            origin: Origin::SecurityGroup,
        })
    };
    match prefix {
        p if first_word_is(p, ASG_ALLOWED) => asg(Kind::EgressAllowed),
        p if first_word_is(p, ASG_DENIED) => asg(Kind::EgressDenied),
        C2C_ALLOWED => Some(c2c(Kind::C2cAllowed)),
        C2C_DENIED => Some(c2c(Kind::C2cDenied)),
        C2C_DENIED_AT_SOURCE => Some(c2c(Kind::C2cDeniedAtSource)),
        C2C_AUDIT => Some(c2c(Kind::C2cAudit)),
        p if p.starts_with(NETWORKER_C2C_DENIED) => None,
        p => {
            if let Some(h) = p.strip_prefix(EGRESS_DENY_NETWORK) {
                egress(Kind::EgressDenied, h, true)
            } else if let Some(h) = p.strip_prefix(EGRESS_DENIED) {
                egress(Kind::EgressDenied, h, false)
            } else if let Some(h) = p.strip_prefix(EGRESS_ALLOWED) {
                egress(Kind::EgressAllowed, h, false)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_of_the_cell_is_read() {
        assert_eq!(classify("OK_C2C ").unwrap().kind, Kind::C2cAllowed);
        assert_eq!(classify("DENY_C2C ").unwrap().kind, Kind::C2cDenied);
        assert_eq!(classify("AUDIT_C2C ").unwrap().kind, Kind::C2cAudit);
        assert_eq!(
            classify("DENY_C2C_SRC ").unwrap().kind,
            Kind::C2cDeniedAtSource
        );
        let netout = |handle: &str, deny_network| Origin::Netout {
            handle: handle.into(),
            deny_network,
        };
        let p = classify("OK_h-1").unwrap();
        assert_eq!(
            (p.kind, p.origin),
            (Kind::EgressAllowed, netout("h-1", false))
        );
        let p = classify("DENY_h-1").unwrap();
        assert_eq!(
            (p.kind, p.origin),
            (Kind::EgressDenied, netout("h-1", false))
        );
        let p = classify("DENYNET_h-1").unwrap();
        assert_eq!(
            (p.kind, p.origin),
            (Kind::EgressDenied, netout("h-1", true))
        );
        for (prefix, kind) in [
            ("ASG_OK", Kind::EgressAllowed),
            ("ASG_OK g-1 3", Kind::EgressAllowed),
            ("ASG_DENY default", Kind::EgressDenied),
            ("ASG_DENY deny_networks", Kind::EgressDenied),
        ] {
            let p = classify(prefix).unwrap();
            assert_eq!(
                (p.kind, p.origin),
                (kind, Origin::SecurityGroup),
                "{prefix}"
            );
        }
        // A container handle that happens to start like the ASG words stays the networker's.
        let p = classify("OK_ASG_OKx").unwrap();
        assert_eq!(p.origin, netout("ASG_OKx", false));
        assert_eq!(classify("ASG_OKAY"), None);
        assert_eq!(classify("DENY_C2C_h-1"), None);
        assert!(is_left_out("DENY_C2C_h-1"));
        assert!(!is_left_out("DENY_C2C_SRC ") && !is_left_out("something else"));
        assert_eq!(classify("OK_"), None);
        assert_eq!(classify("something else"), None);
    }
}
