//! Is the ASG table in the kernel still the one the agent installed? Checked at every periodic
//! sync in place of rewriting the table whole (a rewrite costs about a second of CPU at 13,500
//! groups, and zeroes every counter in the table). The check reads what a change from outside
//! (an operator's `nft flush`/`delete`, another tool) would break, cheaply:
//! - the table's flags (a dormant table filters nothing);
//! - the table's chains with the number of rules in each, and its sets and maps by name (terse
//!   listings, no elements, and one nfnetlink dump of the rules);
//! - the `containers` map exactly (which rule set each container IP jumps to; an unknown IP must
//!   meet the final reject), and the deny-network sets by element count (a deny network gone
//!   would let through what it refuses);
//! - the plain maps (hosts -> class numbers, class numbers -> class chains) exactly, read
//!   over nfnetlink (one dump each, compared as bytes: [`super::bulk::differences`]), once the
//!   rest matches: an element added from outside could allow more. Through libnftables, reading
//!   135,000 elements a minute would cost what the rewrite did.
//!
//! Elements of the interval maps (port and destination segments) are not read: they are few,
//! and a missing one only refuses more.

use super::bulk::TableState;
use super::objects::{Objects, FAMILY, TABLE};
use crate::agent::nft::Runner;
use crate::agent::nft_rule_count;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The sets whose elements are compared: key -> value, exactly.
pub const EXACT: &[&str] = &["containers"];
/// The sets whose element count is compared.
pub const COUNTED: &[&str] = &["deny_r", "deny_s"];

/// The terse listing's shape: chain -> rules, and the names of sets and maps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub chains: BTreeMap<String, usize>,
    pub sets: BTreeSet<String>,
}

fn objects(json: &str) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("nftables") {
        Some(Value::Array(items)) => Ok(items.clone()),
        _ => Err("no \"nftables\" array".into()),
    }
}

fn field<'a>(o: &'a Value, key: &str, what: &str) -> Result<&'a str, String> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a {what} without a string \"{key}\""))
}

/// Adds what a listing (`list table`, `list chains`, `list sets`, `list maps`; terse) says of
/// this agent's table to `out`: its chains with their rules, its sets and maps.
pub fn parse_listing(json: &str, out: &mut Listing) -> Result<(), String> {
    for item in objects(json)? {
        let Some(obj) = item.as_object() else {
            return Err("an item that is not an object".into());
        };
        for (kind, o) in obj {
            if !matches!(kind.as_str(), "chain" | "rule" | "set" | "map") {
                continue;
            }
            if field(o, "table", kind)? != TABLE {
                continue;
            }
            match kind.as_str() {
                "chain" => {
                    out.chains
                        .entry(field(o, "name", kind)?.into())
                        .or_insert(0);
                }
                "rule" => {
                    *out.chains
                        .entry(field(o, "chain", kind)?.into())
                        .or_insert(0) += 1
                }
                _ => {
                    out.sets.insert(field(o, "name", kind)?.into());
                }
            }
        }
    }
    Ok(())
}

/// Parses one listing of the table ([`parse_listing`]).
pub fn parse_table(json: &str) -> Result<Listing, String> {
    let mut out = Listing::default();
    parse_listing(json, &mut out)?;
    Ok(out)
}

/// Parses `list set`/`list map` output: each element's key, and its value as the agent writes
/// it (`jump X`, `goto X`, `accept`, `drop`, or a plain value), `""` for a set.
pub fn parse_elements(json: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in objects(json)? {
        let Some(set) = item.get("set").or_else(|| item.get("map")) else {
            continue;
        };
        let elems = match set.get("elem") {
            None => continue,
            Some(Value::Array(e)) => e,
            Some(_) => return Err("\"elem\" is not an array".into()),
        };
        for e in elems {
            out.push(match e {
                Value::Array(pair) if pair.len() == 2 => (scalar(&pair[0])?, value(&pair[1])?),
                other => (scalar(other)?, String::new()),
            });
        }
    }
    Ok(out)
}

fn scalar(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        // Prefixes, ranges and concatenations: compared by count only, so any stable text does.
        Value::Object(_) | Value::Array(_) => Ok(v.to_string()),
        _ => Err(format!(
            "an element key {v} that is neither a value nor an object"
        )),
    }
}

fn value(v: &Value) -> Result<String, String> {
    if let Some(o) = v.as_object() {
        for verb in ["jump", "goto"] {
            if let Some(t) = o.get(verb) {
                return Ok(format!("{verb} {}", field(t, "target", verb)?));
            }
        }
        for verdict in ["accept", "drop", "continue", "return"] {
            if o.contains_key(verdict) {
                return Ok(verdict.into());
            }
        }
    }
    scalar(v)
}

/// The listings that name the table's chains, sets and maps without reading set elements
/// (libnftables' `list table` reads them all first, terse or not: 0.5-0.9 s at 135,000).
pub const LISTINGS: &[&str] = &["list chains ip", "list sets ip", "list maps ip"];

