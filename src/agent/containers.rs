//! The cell's containers that take part in policy, from the container metadata store
//! ([`crate::cell::store`], reference §6.5), which the agent re-reads only when its version
//! changed ([`crate::cell::Reader`]).

use crate::cell::{Container, Containers};
use std::path::Path;

/// The containers with an app (a non-empty `policy_group_id`) and an IPv4 address.
pub fn policy_containers(all: &Containers, source: &Path) -> Vec<Container> {
    for (handle, ip) in all.not_ipv4() {
        log::warn!(
            "container {handle} in {}: ip {ip:?} is not an IPv4 address: skipped",
            source.display()
        );
    }
    all.iter()
        .filter(|c| {
            let has_app = c.app().is_some();
            if !has_app {
                log::debug!(
                    "container {} has no metadata key policy_group_id: skipped",
                    c.handle
                );
            }
            has_app
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Reader;

    #[test]
    fn only_containers_with_an_app_and_an_ipv4_address_take_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        std::fs::write(
            &path,
            r#"{"h1":{"handle":"h1","ip":"10.255.1.2","metadata":{"policy_group_id":"app-a","space_id":"s"}},
               "h2":{"handle":"h2","ip":"10.255.1.3","metadata":{"app_id":"x"}},
               "h3":{"handle":"h3","ip":"fd00::1","metadata":{"policy_group_id":"app-b"}},
               "h4":{"handle":"h4","ip":"10.255.1.4"},
               "h5":{"handle":"h5","ip":"10.255.1.5","metadata":{"policy_group_id":""}}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("store.json_version"), "1").unwrap();
        let all = Reader::new(&path).read_if_changed(false).unwrap().unwrap();
        let got = policy_containers(&all, &path);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].handle.as_str(), got[0].ip, got[0].app()),
            ("h1", "10.255.1.2".parse().unwrap(), Some("app-a"))
        );
    }
}
