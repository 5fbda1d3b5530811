//! Security groups as the original's internal API serves them to the cell agents (reference §3):
//! `GET /networking/:v/internal/security_groups?space_guids=a,b&limit=N&from=ID`.

use serde::{Deserialize, Serialize};

/// One application security group. `rules` is the Cloud Controller rule array kept as a JSON
/// *string*, as the original stores and serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub guid: String,
    pub name: String,
    pub rules: String,
    #[serde(default)]
    pub staging_default: bool,
    #[serde(default)]
    pub running_default: bool,
    #[serde(default)]
    pub staging_space_guids: Vec<String>,
    #[serde(default)]
    pub running_space_guids: Vec<String>,
}

/// The response: a page of groups and the id to continue `from` (0 = no more).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupsResponse {
    pub next: i64,
    pub security_groups: Vec<SecurityGroup>,
}
