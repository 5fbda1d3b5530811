//! The export document: everything the policy store holds, as one JSON object that
//! `policy-server export` writes and `policy-server import` loads into any backend.
//!
//! ```json
//! {"format": "netman-policy-export", "version": 1,
//!  "exported_at": "2026-01-02T03:04:05Z", "exported_from": "sqlite",
//!  "tag_length": 2, "last_updated": 1767323045000000000,
//!  "tags": [{"id": "<app guid>", "tag": "0001", "type": "app"},
//!           {"id": "INGRESS_ROUTER", "tag": "0003", "type": "router"}],
//!  "policies": [{"source": {"id": "<guid>", "tag": "0001"},
//!                "destination": {"id": "<guid>", "tag": "0002", "protocol": "tcp",
//!                                "ports": {"start": 8080, "end": 8080}}}],
//!  "security_groups": [{"guid": "…", "name": "dns", "rules": "[…]", …}],
//!  "released_tags": [{"tag": "0004", "released_at": 1767323000123}],
//!  "internal_domains": ["apps.internal"],
//!  "internal_routes": [{"app_guid": "<guid>", "host": "backend", "domain": "apps.internal"}]}
//! ```
//!
//! Sections: `tags` holds every assigned tag (also those no policy uses, such as the ingress
//! router's), `policies` the internal API's listing in its order, `security_groups` the
//! original's table when the database has one (absent: no table; `[]`: an empty one),
//! `released_tags` every free tag that was released at some time, with when (Unix
//! milliseconds; absent: none was), so that a tag released shortly before the export stays in
//! quarantine (`tag_quarantine_seconds`) after the import instead of going to another app at
//! once while a stale cell may still mark the old app with it (issue 18), `internal_domains` and
//! `internal_routes` service discovery's domains and routes (absent: the database had no service
//! discovery tables; both or neither). Later kinds of data come as further optional sections; a
//! reader refuses a section it does not know rather than dropping it, and `version` changes only
//! for an incompatible shape.

use crate::api::policy::{Policy, Tag};
use crate::api::sd::InternalRoute;
use crate::api::security_groups::SecurityGroup;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

pub const FORMAT: &str = "netman-policy-export";
/// The newest document version this binary reads and the one it writes.
pub const VERSION: u32 = 1;
/// At most this many problems are listed when a document is refused.
const MAX_PROBLEMS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub format: String,
    pub version: u32,
    /// When and from which backend (informational; not checked on import).
    #[serde(default)]
    pub exported_at: String,
    #[serde(default)]
    pub exported_from: String,
    pub tag_length: u8,
    /// `policies_info.last_updated` of the source, Unix nanoseconds.
    pub last_updated: i64,
    pub tags: Vec<Tag>,
    pub policies: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<SecurityGroup>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_tags: Vec<ReleasedTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_routes: Option<Vec<InternalRoute>>,
}

/// A free tag and when it was released, Unix milliseconds (`groups.released_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasedTag {
    pub tag: String,
    pub released_at: i64,
}

/// Release times may run this far ahead of the importing machine's clock (servers' clocks
/// differ a little); later ones are refused, as they would keep a tag out of use for longer than
/// any quarantine.
const RELEASE_CLOCK_SKEW_MS: i64 = 3600 * 1000;

