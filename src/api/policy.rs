//! The policy server's JSON shapes (external v0/v1 and internal APIs), as the original served them.

use serde::{Deserialize, Serialize};

/// A policy in the v1 shape: source app may reach destination app on protocol + port range.
/// Tags are filled only by the internal API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub destination: Destination,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Source {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Destination {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub ports: Ports,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Ports {
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub end: i64,
}

/// The v0 (netman-era) shape: a single destination port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyV0 {
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub destination: DestinationV0,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationV0 {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub port: i64,
}

impl Policy {
    pub fn new(source: &str, dest: &str, protocol: &str, start: i64, end: i64) -> Policy {
        Policy {
            source: Source {
                id: source.to_string(),
                tag: None,
            },
            destination: Destination {
                id: dest.to_string(),
                tag: None,
                protocol: protocol.to_string(),
                ports: Ports { start, end },
            },
        }
    }

    /// The same policy without tags (what the external API shows).
    pub fn untagged(&self) -> Policy {
        let mut p = self.clone();
        p.source.tag = None;
        p.destination.tag = None;
        p
    }

    /// The v0 view; `None` when the port range is not a single port (v0 cannot show it).
    pub fn to_v0(&self) -> Option<PolicyV0> {
        (self.destination.ports.start == self.destination.ports.end).then(|| PolicyV0 {
            source: self.source.clone(),
            destination: DestinationV0 {
                id: self.destination.id.clone(),
                tag: self.destination.tag.clone(),
                protocol: self.destination.protocol.clone(),
                port: self.destination.ports.start,
            },
        })
    }
}

impl PolicyV0 {
    pub fn to_v1(&self) -> Policy {
        Policy {
            source: self.source.clone(),
            destination: Destination {
                id: self.destination.id.clone(),
                tag: self.destination.tag.clone(),
                protocol: self.destination.protocol.clone(),
                ports: Ports {
                    start: self.destination.port,
                    end: self.destination.port,
                },
            },
        }
    }
}

/// Request body of create and delete: `{"policies": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoliciesRequest<P = Policy> {
    #[serde(default = "Vec::new")]
    pub policies: Vec<P>,
}

/// Response of the list routes: `{"total_policies": N, "policies": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoliciesResponse<P = Policy> {
    pub total_policies: usize,
    pub policies: Vec<P>,
}

/// One tag assignment: `{"id": "<guid>", "tag": "0001", "type": "app"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub id: String,
    pub tag: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagsResponse {
    pub tags: Vec<Tag>,
}

/// Body of the internal `PUT tags`. Field names match case-insensitively, as the original did
/// (its agent sent `ID` and `Type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRequest {
    #[serde(alias = "ID", alias = "Id")]
    pub id: String,
    #[serde(rename = "type", alias = "Type", alias = "TYPE")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub subject: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Renders a tag id as the original did: upper-case hex, zero-padded to two characters per byte.
pub fn format_tag(id: u32, tag_length: u8) -> String {
    format!("{:0width$X}", id, width = 2 * tag_length as usize)
}

/// Parses a tag string back to its numeric id (the packet mark).
pub fn parse_tag(tag: &str) -> Option<u32> {
    u32::from_str_radix(tag, 16).ok()
}

/// Present (value `1`) on every answer of the policy server to a watch of
/// `policies_last_updated` (`?wait=&after=`); a server that ignores those parameters lacks it.
pub const WATCH_HEADER: &str = "x-netman-watch";
/// [`WATCH_HEADER`]'s value when the version moved only by changes that touched none of the ids
/// the watch named (`id=`): the watcher's policies are unchanged at that version.
pub const WATCH_UNAFFECTED: &str = "unaffected";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_render_as_padded_upper_hex() {
        assert_eq!(format_tag(1, 2), "0001");
        assert_eq!(format_tag(10, 2), "000A");
        assert_eq!(format_tag(65535, 2), "FFFF");
        assert_eq!(format_tag(255, 1), "FF");
        assert_eq!(parse_tag("000A"), Some(10));
    }

    #[test]
    fn v0_and_v1_convert_and_ranges_hide_from_v0() {
        let p = Policy::new("a", "b", "tcp", 8080, 8080);
        let v0 = p.to_v0().unwrap();
        assert_eq!(v0.destination.port, 8080);
        assert_eq!(v0.to_v1(), p);
        assert!(Policy::new("a", "b", "tcp", 80, 90).to_v0().is_none());
    }

    #[test]
    fn tag_request_accepts_capitalised_fields() {
        let t: TagRequest =
            serde_json::from_str(r#"{"ID":"INGRESS_ROUTER","Type":"router"}"#).unwrap();
        assert_eq!(t.id, "INGRESS_ROUTER");
        assert_eq!(t.kind, "router");
    }
}
