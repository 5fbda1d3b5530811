//! The ASG table as plain nftables objects (chains with their rules, sets and maps with their
//! elements), rendered in this one place: the whole table from scratch, or the difference between
//! two states as one transaction of element changes (plus the few chains and maps that appear or
//! go). A state is a value, so "what is installed" and "what is wanted" compare directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

pub const FAMILY: &str = "ip";
pub const TABLE: &str = "netman_asg";

/// A set (no values) or a map: its declaration body and its elements, key -> value (`""` for a
/// set).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetObj {
    /// `type ipv4_addr : verdict; flags interval;`
    pub decl: String,
    pub elements: BTreeMap<String, String>,
}

impl SetObj {
    pub fn new(decl: &str) -> SetObj {
        SetObj {
            decl: decl.into(),
            elements: BTreeMap::new(),
        }
    }

    fn is_map(&self) -> bool {
        self.decl.contains(':')
    }
}

/// Every object of the table. The base chain is a chain like the others; its declaration carries
/// the hook.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Objects {
    /// name -> (declaration suffix, e.g. `{ type filter hook forward priority -5; policy accept; }`
    /// or empty, rules in order).
    pub chains: BTreeMap<String, (String, Vec<String>)>,
    /// Shared with the compilation cache: an unchanged layer's sets are the same allocation,
    /// so comparing them is a pointer comparison.
    pub sets: BTreeMap<String, Arc<SetObj>>,
}

impl Objects {
    pub fn chain(&mut self, name: &str, rules: Vec<String>) {
        self.chains.insert(name.into(), (String::new(), rules));
    }

    pub fn set(&mut self, name: &str, set: SetObj) {
        self.sets.insert(name.into(), Arc::new(set));
    }

    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum()
    }
}

const CHUNK: usize = 2000;

fn elements<'a>(
    out: &mut String,
    verb: &str,
    set: &str,
    items: impl Iterator<Item = (&'a String, Option<&'a String>)>,
) {
    let items: Vec<_> = items.collect();
    for chunk in items.chunks(CHUNK) {
        let _ = write!(out, "{verb} element {FAMILY} {TABLE} {set} {{ ");
        for (i, (k, v)) in chunk.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match v {
                Some(v) if !v.is_empty() => {
                    let _ = write!(out, "{k} : {v}");
                }
                _ => out.push_str(k),
            }
        }
        out.push_str(" }\n");
    }
}

fn add_chain(out: &mut String, name: &str, decl: &str) {
    let _ = write!(out, "add chain {FAMILY} {TABLE} {name}");
    if !decl.is_empty() {
        let _ = write!(out, " {decl}");
    }
    out.push('\n');
}

fn add_rules(out: &mut String, name: &str, rules: &[String]) {
    for r in rules {
        let _ = writeln!(out, "add rule {FAMILY} {TABLE} {name} {r}");
    }
}

fn add_set(out: &mut String, name: &str, s: &SetObj) {
    let kind = if s.is_map() { "map" } else { "set" };
    let _ = writeln!(out, "add {kind} {FAMILY} {TABLE} {name} {{ {} }}", s.decl);
}

/// The whole table, replacing whatever `ip netman_asg` held, in one transaction. Chains are
/// declared before the maps that jump to them (nft 1.0.6 refuses an element of an interval
/// verdict map naming a chain declared after the map in the same batch).
pub fn render_full(o: &Objects) -> String {
    let mut out = String::with_capacity(256 + o.element_count() * 40);
    let _ = writeln!(out, "add table {FAMILY} {TABLE}");
    let _ = writeln!(out, "delete table {FAMILY} {TABLE}");
    let _ = writeln!(out, "add table {FAMILY} {TABLE}");
    for (name, (decl, _)) in &o.chains {
        add_chain(&mut out, name, decl);
    }
    for (name, s) in &o.sets {
        add_set(&mut out, name, s);
    }
    for (name, s) in &o.sets {
        let items = s.elements.iter().map(|(k, v)| (k, Some(v)));
        elements(&mut out, "add", name, items);
    }
    for (name, (_, rules)) in &o.chains {
        add_rules(&mut out, name, rules);
    }
    out
}

