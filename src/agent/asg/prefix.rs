//! The NFLOG prefixes of the ASG table: one scheme, readable by a person and parsed back by the
//! flow-log reader.
//!
//! | prefix | meaning |
//! |---|---|
//! | `ASG_OK <group guid> <rule index>` | allowed by rule `index` (0-based) of that group (a `log: true` rule) |
//! | `ASG_OK` | allowed, logged because `iptables_asg_logging` logs every allow (the prefix names no rule: the flow log finds the deciding one, [`super::flow_rules::AsgFlowRules`]) |
//! | `ASG_DENY deny_networks` | refused by the cell's deny networks, before any allow |
//! | `ASG_DENY default` | no rule of the container's groups allows it |
//! | `ASG_DENY unknown_source` | the source address is no container the agent knows (fail closed) |
//!
//! A group guid that is not 1-64 characters of `[A-Za-z0-9._-]` (never the case for Cloud
//! Controller guids) is written as `h` + 16 hex digits of its hash; the compiled state maps such
//! a prefix back to the group.

use std::fmt;

/// Which NFLOG message a prefix names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogPrefix {
    /// Allowed by this group's rule (`group` as written in the prefix).
    Rule {
        group: String,
        index: usize,
    },
    Allowed,
    DenyNetworks,
    Default,
    UnknownSource,
}

const OK: &str = "ASG_OK";
const DENY: &str = "ASG_DENY";

/// How a group guid appears in a prefix.
pub fn group_token(guid: &str) -> String {
    let plain = !guid.is_empty()
        && guid.len() <= 64
        && guid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        guid.to_string()
    } else {
        format!("h{:016x}", super::compile::hash64(guid))
    }
}

impl LogPrefix {
    pub fn rule(guid: &str, index: usize) -> LogPrefix {
        LogPrefix::Rule {
            group: group_token(guid),
            index,
        }
    }

    /// Reads a prefix back (trailing white space ignored); `None` for anything else.
    pub fn parse(text: &str) -> Option<LogPrefix> {
        let mut words = text.split_whitespace();
        let first = words.next()?;
        let rest: Vec<&str> = words.collect();
        match (first, rest.as_slice()) {
            (OK, []) => Some(LogPrefix::Allowed),
            (OK, [group, index]) => {
                let plain = group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                let index = index.parse().ok().filter(|_| plain && group.len() <= 64)?;
                Some(LogPrefix::Rule {
                    group: group.to_string(),
                    index,
                })
            }
            (DENY, ["deny_networks"]) => Some(LogPrefix::DenyNetworks),
            (DENY, ["default"]) => Some(LogPrefix::Default),
            (DENY, ["unknown_source"]) => Some(LogPrefix::UnknownSource),
            _ => None,
        }
    }
}

impl fmt::Display for LogPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogPrefix::Rule { group, index } => write!(f, "{OK} {group} {index}"),
            LogPrefix::Allowed => write!(f, "{OK}"),
            LogPrefix::DenyNetworks => write!(f, "{DENY} deny_networks"),
            LogPrefix::Default => write!(f, "{DENY} default"),
            LogPrefix::UnknownSource => write!(f, "{DENY} unknown_source"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefixes_round_trip_and_odd_guids_are_hashed() {
        for p in [
            LogPrefix::rule("8e5a1c2d-0000-4b6f-9c1e-1234567890ab", 3),
            LogPrefix::Allowed,
            LogPrefix::DenyNetworks,
            LogPrefix::Default,
            LogPrefix::UnknownSource,
        ] {
            assert_eq!(LogPrefix::parse(&format!("{p} ")), Some(p.clone()));
            assert!(p.to_string().len() < 127);
        }
        let odd = LogPrefix::rule("a b\"c", 0).to_string();
        assert!(odd.starts_with("ASG_OK h") && !odd.contains('"'), "{odd}");
        assert_eq!(LogPrefix::parse("OK_handle"), None);
        assert_eq!(LogPrefix::parse("ASG_OK g x"), None);
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(s in "\\PC{0,80}") {
            let _ = LogPrefix::parse(&s);
        }
    }
}