/// The command that lists one set or map of the table with its elements.
pub fn set_command(want: &Objects, name: &str) -> Option<String> {
    let kind = if want.sets.get(name)?.decl.contains(':') {
        "map"
    } else {
        "set"
    };
    Some(format!("list {kind} {FAMILY} {TABLE} {name}"))
}

/// What differs between `want` and the kernel's answers (empty: no drift). `sets` holds the
/// listed elements of the sets named in [`EXACT`] and [`COUNTED`] that `want` has.
pub fn differences(
    want: &Objects,
    table: &Listing,
    sets: &BTreeMap<String, Vec<(String, String)>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, (_, rules)) in &want.chains {
        match table.chains.get(name) {
            None => out.push(format!("chain {name} is missing")),
            Some(n) if *n != rules.len() => {
                out.push(format!("chain {name} has {n} rules, not {}", rules.len()))
            }
            Some(_) => {}
        }
    }
    out.extend(
        table
            .chains
            .keys()
            .filter(|n| !want.chains.contains_key(*n))
            .map(|n| format!("chain {n} is not the agent's")),
    );
    for name in want.sets.keys() {
        if !table.sets.contains(name) {
            out.push(format!("set {name} is missing"));
        }
    }
    out.extend(
        table
            .sets
            .iter()
            .filter(|n| !want.sets.contains_key(*n))
            .map(|n| format!("set {n} is not the agent's")),
    );
    for (name, listed) in sets {
        let Some(s) = want.sets.get(name) else {
            continue;
        };
        if EXACT.contains(&name.as_str()) {
            let listed: BTreeMap<&str, &str> = listed
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let wanted: BTreeMap<&str, &str> = s
                .elements
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if listed != wanted {
                out.push(elements_differ(name, listed.len(), wanted.len()));
            }
        } else if listed.len() != s.elements.len() {
            out.push(format!(
                "{name} holds {} elements, not {}",
                listed.len(),
                s.elements.len()
            ));
        }
    }
    out
}

/// A set or map whose elements are not the ones the agent wrote.
pub fn elements_differ(name: &str, held: usize, wanted: usize) -> String {
    format!("{name} holds {held} elements that differ from the {wanted} the agent wrote")
}