impl Document {
    /// Parses a document; the error says what is wrong in operator's terms.
    pub fn parse(bytes: &[u8]) -> Result<Document, String> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("not an export document: expected a JSON object".into());
        }
        serde_json::from_slice(bytes).map_err(|e| {
            let text = e.to_string();
            if text.starts_with("unknown field") {
                format!(
                    "{text}: this binary reads export documents of version {VERSION} with the \
                     sections tags, policies, security_groups, released_tags, internal_domains and \
                     internal_routes; a newer policy-server wrote this one"
                )
            } else if e.is_eof() {
                format!("the document is cut short (partial file?): {text}")
            } else {
                format!("not a valid export document: {text}")
            }
        })
    }

    /// Checks the whole document against itself and the target's tag length; every problem
    /// found (up to a limit) is listed.
    pub fn validate(&self, tag_length: u8) -> Result<(), Vec<String>> {
        let mut problems = Problems::default();
        if self.format != FORMAT {
            problems.push(format!(
                "format is {:?}, not {FORMAT:?}: not a netman export document",
                self.format
            ));
            return problems.into_result();
        }
        if self.version == 0 || self.version > VERSION {
            problems.push(format!(
                "document version {} is not one this binary reads (1..={VERSION})",
                self.version
            ));
            return problems.into_result();
        }
        if self.tag_length != tag_length {
            problems.push(format!(
                "the document's tag_length is {} but the config's is {tag_length}: tags would \
                 change their width; set tag_length to {} for the import",
                self.tag_length, self.tag_length
            ));
            return problems.into_result();
        }
        if self.last_updated < 0 {
            problems.push(format!("last_updated {} is negative", self.last_updated));
        }
        let max_tag = (1u32 << (8 * tag_length as u32)) - 1;
        let mut by_id: HashMap<&str, &Tag> = HashMap::new();
        let mut numbers: HashSet<u32> = HashSet::new();
        for (i, t) in self.tags.iter().enumerate() {
            let at = format!("tags[{i}]");
            check_name(&mut problems, &format!("{at}.id"), &t.id, 255);
            check_name(&mut problems, &format!("{at}.type"), &t.kind, 255);
            match parse_tag(&t.tag, tag_length).filter(|n| (1..=max_tag).contains(n)) {
                Some(n) => {
                    if !numbers.insert(n) {
                        problems.push(format!("{at}.tag {} is given to two ids", t.tag));
                    }
                }
                None => problems.push(not_a_tag(&format!("{at}.tag"), &t.tag, tag_length)),
            }
            if by_id.insert(t.id.as_str(), t).is_some() {
                problems.push(format!("{at}.id {:?} has two tags", t.id));
            }
        }
        let mut seen: HashSet<(&str, &str, &str, i64, i64)> = HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("policies[{i}]");
            if let Err(m) = crate::policy::validate::validate_v1(&[p.untagged()]) {
                problems.push(format!("{at}: {m}"));
            }
            check_name(&mut problems, &format!("{at}.source.id"), &p.source.id, 255);
            check_name(
                &mut problems,
                &format!("{at}.destination.id"),
                &p.destination.id,
                255,
            );
            for (side, id, tag) in [
                ("source", &p.source.id, &p.source.tag),
                ("destination", &p.destination.id, &p.destination.tag),
            ] {
                match (tag, by_id.get(id.as_str())) {
                    (None, _) => problems.push(format!("{at}.{side}.tag is missing")),
                    (Some(_), None) => {
                        problems.push(format!("{at}.{side}.id {id:?} has no entry in tags"))
                    }
                    (Some(tag), Some(t)) if *tag != t.tag => problems.push(format!(
                        "{at}.{side}.tag {tag} differs from the tag of {id:?} in tags ({})",
                        t.tag
                    )),
                    (Some(_), Some(t)) if t.kind != "app" => problems.push(format!(
                        "{at}.{side}.id {id:?} has a tag of type {:?}; policies take app tags",
                        t.kind
                    )),
                    _ => {}
                }
            }
            let d = &p.destination;
            let key = (
                p.source.id.as_str(),
                d.id.as_str(),
                d.protocol.as_str(),
                d.ports.start,
                d.ports.end,
            );
            if !seen.insert(key) {
                problems.push(format!("{at} appears twice"));
            }
        }
        if let Some(groups) = &self.security_groups {
            let mut guids = HashSet::new();
            for (i, g) in groups.iter().enumerate() {
                let at = format!("security_groups[{i}]");
                check_name(&mut problems, &format!("{at}.guid"), &g.guid, 36);
                check_name(&mut problems, &format!("{at}.name"), &g.name, 255);
                if !guids.insert(g.guid.as_str()) {
                    problems.push(format!("{at}.guid {:?} appears twice", g.guid));
                }
                match serde_json::from_str::<serde_json::Value>(&g.rules) {
                    Ok(serde_json::Value::Array(_)) => {}
                    _ => problems.push(format!(
                        "{at}.rules is not a JSON array in a string (the Cloud Controller rules)"
                    )),
                }
                for (list, spaces) in [
                    ("staging_space_guids", &g.staging_space_guids),
                    ("running_space_guids", &g.running_space_guids),
                ] {
                    for (j, s) in spaces.iter().enumerate() {
                        check_name(&mut problems, &format!("{at}.{list}[{j}]"), s, 255);
                    }
                }
            }
        }
        self.validate_released(tag_length, &numbers, &mut problems);
        super::sd_section::validate(
            self.internal_domains.as_deref(),
            self.internal_routes.as_deref(),
            &mut problems,
        );
        problems.into_result()
    }

    /// `released_tags`: well-formed tags, each once, none also assigned in `tags`, released at
    /// a time after the epoch and not in the future (beyond a clock skew).
    fn validate_released(&self, tag_length: u8, assigned: &HashSet<u32>, problems: &mut Problems) {
        let max_tag = (1u32 << (8 * tag_length as u32)) - 1;
        let latest = crate::clock::unix_millis() + RELEASE_CLOCK_SKEW_MS;
        let mut released: HashSet<u32> = HashSet::new();
        for (i, r) in self.released_tags.iter().enumerate() {
            let at = format!("released_tags[{i}]");
            match parse_tag(&r.tag, tag_length).filter(|n| (1..=max_tag).contains(n)) {
                Some(n) if assigned.contains(&n) => problems.push(format!(
                    "{at}.tag {} is also assigned in tags: a tag is either in use or released",
                    r.tag
                )),
                Some(n) if !released.insert(n) => {
                    problems.push(format!("{at}.tag {} is released twice", r.tag))
                }
                Some(_) => {}
                None => problems.push(not_a_tag(&format!("{at}.tag"), &r.tag, tag_length)),
            }
            if r.released_at <= 0 {
                problems.push(format!(
                    "{at}.released_at {} is not a time after 1970 (Unix milliseconds)",
                    r.released_at
                ));
            } else if r.released_at > latest {
                problems.push(format!(
                    "{at}.released_at {} is more than an hour in the future (Unix \
                     milliseconds; now is {})",
                    r.released_at,
                    latest - RELEASE_CLOCK_SKEW_MS
                ));
            }
        }
    }
}

