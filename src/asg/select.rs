//! Which security groups apply to a container, as the original's agent decides (next-wave §1.3
//! step 4): the groups globally enabled for the container's lifecycle, plus the groups bound to
//! its space for that lifecycle. Staging containers get staging groups; app and task containers
//! get running groups; any other workload gets none (only the default deny).

use super::rule::{parse_rules_lenient, Rule, RuleError};
use crate::api::security_groups::SecurityGroup;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lifecycle {
    Running,
    Staging,
}

impl Lifecycle {
    /// The lifecycle of a container from its `container_workload` metadata: `app` and `task`
    /// run, `staging` stages, anything else (or nothing) has no security groups.
    pub fn of_workload(workload: &str) -> Option<Lifecycle> {
        match workload {
            "app" | "task" => Some(Lifecycle::Running),
            "staging" => Some(Lifecycle::Staging),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Running => "running",
            Lifecycle::Staging => "staging",
        }
    }
}

impl std::str::FromStr for Lifecycle {
    type Err = String;
    fn from_str(s: &str) -> Result<Lifecycle, String> {
        match s {
            "running" => Ok(Lifecycle::Running),
            "staging" => Ok(Lifecycle::Staging),
            other => Err(format!("lifecycle {other:?} is not running or staging")),
        }
    }
}

/// Whether `group` applies to a container of `space` in `lifecycle`.
pub fn applies(group: &SecurityGroup, space: &str, lifecycle: Lifecycle) -> bool {
    let (global, spaces) = match lifecycle {
        Lifecycle::Running => (group.running_default, &group.running_space_guids),
        Lifecycle::Staging => (group.staging_default, &group.staging_space_guids),
    };
    global || (!space.is_empty() && spaces.iter().any(|s| s == space))
}

/// The groups of `groups` that apply to a container of `space` in `lifecycle`, in their order.
pub fn groups_for<'a>(
    groups: &'a [SecurityGroup],
    space: &'a str,
    lifecycle: Lifecycle,
) -> impl Iterator<Item = &'a SecurityGroup> + 'a {
    groups.iter().filter(move |g| applies(g, space, lifecycle))
}

/// The union of the rules of the groups that apply, without duplicates (two groups with the same
/// rule give it once), ordered; and the rules that could not be read, with their group's guid.
pub fn effective_rules(
    groups: &[SecurityGroup],
    space: &str,
    lifecycle: Lifecycle,
) -> (Vec<Rule>, Vec<(String, RuleError)>) {
    let mut rules = BTreeSet::new();
    let mut errors = Vec::new();
    for group in groups_for(groups, space, lifecycle) {
        match parse_rules_lenient(&group.rules) {
            Ok((good, bad)) => {
                rules.extend(good);
                errors.extend(bad.into_iter().map(|e| (group.guid.clone(), e)));
            }
            Err(e) => errors.push((group.guid.clone(), e)),
        }
    }
    (rules.into_iter().collect(), errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(guid: &str, running: bool, staging: bool, rs: &[&str], ss: &[&str]) -> SecurityGroup {
        SecurityGroup {
            guid: guid.into(),
            name: guid.into(),
            rules: format!(
                r#"[{{"protocol":"tcp","destination":"10.0.0.1","ports":"{}"}}]"#,
                guid.len()
            ),
            running_default: running,
            staging_default: staging,
            running_space_guids: rs.iter().map(|s| s.to_string()).collect(),
            staging_space_guids: ss.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(groups: &[SecurityGroup], space: &str, l: Lifecycle) -> Vec<String> {
        groups_for(groups, space, l)
            .map(|g| g.guid.clone())
            .collect()
    }

    #[test]
    fn global_and_space_bound_groups_per_lifecycle() {
        let groups = vec![
            group("global-running", true, false, &[], &[]),
            group("global-staging", false, true, &[], &[]),
            group("space-a-running", false, false, &["a"], &[]),
            group("space-a-staging", false, false, &[], &["a"]),
            group("space-b-both", false, false, &["b"], &["b"]),
        ];
        assert_eq!(
            names(&groups, "a", Lifecycle::Running),
            ["global-running", "space-a-running"]
        );
        assert_eq!(
            names(&groups, "a", Lifecycle::Staging),
            ["global-staging", "space-a-staging"]
        );
        assert_eq!(
            names(&groups, "b", Lifecycle::Running),
            ["global-running", "space-b-both"]
        );
        assert_eq!(names(&groups, "", Lifecycle::Running), ["global-running"]);
        assert_eq!(names(&groups, "c", Lifecycle::Staging), ["global-staging"]);
    }

    #[test]
    fn tasks_run_and_unknown_workloads_get_nothing() {
        assert_eq!(Lifecycle::of_workload("task"), Some(Lifecycle::Running));
        assert_eq!(Lifecycle::of_workload("app"), Some(Lifecycle::Running));
        assert_eq!(Lifecycle::of_workload("staging"), Some(Lifecycle::Staging));
        assert_eq!(Lifecycle::of_workload(""), None);
        assert_eq!(Lifecycle::of_workload("APP"), None);
    }

    #[test]
    fn the_same_rule_in_two_groups_is_enforced_once_and_bad_rules_are_reported() {
        let mut a = group("a", true, false, &[], &[]);
        let mut b = group("b", true, false, &[], &[]);
        b.rules = a.rules.clone();
        a.rules = a.rules.replace("]", r#",{"protocol":"bogus"}]"#);
        let (rules, errors) = effective_rules(&[a, b], "s", Lifecycle::Running);
        assert_eq!(rules.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "a");
    }
}
