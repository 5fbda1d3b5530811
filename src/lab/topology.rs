//! The lab's network: an underlay switch (a bridge in its own namespace), a control-plane host,
//! N cell hosts and an "internet" host, each a namespace with one veth into the switch. Nothing
//! is created in the root namespace.

use super::netns::run;
use std::net::Ipv4Addr;

/// Every namespace the lab creates starts with this prefix, so `down` can find them all.
pub const PREFIX: &str = "netman-lab-";
pub const SWITCH: &str = "netman-lab-switch";
pub const CONTROL: &str = "netman-lab-control";
pub const INTERNET: &str = "netman-lab-internet";

/// Underlay 10.77.0.0/24: control .2, cells .11.., internet .254.
pub const UNDERLAY_PREFIX: u8 = 24;
pub const CONTROL_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const INTERNET_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
/// Addresses that stand for the public internet, on the internet host's loopback
/// (TEST-NET-3, a documentation range: nothing real is ever addressed).
pub const INTERNET_NET: &str = "203.0.113.0/24";
pub const INTERNET_HOSTS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(203, 0, 113, 20),
];

pub fn cell_name(index: usize) -> String {
    format!("{PREFIX}cell-{index}")
}

pub fn cell_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + index as u8)
}

pub fn ns_exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), String> {
    ns_exec(ns, &["sysctl", "-q", "-w", &format!("{key}={value}")]).map(|_| ())
}

fn add_ns(name: &str) -> Result<(), String> {
    run(&["ip", "netns", "add", name])?;
    ns_exec(name, &["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates a host namespace and plugs it into the switch with `ip/24` on `eth0`.
fn add_host(name: &str, ip: Ipv4Addr, port: &str) -> Result<(), String> {
    add_ns(name)?;
    // Both ends are created inside namespaces: the root namespace never holds the link.
    run(&[
        "ip", "-n", SWITCH, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
        name,
    ])?;
    run(&[
        "ip", "-n", SWITCH, "link", "set", port, "master", "br0", "up",
    ])?;
    let cidr = format!("{ip}/{UNDERLAY_PREFIX}");
    ns_exec(name, &["ip", "addr", "add", &cidr, "dev", "eth0"])?;
    ns_exec(name, &["ip", "link", "set", "eth0", "up"])?;
    Ok(())
}

/// Builds the whole underlay for `cells` cells.
pub fn create(cells: usize) -> Result<(), String> {
    if cells == 0 || cells > 200 {
        return Err(format!("--cells must be in 1-200, got {cells}"));
    }
    add_ns(SWITCH)?;
    run(&["ip", "-n", SWITCH, "link", "add", "br0", "type", "bridge"])?;
    run(&["ip", "-n", SWITCH, "link", "set", "br0", "up"])?;
    add_host(CONTROL, CONTROL_IP, "p-control")?;
    add_host(INTERNET, INTERNET_IP, "p-internet")?;
    for host in INTERNET_HOSTS {
        ns_exec(
            INTERNET,
            &["ip", "addr", "add", &format!("{host}/32"), "dev", "lo"],
        )?;
    }
    for i in 1..=cells {
        let name = cell_name(i);
        add_host(&name, cell_ip(i), &format!("p-cell-{i}"))?;
        sysctl(&name, "net.ipv4.ip_forward", "1")?;
        // Every REJECT is answered at once, not rate limited per destination, so a denied probe
        // is refused rather than timed out (the lab's checks probe many denied flows quickly).
        sysctl(&name, "net.ipv4.icmp_ratelimit", "0")?;
        route_to_internet(&name)?;
    }
    route_to_internet(CONTROL)
}

/// The route of a host namespace to the "internet" addresses.
fn route_to_internet(ns: &str) -> Result<(), String> {
    let via = INTERNET_IP.to_string();
    ns_exec(ns, &["ip", "route", "add", INTERNET_NET, "via", &via])?;
    Ok(())
}

/// Every namespace whose name starts with the lab prefix.
pub fn lab_namespaces() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Kills every process inside the lab's namespaces and deletes them.
pub fn destroy() -> Vec<String> {
    let mut problems = Vec::new();
    let namespaces = lab_namespaces();
    for ns in &namespaces {
        let pids = run(&["ip", "netns", "pids", ns]).unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // Containers first, hosts after, the switch last: deleting a namespace removes its links.
    let mut ordered = namespaces.clone();
    ordered.sort_by_key(|n| (n == SWITCH, !n.contains("-c-")));
    for ns in ordered {
        if let Err(e) = run(&["ip", "netns", "del", &ns]) {
            problems.push(e);
        }
    }
    problems
}