/// The number of a tag of `tag_length` bytes: exactly 2L upper-case hex digits.
fn parse_tag(tag: &str, tag_length: u8) -> Option<u32> {
    let valid = tag.len() == 2 * tag_length as usize
        && tag
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c));
    valid.then(|| u32::from_str_radix(tag, 16).ok()).flatten()
}

fn not_a_tag(at: &str, tag: &str, tag_length: u8) -> String {
    let max_tag = (1u32 << (8 * tag_length as u32)) - 1;
    format!(
        "{at} {tag:?} is not a tag of length {tag_length} ({} upper-case hex digits, 1 to \
         {max_tag:X})",
        2 * tag_length
    )
}

fn check_name(problems: &mut Problems, at: &str, value: &str, max: usize) {
    if value.is_empty() {
        problems.push(format!("{at} is empty"));
    } else if value.len() > max {
        problems.push(format!("{at} is longer than {max} bytes"));
    }
}

#[derive(Default)]
pub(super) struct Problems {
    list: Vec<String>,
    more: usize,
}

impl Problems {
    pub(super) fn push(&mut self, p: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }

    pub(super) fn into_result(mut self) -> Result<(), Vec<String>> {
        if self.list.is_empty() {
            return Ok(());
        }
        if self.more > 0 {
            self.list.push(format!("... and {} more", self.more));
        }
        Err(self.list)
    }
}

