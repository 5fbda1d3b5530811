//! What the policy server asks the Cloud Controller: which space each app is in, whether a user
//! is a space developer, which spaces a user can see, and which apps still exist.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcError(pub String);

impl std::fmt::Display for CcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub trait CloudController: Send + Sync {
    /// App GUID -> space GUID for the apps the CC knows (`GET /v3/apps?guids=`); unknown apps
    /// are absent from the map.
    fn app_spaces(&self, app_guids: &[String]) -> Result<HashMap<String, String>, CcError>;
    /// Whether `subject` is a space developer of `space_guid` (`GET /v2/spaces/<guid>`, then
    /// `GET /v2/spaces?q=developer_guid:..&q=name:..&q=organization_guid:..`). A space the CC
    /// does not know (404) is `Ok(false)`.
    fn is_space_developer(&self, subject: &str, space_guid: &str) -> Result<bool, CcError>;
    /// The spaces `subject` belongs to (`GET /v2/users/<sub>/spaces`, following `next_url`).
    fn user_spaces(&self, subject: &str) -> Result<HashSet<String>, CcError>;
    /// Which of `app_guids` still exist (stale-policy cleanup; chunks of 100).
    fn existing_apps(&self, app_guids: &[String]) -> Result<HashSet<String>, CcError>;
}
