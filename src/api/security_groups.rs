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

/// One rule as the original stores it inside `rules` (its syncer re-marshals every Cloud
/// Controller rule to this shape: all seven fields, in this order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRule {
    pub protocol: String,
    pub destination: String,
    #[serde(default)]
    pub ports: String,
    #[serde(default, rename = "type")]
    pub icmp_type: i64,
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub log: bool,
}

/// `globally_enabled` of a Cloud Controller v3 security group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GloballyEnabled {
    #[serde(default)]
    pub running: bool,
    #[serde(default)]
    pub staging: bool,
}

/// `{"guid": ...}` inside a v3 to-many relationship.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuidRef {
    pub guid: String,
}

/// A v3 to-many relationship: `{"data": [{"guid": ...}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToMany {
    #[serde(default)]
    pub data: Vec<GuidRef>,
}

impl ToMany {
    pub fn of(guids: &[String]) -> ToMany {
        ToMany {
            data: guids.iter().map(|g| GuidRef { guid: g.clone() }).collect(),
        }
    }

    pub fn guids(&self) -> Vec<String> {
        self.data.iter().map(|r| r.guid.clone()).collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceRelationships {
    #[serde(default)]
    pub running_spaces: ToMany,
    #[serde(default)]
    pub staging_spaces: ToMany,
}

/// A security group as the Cloud Controller v3 API shows it (and netman's admin API, its twin).
/// `rules` holds the rule objects themselves, not a string.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V3SecurityGroup {
    pub guid: String,
    pub name: String,
    #[serde(default)]
    pub globally_enabled: GloballyEnabled,
    #[serde(default)]
    pub rules: Vec<serde_json::Value>,
    #[serde(default)]
    pub relationships: SpaceRelationships,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<serde_json::Value>,
}

/// `{"href": ...}` in v3 pagination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub href: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    #[serde(default)]
    pub total_results: u64,
    #[serde(default)]
    pub total_pages: u64,
    #[serde(default)]
    pub first: Option<Link>,
    #[serde(default)]
    pub last: Option<Link>,
    #[serde(default)]
    pub next: Option<Link>,
    #[serde(default)]
    pub previous: Option<Link>,
}

/// A v3 list page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct V3List<T> {
    #[serde(default)]
    pub pagination: Pagination,
    #[serde(default = "Vec::new")]
    pub resources: Vec<T>,
}

/// The Cloud Controller's `GET /internal/v4/asg_latest_update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgLatestUpdate {
    pub last_update: String,
}
