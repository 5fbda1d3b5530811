//! The ASG table as plain nftables objects (chains with their rules, sets and maps with their
//! elements), rendered in this one place: the whole table from scratch, or the difference between
//! two states as one transaction of element changes (plus the few chains and maps that appear or
//! go). A state is a value, so "what is installed" and "what is wanted" compare directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

pub const FAMILY: &str = "ip";
pub const TABLE: &str = "netman_asg";

/// A set's elements, key -> value (`""` for a set), in shards by the key's hash: a version made
/// from another by a few changes shares every other shard with it, so copying it for a change
/// and comparing the two versions skip the shared shards (a large map's edit costs the change,
/// not the map).
#[derive(Debug, Clone, Default)]
pub struct Elements {
    shards: Vec<Arc<BTreeMap<String, String>>>,
}

/// Shards of a sharded map ([`Elements::sharded`]).
const SHARDS: usize = 64;

impl Elements {
    /// Elements for a map that is large and changed a few at a time.
    pub fn sharded() -> Elements {
        Elements {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
        }
    }

    fn shard(&self, key: &str) -> usize {
        match self.shards.len() {
            0 | 1 => 0,
            n => (super::compile::hash64(key) % n as u64) as usize,
        }
    }

    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        if self.shards.is_empty() {
            self.shards.push(Arc::default());
        }
        let i = self.shard(&key);
        Arc::make_mut(&mut self.shards[i]).insert(key, value)
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.shard(key);
        match self.shards.get(i) {
            Some(s) if s.contains_key(key) => Arc::make_mut(&mut self.shards[i]).remove(key),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.shards.get(self.shard(key))?.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    /// In order within a shard (one shard unless [`Elements::sharded`]).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.iter().map(|(k, _)| k)
    }

    /// From `old` to `self`: the keys gone or changed, and the elements new or changed.
    #[allow(clippy::type_complexity)]
    pub fn changes<'a>(
        &'a self,
        old: &'a Elements,
    ) -> (Vec<&'a String>, Vec<(&'a String, &'a String)>) {
        let (mut gone, mut added) = (Vec::new(), Vec::new());
        let mut one = |o: &'a BTreeMap<String, String>, n: &'a BTreeMap<String, String>| {
            gone.extend(
                o.iter()
                    .filter(|(k, v)| n.get(*k) != Some(*v))
                    .map(|(k, _)| k),
            );
            added.extend(n.iter().filter(|(k, v)| o.get(*k) != Some(*v)));
        };
        if self.shards.len() == old.shards.len() {
            for (o, n) in old.shards.iter().zip(&self.shards) {
                if !Arc::ptr_eq(o, n) {
                    one(o, n);
                }
            }
        } else {
            gone.extend(
                old.iter()
                    .filter(|(k, v)| self.get(k) != Some(*v))
                    .map(|(k, _)| k),
            );
            added.extend(self.iter().filter(|(k, v)| old.get(k) != Some(*v)));
        }
        (gone, added)
    }
}

impl PartialEq for Elements {
    fn eq(&self, other: &Elements) -> bool {
        if self.shards.len() == other.shards.len() {
            self.shards
                .iter()
                .zip(&other.shards)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
        } else {
            self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
        }
    }
}

impl Eq for Elements {}

impl std::ops::Index<&str> for Elements {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        self.get(key).unwrap_or_else(|| panic!("no element {key}"))
    }
}

/// A set (no values) or a map: its declaration body and its elements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetObj {
    /// `type ipv4_addr : verdict; flags interval;`
    pub decl: String,
    pub elements: Elements,
}

