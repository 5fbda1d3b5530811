//! The internal routes a cell's resolver answers: the internal domains and, per name, the running
//! instances. [`InternalRoutes`] is the serialised shape (registry answers, snapshots); [`Table`]
//! is its validated, indexed form; [`SharedTable`] swaps tables atomically under running queries.

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const DEFAULT_DOMAIN: &str = "apps.internal";

/// Everything the resolver answers from, as the registry sends it and the snapshot stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalRoutes {
    /// Internal domains, e.g. `apps.internal`: every name under them is answered here, never
    /// forwarded.
    pub domains: Vec<String>,
    pub routes: Vec<InternalRoute>,
}

/// One name, e.g. `backend.apps.internal`, and the instances it resolves to (none: the route is
/// mapped but no instance runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalRoute {
    pub name: String,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub app_guid: String,
    pub index: u32,
    pub ip: Ipv4Addr,
}

impl Default for InternalRoutes {
    /// The default domain and no routes: what a resolver serves before its first table.
    fn default() -> Self {
        InternalRoutes {
            domains: vec![DEFAULT_DOMAIN.to_string()],
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(pub String);

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TableError {}

/// One instance as the resolver keeps it; entries of a name are sorted by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub app_guid: Arc<str>,
}

/// What a name is, for the resolver.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not under any internal domain: forward it.
    External,
    /// Under an internal domain, and no such name: NXDOMAIN.
    NoSuchName,
    /// The name exists; these are its addresses (possibly none: answered NOERROR, empty).
    Found(&'a [Entry]),
    /// Under an internal domain, but no table has arrived yet (first start, or a damaged
    /// snapshot): SERVFAIL, which clients retry, rather than an NXDOMAIN they would believe.
    NotReady,
}

/// Validated, indexed internal routes. Names are lowercase, without the trailing dot.
#[derive(Debug)]
pub struct Table {
    /// Longest first, so the most specific domain matches.
    domains: Vec<Box<str>>,
    names: HashMap<Box<str>, Vec<Entry>>,
    instances: usize,
    /// False until the routes are known (see [`Lookup::NotReady`]).
    ready: bool,
}

impl Table {
    pub fn new(routes: &InternalRoutes) -> Result<Table, TableError> {
        let domains = checked_domains(&routes.domains)?;

        let mut apps: HashSet<Arc<str>> = HashSet::new();
        let mut names = HashMap::with_capacity(routes.routes.len());
        let mut instances = 0;
        for route in &routes.routes {
            let name = normalize_name(&route.name)
                .map_err(|e| TableError(format!("route {:?}: {e}", route.name)))?;
            if domain_of(&domains, &name).is_none_or(|d| d.len() == name.len()) {
                return Err(TableError(format!(
                    "route {name:?} is not a name under an internal domain ({})",
                    domains.join(", ")
                )));
            }
            let mut entries = Vec::with_capacity(route.instances.len());
            for i in &route.instances {
                if i.app_guid.is_empty() || i.app_guid.len() > 255 {
                    return Err(TableError(format!(
                        "route {name:?}: app_guid must be 1 to 255 characters"
                    )));
                }
                let app = match apps.get(i.app_guid.as_str()) {
                    Some(a) => Arc::clone(a),
                    None => {
                        let a: Arc<str> = Arc::from(i.app_guid.as_str());
                        apps.insert(Arc::clone(&a));
                        a
                    }
                };
                entries.push(Entry {
                    index: i.index,
                    ip: i.ip,
                    app_guid: app,
                });
            }
            entries.sort_by_key(|e| (e.index, e.ip));
            instances += entries.len();
            if names
                .insert(name.clone().into_boxed_str(), entries)
                .is_some()
            {
                return Err(TableError(format!("route {name:?} listed twice")));
            }
        }
        Ok(Table {
            domains,
            names,
            instances,
            ready: true,
        })
    }

    /// A table that knows its internal domains but not yet their routes.
    pub fn not_ready(domains: &[String]) -> Result<Table, TableError> {
        Ok(Table {
            domains: checked_domains(domains)?,
            names: HashMap::new(),
            instances: 0,
            ready: false,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// `name`: lowercase, no trailing dot (see [`normalize_query_name`]).
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let Some(domain) = domain_of(&self.domains, name) else {
            return Lookup::External;
        };
        if !self.ready {
            return Lookup::NotReady;
        }
        if let Some(entries) = self.names.get(name) {
            return Lookup::Found(entries);
        }
        if name.len() == domain.len() {
            // The domain's apex exists (it holds the routes) but has no address.
            return Lookup::Found(&[]);
        }
        // `<index>.<route>`: one instance of a route.
        if let Some((first, rest)) = name.split_once('.') {
            if let (Some(index), Some(entries)) = (parse_index(first), self.names.get(rest)) {
                let start = entries.partition_point(|e| e.index < index);
                let end = entries.partition_point(|e| e.index <= index);
                if start < end {
                    return Lookup::Found(&entries[start..end]);
                }
            }
        }
        Lookup::NoSuchName
    }

    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().map(|d| &**d)
    }

    pub fn route_count(&self) -> usize {
        self.names.len()
    }

    pub fn instance_count(&self) -> usize {
        self.instances
    }

    /// The table back in its serialised shape, names sorted (for snapshots and debug dumps).
    pub fn to_routes(&self) -> InternalRoutes {
        let mut domains: Vec<String> = self.domains.iter().map(|d| d.to_string()).collect();
        domains.sort();
        let mut routes: Vec<InternalRoute> = self
            .names
            .iter()
            .map(|(name, entries)| InternalRoute {
                name: name.to_string(),
                instances: entries
                    .iter()
                    .map(|e| Instance {
                        app_guid: e.app_guid.to_string(),
                        index: e.index,
                        ip: e.ip,
                    })
                    .collect(),
            })
            .collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        InternalRoutes { domains, routes }
    }
}

/// Valid, distinct domains, longest first.
fn checked_domains(domains: &[String]) -> Result<Vec<Box<str>>, TableError> {
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for d in domains {
        let d = normalize_name(d).map_err(|e| TableError(format!("domain {d:?}: {e}")))?;
        if out.contains(&d) {
            return Err(TableError(format!("domain {d:?} listed twice")));
        }
        out.push(d);
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.len()));
    Ok(out.into_iter().map(String::into_boxed_str).collect())
}

fn domain_of<'d>(domains: &'d [Box<str>], name: &str) -> Option<&'d str> {
    domains.iter().map(|d| &**d).find(|d| {
        name == *d
            || (name.len() > d.len()
                && name.ends_with(d)
                && name.as_bytes()[name.len() - d.len() - 1] == b'.')
    })
}

