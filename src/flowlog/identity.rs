//! Who is behind an address on this cell, and which policy allows a connection: a snapshot of
//! the agent's containers and fetched policies, replaced whole after every agent cycle.

use super::event::{Endpoint, PortRange, Rule};
use crate::api::policy::Policy;
use crate::cell::marks::TAG_MASK;
use crate::cell::Container;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The space GUID metadata key garden passes (`space_id`).
pub const SPACE_KEY: &str = "space_id";

#[derive(Debug, Default)]
pub struct Identities {
    by_ip: HashMap<Ipv4Addr, Container>,
    by_handle: HashMap<String, Ipv4Addr>,
    app_of_tag: HashMap<u32, String>,
    policies: Vec<Policy>,
}

fn parse_tag(tag: &str) -> Option<u32> {
    crate::api::policy::parse_tag(tag).filter(|t| *t <= TAG_MASK)
}

impl Identities {
    pub fn new(containers: &[Container], policies: &[Policy]) -> Identities {
        let mut app_of_tag = HashMap::new();
        for p in policies {
            if let Some(t) = p.source.tag.as_deref().and_then(parse_tag) {
                app_of_tag.insert(t, p.source.id.clone());
            }
            if let Some(t) = p.destination.tag.as_deref().and_then(parse_tag) {
                app_of_tag.insert(t, p.destination.id.clone());
            }
        }
        Identities {
            by_ip: containers.iter().map(|c| (c.ip, c.clone())).collect(),
            by_handle: containers
                .iter()
                .map(|c| (c.handle.clone(), c.ip))
                .collect(),
            app_of_tag,
            policies: policies.to_vec(),
        }
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The app of the local container at `ip`.
    pub fn app_at(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_ip.get(&ip)?.app()
    }

    /// This cell's containers of `app`, by IP.
    pub fn containers_of<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Container> + 'a {
        let mut list: Vec<&Container> = self
            .by_ip
            .values()
            .filter(|c| c.app() == Some(app))
            .collect();
        list.sort_by_key(|c| c.ip);
        list.into_iter()
    }

    /// The tag of `app` as the fetched policies give it.
    pub fn tag_of(&self, app: &str) -> Option<u32> {
        self.app_of_tag
            .iter()
            .find(|(_, a)| *a == app)
            .map(|(t, _)| *t)
    }

    /// Whether a container of `app` runs on this cell.
    pub fn has_app(&self, app: &str) -> bool {
        self.by_ip.values().any(|c| c.app() == Some(app))
    }

    pub fn by_handle(&self, handle: &str) -> Option<&Container> {
        self.by_ip.get(self.by_handle.get(handle)?)
    }

    /// The endpoint at `ip`: a local container's app, space and handle; else the app of `tag`.
    pub fn endpoint(&self, ip: Ipv4Addr, port: Option<u16>, tag: Option<u32>) -> Endpoint {
        let mut e = Endpoint {
            ip: Some(ip),
            port,
            tag: tag.map(|t| format!("{t:04x}")),
            ..Endpoint::default()
        };
        if let Some(c) = self.by_ip.get(&ip) {
            fill(&mut e, c);
        } else if let Some(app) = tag.and_then(|t| self.app_of_tag.get(&t)) {
            e.app = Some(app.clone());
        }
        e
    }

    /// The first fetched policy that allows `tag`'s app to reach `dst_app` on `protocol`/`port`.
    pub fn allowing_policy(
        &self,
        tag: u32,
        dst_app: &str,
        protocol: &str,
        port: u16,
    ) -> Option<Rule> {
        self.policies.iter().find_map(|p| {
            let src_tag = p.source.tag.as_deref().and_then(parse_tag)?;
            let (start, end) = (p.destination.ports.start, p.destination.ports.end);
            let end = if end == 0 { start } else { end };
            let fits = src_tag == tag
                && p.destination.id == dst_app
                && p.destination.protocol == protocol
                && (start..=end).contains(&i64::from(port));
            fits.then(|| Rule::Policy {
                source: p.source.id.clone(),
                destination: p.destination.id.clone(),
                protocol: p.destination.protocol.clone(),
                ports: PortRange {
                    start: start.clamp(0, 65535) as u16,
                    end: end.clamp(0, 65535) as u16,
                },
            })
        })
    }
}

pub fn fill(e: &mut Endpoint, c: &Container) {
    e.app = c.app().map(str::to_string);
    e.space = c
        .metadata
        .get(SPACE_KEY)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    e.handle = Some(c.handle.clone());
}
