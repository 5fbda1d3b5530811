//! The groups as the cells read them: one copy of the whole table per version, reloaded only when
//! the version moved (a primary-key read per request), and the original's selection and paging
//! over it (reference §3): every globally enabled group plus the groups bound to any of the asked
//! spaces, ordered by id, from `from`, `limit` at a time with `next` the id of the first group not
//! returned.

use super::store::{AsgError, AsgStore, Snapshot};
use crate::api::security_groups::SecurityGroupsResponse;
use std::sync::{Arc, Mutex};

pub struct AsgCache {
    store: Arc<dyn AsgStore>,
    current: Mutex<Option<Arc<Snapshot>>>,
    reload: Mutex<()>,
}

impl AsgCache {
    pub fn new(store: Arc<dyn AsgStore>) -> AsgCache {
        AsgCache {
            store,
            current: Mutex::new(None),
            reload: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Arc<dyn AsgStore> {
        &self.store
    }

    fn cached(&self, version: i64) -> Option<Arc<Snapshot>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|s| s.version == version).cloned()
    }

    /// The groups at the current version (read from the database only when it moved; concurrent
    /// readers of a new version wait for one reload).
    pub fn snapshot(&self) -> Result<Arc<Snapshot>, AsgError> {
        let version = self.store.version()?;
        if let Some(s) = self.cached(version) {
            return Ok(s);
        }
        let _one = self.reload.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.cached(version) {
            return Ok(s);
        }
        let fresh = Arc::new(self.store.snapshot()?);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&fresh));
        Ok(fresh)
    }
}

/// The original's selection and paging; `from` and `limit` of 0 or less are not set.
pub fn select(
    snapshot: &Snapshot,
    spaces: &[&str],
    from: i64,
    limit: i64,
) -> SecurityGroupsResponse {
    let bound = |list: &[String]| list.iter().any(|s| spaces.contains(&s.as_str()));
    let mut matching = snapshot
        .groups
        .iter()
        .filter(|g| from <= 0 || g.id >= from)
        .filter(|g| {
            let g = &g.group;
            g.staging_default
                || g.running_default
                || bound(&g.staging_space_guids)
                || bound(&g.running_space_guids)
        });
    let mut page = SecurityGroupsResponse::default();
    for g in matching.by_ref() {
        if limit > 0 && page.security_groups.len() as i64 == limit {
            page.next = g.id;
            break;
        }
        page.security_groups.push(g.group.clone());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::security_groups::SecurityGroup;
    use crate::policy::asg::StoredGroup;

    fn snapshot() -> Snapshot {
        let g = |id: i64, running: bool, rs: &[&str], ss: &[&str]| StoredGroup {
            id,
            group: SecurityGroup {
                guid: format!("g{id}"),
                name: format!("n{id}"),
                rules: "[]".into(),
                running_default: running,
                running_space_guids: rs.iter().map(|s| s.to_string()).collect(),
                staging_space_guids: ss.iter().map(|s| s.to_string()).collect(),
                ..SecurityGroup::default()
            },
        };
        Snapshot {
            version: 1,
            groups: vec![
                g(1, true, &[], &[]),
                g(3, false, &["a"], &[]),
                g(4, false, &[], &["b"]),
                g(7, false, &["c"], &[]),
                g(9, false, &[], &[]),
            ],
        }
    }

    fn guids(r: &SecurityGroupsResponse) -> Vec<&str> {
        r.security_groups.iter().map(|g| g.guid.as_str()).collect()
    }

    #[test]
    fn defaults_and_groups_bound_to_any_asked_space() {
        let s = snapshot();
        assert_eq!(guids(&select(&s, &[], 0, 0)), ["g1"]);
        assert_eq!(guids(&select(&s, &["a", "b"], 0, 0)), ["g1", "g3", "g4"]);
        assert_eq!(guids(&select(&s, &["c", "zz"], 0, 0)), ["g1", "g7"]);
    }

    #[test]
    fn pages_by_id_with_next_the_first_not_returned() {
        let s = snapshot();
        let spaces = ["a", "b", "c"];
        let first = select(&s, &spaces, 0, 2);
        assert_eq!((guids(&first), first.next), (vec!["g1", "g3"], 4));
        let second = select(&s, &spaces, first.next, 2);
        assert_eq!((guids(&second), second.next), (vec!["g4", "g7"], 0));
        let from_five = select(&s, &spaces, 5, 0);
        assert_eq!((guids(&from_five), from_five.next), (vec!["g7"], 0));
    }
}