/// An instance index label: decimal, no leading zeros.
fn parse_index(label: &str) -> Option<u32> {
    if label.is_empty() || (label.len() > 1 && label.starts_with('0')) {
        return None;
    }
    if !label.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    label.parse().ok()
}

/// Checks a host or domain name (RFC 1123 labels: letters, digits, inner hyphens, 1 to 63
/// characters; at most 253 in all) and returns it lowercase, without a trailing dot.
pub fn normalize_name(name: &str) -> Result<String, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err("empty name".into());
    }
    if trimmed.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label {label:?} must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label {label:?} may hold only letters, digits and hyphens"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label {label:?} must not start or end with a hyphen"
            ));
        }
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// The table in force, replaced as a whole while queries run: readers load it without locking
/// and keep the one they loaded until they finish.
pub struct SharedTable {
    current: ArcSwap<Table>,
}

impl SharedTable {
    pub fn new(table: Table) -> SharedTable {
        SharedTable {
            current: ArcSwap::from_pointee(table),
        }
    }

    pub fn load(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Validates `routes` and puts them in force; on error the table in force stays.
    pub fn replace(&self, routes: &InternalRoutes) -> Result<Arc<Table>, TableError> {
        let table = Arc::new(Table::new(routes)?);
        self.current.store(Arc::clone(&table));
        Ok(table)
    }

    /// Replaces only the internal domains (routes no longer under one are refused, and the table
    /// in force stays).
    pub fn replace_domains(&self, domains: &[String]) -> Result<Arc<Table>, TableError> {
        let current = self.load();
        let table = if current.is_ready() {
            let mut routes = current.to_routes();
            routes.domains = domains.to_vec();
            Table::new(&routes)?
        } else {
            Table::not_ready(domains)?
        };
        let table = Arc::new(table);
        self.current.store(Arc::clone(&table));
        Ok(table)
    }
}

impl Default for SharedTable {
    /// The default domain, routes not yet known.
    fn default() -> Self {
        SharedTable::new(
            Table::not_ready(&[DEFAULT_DOMAIN.to_string()]).expect("default domain is valid"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> InternalRoutes {
        let inst = |app: &str, index, ip: [u8; 4]| Instance {
            app_guid: app.into(),
            index,
            ip: Ipv4Addr::from(ip),
        };
        InternalRoutes {
            domains: vec!["apps.internal".into(), "svc.apps.internal".into()],
            routes: vec![
                InternalRoute {
                    name: "Backend.Apps.Internal.".into(),
                    instances: vec![
                        inst("b", 1, [10, 0, 0, 2]),
                        inst("b", 0, [10, 0, 0, 1]),
                        inst("b", 10, [10, 0, 0, 3]),
                    ],
                },
                InternalRoute {
                    name: "idle.apps.internal".into(),
                    instances: vec![],
                },
                InternalRoute {
                    name: "db.svc.apps.internal".into(),
                    instances: vec![inst("d", 0, [10, 0, 1, 1])],
                },
            ],
        }
    }

    fn ips(l: Lookup<'_>) -> Vec<Ipv4Addr> {
        match l {
            Lookup::Found(e) => e.iter().map(|e| e.ip).collect(),
            other => panic!("expected addresses, got {other:?}"),
        }
    }

    #[test]
    fn lookups_cover_names_indexes_apexes_and_outside_names() {
        let t = Table::new(&routes()).unwrap();
        assert_eq!(ips(t.lookup("backend.apps.internal")).len(), 3);
        assert_eq!(
            ips(t.lookup("0.backend.apps.internal")),
            [Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert_eq!(
            ips(t.lookup("10.backend.apps.internal")),
            [Ipv4Addr::new(10, 0, 0, 3)]
        );
        assert_eq!(t.lookup("2.backend.apps.internal"), Lookup::NoSuchName);
        assert_eq!(t.lookup("01.backend.apps.internal"), Lookup::NoSuchName);
        assert_eq!(t.lookup("x.backend.apps.internal"), Lookup::NoSuchName);
        assert_eq!(t.lookup("nope.apps.internal"), Lookup::NoSuchName);
        assert!(ips(t.lookup("idle.apps.internal")).is_empty());
        assert!(ips(t.lookup("apps.internal")).is_empty());
        assert_eq!(ips(t.lookup("db.svc.apps.internal")).len(), 1);
        assert_eq!(t.lookup("internal"), Lookup::External);
        assert_eq!(t.lookup("example.com"), Lookup::External);
        assert_eq!(t.lookup("xapps.internal"), Lookup::External);
        assert_eq!((t.route_count(), t.instance_count()), (3, 4));
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        let mut r = routes();
        r.routes[0].name = "backend.example.com".into();
        assert!(Table::new(&r).unwrap_err().0.contains("not a name under"));
        let mut r = routes();
        r.routes[1].name = "Backend.apps.internal".into();
        assert!(Table::new(&r).unwrap_err().0.contains("listed twice"));
        let mut r = routes();
        r.routes[1].name = "bad_name.apps.internal".into();
        assert!(Table::new(&r).unwrap_err().0.contains("letters, digits"));
        let mut r = routes();
        r.routes[1].name = "apps.internal".into();
        assert!(Table::new(&r).is_err());
        let mut r = routes();
        r.domains.push("-x.internal".into());
        assert!(Table::new(&r).unwrap_err().0.contains("hyphen"));
        let mut r = routes();
        r.routes[0].instances[0].app_guid.clear();
        assert!(Table::new(&r).is_err());
    }

    #[test]
    fn to_routes_round_trips() {
        let t = Table::new(&routes()).unwrap();
        let back = t.to_routes();
        assert_eq!(back.routes[0].name, "backend.apps.internal");
        let again = Table::new(&back).unwrap();
        assert_eq!(again.to_routes(), back);
    }

    #[test]
    fn a_table_not_yet_known_says_so_for_internal_names_only() {
        let shared = SharedTable::default();
        assert_eq!(
            shared.load().lookup("backend.apps.internal"),
            Lookup::NotReady
        );
        assert_eq!(shared.load().lookup("example.com"), Lookup::External);
        shared.replace_domains(&["svc.internal".into()]).unwrap();
        assert_eq!(shared.load().lookup("x.svc.internal"), Lookup::NotReady);
        assert_eq!(shared.load().lookup("x.apps.internal"), Lookup::External);
        shared.replace(&InternalRoutes::default()).unwrap();
        assert_eq!(
            shared.load().lookup("backend.apps.internal"),
            Lookup::NoSuchName
        );
    }

    #[test]
    fn a_refused_replacement_keeps_the_table_in_force() {
        let shared = SharedTable::default();
        shared.replace(&routes()).unwrap();
        assert!(shared.replace_domains(&["other.internal".into()]).is_err());
        assert_eq!(shared.load().route_count(), 3);
        let mut r = routes();
        r.routes.clear();
        r.domains = vec!["other.internal".into()];
        shared.replace(&r).unwrap();
        assert_eq!(shared.load().lookup("x.apps.internal"), Lookup::External);
        assert_eq!(shared.load().lookup("x.other.internal"), Lookup::NoSuchName);
    }
}
