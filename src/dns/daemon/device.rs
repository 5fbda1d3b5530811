//! The listen address on a dummy device of the daemon's own (`listen_device`), so that the
//! link-local address containers ask exists on the cell and belongs to nothing else. Made once
//! and left in place across restarts (containers keep asking it); an existing device is reused.

use crate::netlink::{Address, Handle, Scope};
use std::net::Ipv4Addr;

pub fn ensure(name: &str, ip: Ipv4Addr) -> Result<(), String> {
    let mut nl = Handle::new().map_err(|e| format!("netlink: {e}"))?;
    let index = match nl.link_by_name(name).map_err(|e| e.to_string())? {
        Some(link) => link.index,
        None => {
            nl.create_dummy(name).map_err(|e| e.to_string())?;
            nl.link_index(name).map_err(|e| e.to_string())?
        }
    };
    let has = nl
        .addresses(Some(index))
        .map_err(|e| e.to_string())?
        .iter()
        .any(|(_, a)| a.local == ip);
    if !has {
        let addr = Address {
            local: ip,
            prefix_len: 32,
            peer: None,
            scope: Scope::Universe,
        };
        nl.add_address(index, &addr)
            .map_err(|e| format!("adding {ip}/32 to {name}: {e}"))?;
    }
    nl.set_up(index).map_err(|e| e.to_string())
}