/// (year, month, day, hour, minute, second) of `secs` since the Unix epoch, UTC (proleptic
/// Gregorian calendar).
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `secs` since the Unix epoch as RFC 3339 UTC (`2026-01-02T03:04:05Z`).
pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `micros` since the Unix epoch as a SQL timestamp literal of UTC wall-clock time
/// (`2026-01-02 03:04:05.123456`).
pub fn wall_clock_micros(micros: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(micros.div_euclid(1_000_000));
    let frac = micros.rem_euclid(1_000_000);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{frac:06}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::{Destination, Ports, Source};

    fn tag(id: &str, tag: &str, kind: &str) -> Tag {
        Tag {
            id: id.into(),
            tag: tag.into(),
            kind: kind.into(),
        }
    }

    fn policy(src: (&str, &str), dst: (&str, &str), start: i64, end: i64) -> Policy {
        Policy {
            source: Source {
                id: src.0.into(),
                tag: Some(src.1.into()),
            },
            destination: Destination {
                id: dst.0.into(),
                tag: Some(dst.1.into()),
                protocol: "tcp".into(),
                ports: Ports { start, end },
            },
        }
    }

    fn good() -> Document {
        Document {
            format: FORMAT.into(),
            version: VERSION,
            exported_at: rfc3339(0),
            exported_from: "sqlite".into(),
            tag_length: 2,
            last_updated: 5,
            tags: vec![
                tag("a", "0001", "app"),
                tag("b", "0002", "app"),
                tag("INGRESS_ROUTER", "0003", "router"),
            ],
            policies: vec![policy(("a", "0001"), ("b", "0002"), 80, 90)],
            security_groups: Some(vec![SecurityGroup {
                guid: "sg".into(),
                name: "dns".into(),
                rules: "[]".into(),
                ..Default::default()
            }]),
            released_tags: vec![released("0004", 1_767_323_000_123)],
            internal_domains: Some(vec!["apps.internal".into()]),
            internal_routes: Some(vec![InternalRoute::new("b", "backend", "apps.internal")]),
        }
    }

    fn released(tag: &str, released_at: i64) -> ReleasedTag {
        ReleasedTag {
            tag: tag.into(),
            released_at,
        }
    }

    #[test]
    fn a_good_document_passes_and_round_trips_through_json() {
        let doc = good();
        assert_eq!(doc.validate(2), Ok(()));
        let json = serde_json::to_vec(&doc).unwrap();
        assert_eq!(Document::parse(&json).unwrap(), doc);
        let mut none = good();
        none.security_groups = None;
        none.released_tags.clear();
        let json = serde_json::to_string(&none).unwrap();
        assert!(!json.contains("security_groups"));
        assert!(
            !json.contains("released_tags"),
            "absent when none was released"
        );
    }

    #[test]
    fn every_problem_is_named_with_its_place() {
        let mut doc = good();
        doc.tags.push(tag("c", "0001", "app"));
        doc.tags.push(tag("d", "000g", "app"));
        doc.tags.push(tag("a", "0009", "app"));
        doc.policies
            .push(policy(("a", "0001"), ("zz", "0004"), 80, 80));
        doc.policies
            .push(policy(("a", "0002"), ("b", "0002"), 80, 80));
        doc.policies
            .push(policy(("INGRESS_ROUTER", "0003"), ("b", "0002"), 1, 1));
        doc.policies.push(doc.policies[0].clone());
        doc.policies
            .push(policy(("a", "0001"), ("b", "0002"), 0, 0));
        doc.security_groups.as_mut().unwrap()[0].rules = "{".into();
        doc.released_tags.extend([
            released("0002", 5),
            released("0004", 6),
            released("4", 7),
            released("0005", 0),
            released("0006", i64::MAX),
        ]);
        let problems = doc.validate(2).unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "tags[3].tag 0001 is given to two ids",
            "tags[4].tag \"000g\" is not a tag",
            "tags[5].id \"a\" has two tags",
            "policies[1].destination.id \"zz\" has no entry in tags",
            "policies[2].source.tag 0002 differs",
            "policies[3].source.id \"INGRESS_ROUTER\" has a tag of type \"router\"",
            "policies[4] appears twice",
            "policies[5]: missing start port",
            "security_groups[0].rules is not a JSON array",
            "released_tags[1].tag 0002 is also assigned in tags",
            "released_tags[2].tag 0004 is released twice",
            "released_tags[3].tag \"4\" is not a tag",
            "released_tags[4].released_at 0 is not a time after 1970",
            "released_tags[5].released_at 9223372036854775807 is more than an hour in the future",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn tag_length_version_and_format_are_checked_first() {
        let mut doc = good();
        doc.tag_length = 1;
        assert!(doc.validate(2).unwrap_err()[0].contains("set tag_length to 1"));
        let mut doc = good();
        doc.version = 2;
        assert!(doc.validate(2).unwrap_err()[0].contains("version 2"));
        let mut doc = good();
        doc.format = "other".into();
        assert!(doc.validate(2).unwrap_err()[0].contains("not a netman export"));
    }

    #[test]
    fn parse_explains_unknown_sections_and_cut_files() {
        let mut json = serde_json::to_value(good()).unwrap();
        json["network_policies_v2"] = serde_json::json!([]);
        let e = Document::parse(json.to_string().as_bytes()).unwrap_err();
        assert!(
            e.contains("network_policies_v2") && e.contains("newer"),
            "{e}"
        );
        let text = serde_json::to_string(&good()).unwrap();
        let e = Document::parse(&text.as_bytes()[..text.len() / 2]).unwrap_err();
        assert!(e.contains("cut short"), "{e}");
        assert!(Document::parse(b"[1]").unwrap_err().contains("JSON object"));
    }

    #[test]
    fn the_problem_list_is_bounded() {
        let mut doc = good();
        for i in 0..50 {
            doc.tags.push(tag(&format!("x{i}"), "zz", "app"));
        }
        let problems = doc.validate(2).unwrap_err();
        assert_eq!(problems.len(), MAX_PROBLEMS + 1);
        assert!(problems.last().unwrap().contains("and 30 more"));
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
        assert_eq!(
            wall_clock_micros(1_767_323_045_000_042),
            "2026-01-02 03:04:05.000042"
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = Document::parse(&bytes);
        }

        #[test]
        fn validate_never_panics_on_parsed_junk(
            tags in proptest::collection::vec(("[a-z]{0,3}", "[0-9A-Fa-z]{0,5}", "[a-z]{0,3}"), 0..8),
            ports in proptest::collection::vec((-5i64..70000, -5i64..70000), 0..8),
            domains in proptest::collection::vec("[a-zA-Z.]{0,12}", 0..4),
            routes in proptest::collection::vec(("[a-z]{0,3}", "[a-zA-Z.-]{0,8}", "[a-z.]{0,12}"), 0..6),
        ) {
            let mut doc = good();
            doc.tags = tags.iter().map(|(i, t, k)| tag(i, t, k)).collect();
            doc.policies = ports
                .iter()
                .map(|(s, e)| policy(("a", "0001"), ("b", "0002"), *s, *e))
                .collect();
            doc.internal_domains = Some(domains);
            doc.internal_routes = Some(
                routes.iter().map(|(a, h, d)| InternalRoute::new(a, h, d)).collect(),
            );
            let _ = doc.validate(2);
        }
    }
}