/// Removes the table (syncing turned off: egress goes back to the networker's own chains).
pub fn render_delete() -> String {
    format!("add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
}

/// The transaction from `old` to `new`; `None` when they are equal. Order: new chains, new sets,
/// element removals, element additions, rewritten rules of changed chains, then what is gone
/// (chains flushed first so no rule names a set being deleted; chains deleted last, once no
/// element or rule jumps to them).
pub fn render_diff(old: &Objects, new: &Objects) -> Option<String> {
    let equal_sets = old.sets.len() == new.sets.len()
        && old
            .sets
            .iter()
            .zip(&new.sets)
            .all(|((n1, a), (n2, b))| n1 == n2 && (Arc::ptr_eq(a, b) || a == b));
    if equal_sets && old.chains == new.chains {
        return None;
    }
    let mut out = String::new();
    let base_changed = old
        .chains
        .iter()
        .any(|(n, (d, _))| !d.is_empty() && new.chains.get(n).is_some_and(|(d2, _)| d2 != d));
    if base_changed {
        return Some(render_full(new));
    }
    for (name, (decl, _)) in &new.chains {
        if !old.chains.contains_key(name) {
            add_chain(&mut out, name, decl);
        }
    }
    for (name, s) in &new.sets {
        match old.sets.get(name) {
            None => add_set(&mut out, name, s),
            Some(o) if o.decl != s.decl => return Some(render_full(new)),
            Some(_) => {}
        }
    }
    let empty = Arc::new(SetObj::default());
    let same = |a: &Arc<SetObj>, b: &Arc<SetObj>| Arc::ptr_eq(a, b) || a == b;
    for (name, s) in &new.sets {
        let Some(o) = old.sets.get(name) else {
            continue;
        };
        if same(o, s) {
            continue;
        }
        let gone = o
            .elements
            .iter()
            .filter(|(k, v)| s.elements.get(*k) != Some(*v))
            .map(|(k, _)| (k, None));
        elements(&mut out, "delete", name, gone);
    }
    for (name, s) in &new.sets {
        let o = old.sets.get(name).unwrap_or(&empty);
        if same(o, s) {
            continue;
        }
        let added = s
            .elements
            .iter()
            .filter(|(k, v)| o.elements.get(*k) != Some(*v))
            .map(|(k, v)| (k, Some(v)));
        elements(&mut out, "add", name, added);
    }
    for (name, (_, rules)) in &new.chains {
        match old.chains.get(name) {
            None => add_rules(&mut out, name, rules),
            Some((_, old_rules)) if old_rules != rules => {
                let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {name}");
                add_rules(&mut out, name, rules);
            }
            Some(_) => {}
        }
    }
    let gone_chains: BTreeSet<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &gone_chains {
        let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {name}");
    }
    for (name, s) in &old.sets {
        if !new.sets.contains_key(name) {
            let kind = if s.is_map() { "map" } else { "set" };
            let _ = writeln!(out, "delete {kind} {FAMILY} {TABLE} {name}");
        }
    }
    for name in gone_chains {
        let _ = writeln!(out, "delete chain {FAMILY} {TABLE} {name}");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Objects {
        let mut o = Objects::default();
        o.chains.insert(
            "forward".into(),
            (
                "{ type filter hook forward priority -5; policy accept; }".into(),
                vec!["ip saddr vmap @containers".into()],
            ),
        );
        o.chain("ok", vec!["accept".into()]);
        let mut m = SetObj::new("type ipv4_addr : verdict;");
        m.elements.insert("10.255.0.2".into(), "jump ok".into());
        o.set("containers", m);
        o
    }

    #[test]
    fn full_declares_chains_before_maps_and_rules_last() {
        let s = render_full(&sample());
        assert_eq!(
            s,
            "add table ip netman_asg\ndelete table ip netman_asg\nadd table ip netman_asg\n\
             add chain ip netman_asg forward { type filter hook forward priority -5; policy accept; }\n\
             add chain ip netman_asg ok\n\
             add map ip netman_asg containers { type ipv4_addr : verdict; }\n\
             add element ip netman_asg containers { 10.255.0.2 : jump ok }\n\
             add rule ip netman_asg forward ip saddr vmap @containers\n\
             add rule ip netman_asg ok accept\n"
        );
    }

    #[test]
    fn diff_changes_only_elements_and_orders_new_and_gone_objects() {
        let old = sample();
        assert_eq!(render_diff(&old, &old), None);
        let mut new = old.clone();
        new.chain("set1", vec!["ip daddr @deny reject".into()]);
        new.set("deny", SetObj::new("type ipv4_addr; flags interval;"));
        let c = Arc::make_mut(new.sets.get_mut("containers").unwrap());
        c.elements.insert("10.255.0.2".into(), "jump set1".into());
        c.elements.insert("10.255.0.3".into(), "jump ok".into());
        assert_eq!(
            render_diff(&old, &new).unwrap(),
            "add chain ip netman_asg set1\n\
             add set ip netman_asg deny { type ipv4_addr; flags interval; }\n\
             delete element ip netman_asg containers { 10.255.0.2 }\n\
             add element ip netman_asg containers { 10.255.0.2 : jump set1, 10.255.0.3 : jump ok }\n\
             add rule ip netman_asg set1 ip daddr @deny reject\n"
        );
        assert_eq!(
            render_diff(&new, &old).unwrap(),
            "delete element ip netman_asg containers { 10.255.0.2, 10.255.0.3 }\n\
             add element ip netman_asg containers { 10.255.0.2 : jump ok }\n\
             flush chain ip netman_asg set1\n\
             delete set ip netman_asg deny\n\
             delete chain ip netman_asg set1\n"
        );
    }
}