impl SetObj {
    pub fn new(decl: &str) -> SetObj {
        SetObj {
            decl: decl.into(),
            elements: Elements::default(),
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
    /// Named counters.
    pub counters: BTreeSet<String>,
}

/// Packets and bytes of a counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// Counter values read from the table just before a full rewrite, for the rewrite to start
/// from ([`render_full_carrying`]): named counters by name, and elements of counting sets (set
/// name -> key as nft reads it, rendered from typed values) with their counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    pub counters: BTreeMap<String, Count>,
    pub elements: BTreeMap<String, Vec<(String, Count)>>,
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

fn add_counter(out: &mut String, name: &str, count: Option<&Count>) {
    let _ = write!(out, "add counter {FAMILY} {TABLE} {name}");
    if let Some(c) = count {
        let _ = write!(out, " {{ packets {} bytes {} }}", c.packets, c.bytes);
    }
    out.push('\n');
}

/// The whole table, replacing whatever `ip netman_asg` held, in one transaction. Chains are
/// declared before the maps that jump to them (nft 1.0.6 refuses an element of an interval
/// verdict map naming a chain declared after the map in the same batch).
pub fn render_full(o: &Objects) -> String {
    render_full_carrying(o, &Carried::default())
}

/// [`render_full`], the counters starting from `carried` (read just before: a full rewrite
/// deletes the table, and with it every counter). Carried values of counters or sets the new
/// table does not have are left out.
pub fn render_full_carrying(o: &Objects, carried: &Carried) -> String {
    render_whole(o, carried, None)
}

/// The whole table created dormant (its base chain unhooked, so it filters nothing), without
/// the elements of the sets in `left_out` (which [`super::bulk`] writes, waking the table).
pub fn render_dormant(o: &Objects, left_out: &BTreeSet<String>) -> String {
    render_whole(o, &Carried::default(), Some(left_out))
}

fn render_whole(o: &Objects, carried: &Carried, dormant: Option<&BTreeSet<String>>) -> String {
    let mut out = String::with_capacity(256 + o.element_count() * 40);
    let _ = writeln!(out, "add table {FAMILY} {TABLE}");
    let _ = writeln!(out, "delete table {FAMILY} {TABLE}");
    match dormant {
        Some(_) => {
            let _ = writeln!(out, "add table {FAMILY} {TABLE} {{ flags dormant; }}");
        }
        None => {
            let _ = writeln!(out, "add table {FAMILY} {TABLE}");
        }
    }
    for name in &o.counters {
        add_counter(&mut out, name, carried.counters.get(name));
    }
    for (name, (decl, _)) in &o.chains {
        add_chain(&mut out, name, decl);
    }
    for (name, s) in &o.sets {
        add_set(&mut out, name, s);
    }
    for (name, s) in &o.sets {
        if dormant.is_some_and(|left_out| left_out.contains(name)) {
            continue;
        }
        let items = s.elements.iter().map(|(k, v)| (k, Some(v)));
        elements(&mut out, "add", name, items);
    }
    for (name, items) in &carried.elements {
        if !o
            .sets
            .get(name)
            .is_some_and(|s| s.decl.contains("counter;"))
        {
            continue;
        }
        for chunk in items.chunks(CHUNK) {
            let _ = write!(out, "add element {FAMILY} {TABLE} {name} {{ ");
            for (i, (key, c)) in chunk.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{key} counter packets {} bytes {}", c.packets, c.bytes);
            }
            out.push_str(" }\n");
        }
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

/// A base chain's hook or a set's declaration differs: nftables cannot change those in place,
/// so [`render_diff`] rewrites the table whole (the ASG loop does it itself, carrying the
/// counters over: [`render_full_carrying`]).
pub fn declarations_changed(old: &Objects, new: &Objects) -> bool {
    let base_changed = old
        .chains
        .iter()
        .any(|(n, (d, _))| !d.is_empty() && new.chains.get(n).is_some_and(|(d2, _)| d2 != d));
    base_changed
        || new
            .sets
            .iter()
            .any(|(name, s)| old.sets.get(name).is_some_and(|o| o.decl != s.decl))
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
    if equal_sets && old.chains == new.chains && old.counters == new.counters {
        return None;
    }
    let mut out = String::new();
    for name in new.counters.difference(&old.counters) {
        add_counter(&mut out, name, None);
    }
    if declarations_changed(old, new) {
        return Some(render_full(new));
    }
    for (name, (decl, _)) in &new.chains {
        if !old.chains.contains_key(name) {
            add_chain(&mut out, name, decl);
        }
    }
    for (name, s) in &new.sets {
        if !old.sets.contains_key(name) {
            add_set(&mut out, name, s);
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
        let (gone, _) = s.elements.changes(&o.elements);
        elements(
            &mut out,
            "delete",
            name,
            gone.into_iter().map(|k| (k, None)),
        );
    }
    for (name, s) in &new.sets {
        let o = old.sets.get(name).unwrap_or(&empty);
        if same(o, s) {
            continue;
        }
        let (_, added) = s.elements.changes(&o.elements);
        elements(
            &mut out,
            "add",
            name,
            added.into_iter().map(|(k, v)| (k, Some(v))),
        );
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
    for name in old.counters.difference(&new.counters) {
        let _ = writeln!(out, "delete counter {FAMILY} {TABLE} {name}");
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
