//! The overlay network: the lease controller, the per-cell daemon (VXLAN GBP VTEP, routes,
//! neighbours, FDB), and the overlay CNI plugin with its on-disk IPAM.

pub mod client;
pub mod controller;
pub mod daemon;
pub mod defaults;
pub mod info;
pub mod ipam;
pub mod plugin;
pub mod store;

pub use daemon::vtep;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// One cell's lease, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub underlay_ip: String,
    pub overlay_subnet: String,
    pub overlay_hardware_addr: String,
}

/// A lease checked and parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedLease {
    pub underlay_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub mac: [u8; 6],
}

impl Lease {
    pub fn new(underlay_ip: Ipv4Addr, subnet: Ipv4Net) -> Lease {
        Lease {
            underlay_ip: underlay_ip.to_string(),
            overlay_subnet: subnet.to_string(),
            overlay_hardware_addr: crate::netlink::format_mac(&vtep_mac(subnet)),
        }
    }

    /// Checks IP, CIDR (network address, no host bits) and that the MAC is the one derived from
    /// the subnet.
    pub fn parse(&self) -> Result<ParsedLease, String> {
        let underlay_ip: Ipv4Addr = self
            .underlay_ip
            .parse()
            .map_err(|_| format!("invalid underlay_ip {:?}", self.underlay_ip))?;
        let subnet: Ipv4Net = self
            .overlay_subnet
            .parse()
            .map_err(|_| format!("invalid overlay_subnet {:?}", self.overlay_subnet))?;
        if subnet.network() != subnet.addr() {
            return Err(format!(
                "invalid overlay_subnet {:?}: host bits set",
                self.overlay_subnet
            ));
        }
        let mac = crate::netlink::parse_mac(&self.overlay_hardware_addr)?;
        if mac != vtep_mac(subnet) {
            return Err(format!(
                "overlay_hardware_addr {} does not match subnet {}",
                self.overlay_hardware_addr, subnet
            ));
        }
        Ok(ParsedLease {
            underlay_ip,
            subnet,
            mac,
        })
    }
}

/// The VTEP MAC of a lease: `ee:ee:` + the four bytes of the subnet's first IP.
pub fn vtep_mac(subnet: Ipv4Net) -> [u8; 6] {
    let o = subnet.network().octets();
    [0xee, 0xee, o[0], o[1], o[2], o[3]]
}

/// The overlay network of the controller and the daemons unless configured.
pub const DEFAULT_NETWORK: &str = "10.255.0.0/16";

/// Parses a network CIDR that must be IPv4 and have no host bits; errors name the config key.
pub fn parse_network(key: &str, text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = text
        .parse()
        .map_err(|_| format!("invalid '{key}': {text:?} is not an IPv4 CIDR"))?;
    if net.network() != net.addr() {
        return Err(format!("invalid '{key}': {text:?} has host bits set"));
    }
    Ok(net)
}

/// Unix seconds now.
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_mac_scheme_and_checks() {
        let l = Lease::new(
            "10.0.16.17".parse().unwrap(),
            "10.255.34.0/24".parse().unwrap(),
        );
        assert_eq!(l.overlay_hardware_addr, "ee:ee:0a:ff:22:00");
        assert!(l.parse().is_ok());
        let mut bad = l.clone();
        bad.overlay_hardware_addr = "ee:ee:0a:ff:23:00".into();
        assert!(bad.parse().is_err());
        let mut bad = l.clone();
        bad.overlay_subnet = "10.255.34.1/24".into();
        assert!(bad.parse().is_err());
        let mut bad = l;
        bad.underlay_ip = "::1".into();
        assert!(bad.parse().is_err());
    }
}