/// What differs between the kernel's ASG table and `want` ([`differences`]); empty: nothing.
/// The chains, sets and maps from three terse listings, the rules per chain from one
/// nfnetlink dump in the calling thread's network namespace ([`nft_rule_count`]; the
/// runner's must be the same), the elements of the sets named in [`EXACT`] and
/// [`COUNTED`] from one listing each.
pub fn check(runner: &dyn Runner, want: &Objects) -> Result<Vec<String>, String> {
    let list = |cmd: &str, terse: bool| runner.list_json(cmd, terse).map_err(|e| e.to_string());
    let mut table = Listing::default();
    for cmd in LISTINGS {
        parse_listing(&list(cmd, true)?, &mut table)?;
    }
    if table.chains.is_empty() && table.sets.is_empty() {
        return Ok(vec![format!("the table {TABLE} is missing")]);
    }
    // A dormant table (set so from outside, or left by a first apply that was cut short)
    // filters nothing.
    if super::bulk::table_state(runner).map_err(|e| e.to_string())? == TableState::Dormant {
        return Ok(vec![format!("the table {TABLE} is dormant")]);
    }
    let rules = nft_rule_count::rules_per_chain(TABLE).map_err(|e| e.to_string())?;
    for (chain, n) in rules {
        table.chains.insert(chain, n);
    }
    let mut sets = BTreeMap::new();
    for name in EXACT.iter().chain(COUNTED) {
        // A set missing from the kernel is already a difference of the listings.
        if !table.sets.contains(*name) {
            continue;
        }
        if let Some(cmd) = set_command(want, name) {
            sets.insert(name.to_string(), parse_elements(&list(&cmd, false)?)?);
        }
    }
    let mut found = differences(want, &table, &sets);
    if found.is_empty() {
        found = super::bulk::differences(runner, want, EXACT).map_err(|e| e.to_string())?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::asg::objects::SetObj;
    use proptest::prelude::*;

    fn want() -> Objects {
        let mut o = Objects::default();
        o.chain("forward", vec!["a".into(), "b".into()]);
        o.chain("rs_1", vec!["c".into()]);
        let mut c = SetObj::new("type ipv4_addr : verdict;");
        c.elements.insert("10.255.0.2".into(), "jump rs_1".into());
        o.set("containers", c);
        let mut d = SetObj::new("type ipv4_addr; flags interval;");
        d.elements.insert("10.0.0.0/8".into(), String::new());
        o.set("deny_r", d);
        o
    }

    const TABLE_JSON: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "ip", "name": "netman_asg", "handle": 1}},
        {"map": {"family": "ip", "name": "containers", "table": "netman_asg", "type": "ipv4_addr", "handle": 3, "map": "verdict"}},
        {"set": {"family": "ip", "name": "deny_r", "table": "netman_asg", "type": "ipv4_addr", "handle": 4, "flags": ["interval"]}},
        {"chain": {"family": "ip", "table": "netman_asg", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": -5, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "netman_asg", "name": "rs_1", "handle": 2}},
        {"rule": {"family": "ip", "table": "netman_asg", "chain": "forward", "handle": 5, "expr": []}},
        {"rule": {"family": "ip", "table": "netman_asg", "chain": "forward", "handle": 6, "expr": []}},
        {"rule": {"family": "ip", "table": "netman_asg", "chain": "rs_1", "handle": 7, "expr": []}}]}"#;

    const CONTAINERS_JSON: &str = r#"{"nftables": [{"metainfo": {}}, {"map": {"family": "ip",
        "name": "containers", "table": "netman_asg", "type": "ipv4_addr", "map": "verdict",
        "elem": [["10.255.0.2", {"jump": {"target": "rs_1"}}]]}}]}"#;

    const DENY_JSON: &str = r#"{"nftables": [{"set": {"name": "deny_r", "flags": ["interval"],
        "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}]}}]}"#;

    fn sets(containers: &str, deny: &str) -> BTreeMap<String, Vec<(String, String)>> {
        BTreeMap::from([
            ("containers".into(), parse_elements(containers).unwrap()),
            ("deny_r".into(), parse_elements(deny).unwrap()),
        ])
    }

    #[test]
    fn the_installed_table_shows_no_difference() {
        let table = parse_table(TABLE_JSON).unwrap();
        assert_eq!(table.chains["forward"], 2);
        let d = differences(&want(), &table, &sets(CONTAINERS_JSON, DENY_JSON));
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_flushed_chain_a_lost_set_a_foreign_chain_and_changed_elements_are_named() {
        let flushed = TABLE_JSON.replace(r#""chain": "rs_1""#, r#""chain": "forward""#);
        let d = differences(
            &want(),
            &parse_table(&flushed).unwrap(),
            &sets(CONTAINERS_JSON, DENY_JSON),
        );
        assert_eq!(
            d,
            [
                "chain forward has 3 rules, not 2",
                "chain rs_1 has 0 rules, not 1"
            ]
        );

        let lost = TABLE_JSON.replace(r#""name": "deny_r""#, r#""name": "other""#);
        let d = differences(
            &want(),
            &parse_table(&lost).unwrap(),
            &sets(CONTAINERS_JSON, DENY_JSON),
        );
        assert_eq!(d, ["set deny_r is missing", "set other is not the agent's"]);

        let foreign = TABLE_JSON.replace(r#""rs_1""#, r#""x""#);
        let d = differences(
            &want(),
            &parse_table(&foreign).unwrap(),
            &sets(CONTAINERS_JSON, DENY_JSON),
        );
        assert!(d.contains(&"chain rs_1 is missing".to_string()), "{d:?}");
        assert!(
            d.contains(&"chain x is not the agent's".to_string()),
            "{d:?}"
        );

        let table = parse_table(TABLE_JSON).unwrap();
        let retargeted = CONTAINERS_JSON.replace("jump", "goto");
        let d = differences(&want(), &table, &sets(&retargeted, DENY_JSON));
        assert_eq!(
            d,
            ["containers holds 1 elements that differ from the 1 the agent wrote"]
        );
        let emptied = DENY_JSON.replace(
            r#""elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}]"#,
            r#""x": 1"#,
        );
        let d = differences(&want(), &table, &sets(CONTAINERS_JSON, &emptied));
        assert_eq!(d, ["deny_r holds 0 elements, not 1"]);
    }

    #[test]
    fn answers_of_another_shape_are_errors() {
        for bad in [
            "",
            "[]",
            r#"{"nftables": 1}"#,
            r#"{"nftables": [1]}"#,
            r#"{"nftables": [{"chain": {}}]}"#,
        ] {
            assert!(parse_table(bad).is_err(), "{bad}");
        }
        assert!(parse_elements(r#"{"nftables": [{"set": {"elem": 3}}]}"#).is_err());
        assert!(
            parse_elements(r#"{"nftables": [{"map": {"elem": [["k", {"jump": {}}]]}}]}"#).is_err()
        );
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "nftables", "chain", "rule", "set", "map", "elem", "name", "jump", "target",
                "goto", "accept", "x",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "nftables", "chain", "rule", "set", "map", "elem", "name", "jump",
                        "target", "goto", "accept",
                    ])
                    .prop_map(String::from),
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn hostile_answers_never_panic(v in json(), raw in ".{0,64}") {
            let text = v.to_string();
            let _ = parse_table(&text);
            let _ = parse_elements(&text);
            let _ = parse_table(&raw);
            let _ = parse_elements(&raw);
            if let (Ok(t), Ok(e)) = (parse_table(&text), parse_elements(&text)) {
                let _ = differences(&want(), &t, &BTreeMap::from([("containers".into(), e)]));
            }
        }
    }
}
