//! Authorisation beyond scopes (reference §2.4): a non-admin caller may create or delete only
//! policies between apps in spaces where they are a space developer, within the per-source quota,
//! and sees only policies whose apps are both in their spaces.

use super::auth::Identity;
use super::cc::CloudController;
use super::store::Store;
use crate::api::policy::Policy;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 403 `one or more applications cannot be found or accessed`
    NotAccessible,
    /// 403 `policy quota exceeded`
    QuotaExceeded,
    /// 500 with the given client message; the detail goes to the log.
    Failed {
        message: &'static str,
        detail: String,
    },
}

pub struct Guard<'a> {
    pub cc: Option<&'a dyn CloudController>,
    pub store: &'a dyn Store,
    pub max_policies_per_source: usize,
}

impl Guard<'_> {
    /// Space-developer check for create and delete.
    pub fn check_access(&self, who: &Identity, policies: &[Policy]) -> Result<(), Denied> {
        let guids: Vec<String> = policies
            .iter()
            .flat_map(|p| [p.source.id.clone(), p.destination.id.clone()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.space_developer_of(who, &guids, false)
    }

    /// An admin, or a space developer of the space of every app in `guids`; an app the Cloud
    /// Controller does not know is refused (internal routes).
    pub fn check_apps(&self, who: &Identity, guids: &[String]) -> Result<(), Denied> {
        self.space_developer_of(who, guids, true)
    }

    /// `all_known`: an app the Cloud Controller does not list is refused (policies keep the
    /// original's behaviour, which passes such apps over).
    fn space_developer_of(
        &self,
        who: &Identity,
        guids: &[String],
        all_known: bool,
    ) -> Result<(), Denied> {
        if who.is_admin() {
            return Ok(());
        }
        let Some(cc) = self.cc else {
            // Without a Cloud Controller nobody but an admin can be shown to own the apps.
            return Err(Denied::NotAccessible);
        };
        let failed = |detail: String| Denied::Failed {
            message: "check access failed",
            detail,
        };
        let spaces = cc.app_spaces(guids).map_err(|e| failed(e.0))?;
        if all_known && guids.iter().any(|g| !spaces.contains_key(g)) {
            return Err(Denied::NotAccessible);
        }
        let distinct: BTreeSet<&String> = spaces.values().collect();
        for space in distinct {
            if !cc
                .is_space_developer(&who.subject, space)
                .map_err(|e| failed(e.0))?
            {
                return Err(Denied::NotAccessible);
            }
        }
        Ok(())
    }

    /// Those of `guids` whose app is in one of the caller's spaces (all of them for an admin).
    pub fn visible_apps(
        &self,
        who: &Identity,
        guids: &[String],
    ) -> Result<BTreeSet<String>, Denied> {
        self.visible(who, guids, "filter failed")
    }

    /// [`Guard::visible_apps`], failing with `message`.
    fn visible(
        &self,
        who: &Identity,
        guids: &[String],
        message: &'static str,
    ) -> Result<BTreeSet<String>, Denied> {
        if who.is_admin() {
            return Ok(guids.iter().cloned().collect());
        }
        let Some(cc) = self.cc else {
            return Ok(BTreeSet::new());
        };
        if guids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let failed = |detail: String| Denied::Failed { message, detail };
        let app_spaces = cc.app_spaces(guids).map_err(|e| failed(e.0))?;
        let user_spaces = cc.user_spaces(&who.subject).map_err(|e| failed(e.0))?;
        Ok(guids
            .iter()
            .filter(|g| app_spaces.get(*g).is_some_and(|s| user_spaces.contains(s)))
            .cloned()
            .collect())
    }

    /// Per-source quota for non-admin creates: existing policies of each source plus the new ones.
    pub fn check_quota(&self, who: &Identity, policies: &[Policy]) -> Result<(), Denied> {
        if who.is_admin() {
            return Ok(());
        }
        let mut new_counts: HashMap<String, usize> = HashMap::new();
        for p in policies {
            *new_counts.entry(p.source.id.clone()).or_default() += 1;
        }
        let ids: Vec<String> = new_counts.keys().cloned().collect();
        let existing = self
            .store
            .source_policy_counts(&ids)
            .map_err(|e| Denied::Failed {
                message: "check quota failed",
                detail: e.to_string(),
            })?;
        for (id, new) in &new_counts {
            if existing.get(id).copied().unwrap_or(0) + new > self.max_policies_per_source {
                return Err(Denied::QuotaExceeded);
            }
        }
        Ok(())
    }

    /// Keeps only the policies whose source and destination apps are both in the caller's spaces.
    pub fn filter_visible(
        &self,
        who: &Identity,
        policies: Vec<Policy>,
    ) -> Result<Vec<Policy>, Denied> {
        if who.is_admin() || policies.is_empty() {
            return Ok(policies);
        }
        let guids: Vec<String> = policies
            .iter()
            .flat_map(|p| [p.source.id.clone(), p.destination.id.clone()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let visible = self.visible(who, &guids, "filter policies failed")?;
        Ok(policies
            .into_iter()
            .filter(|p| visible.contains(&p.source.id) && visible.contains(&p.destination.id))
            .collect())
    }
}
