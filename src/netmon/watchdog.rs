//! The overlay watchdog (the original's flannel-watchdog for netman's overlay): the VTEP's IPv4
//! address must be the first address of the cell's lease. A missing VTEP is tolerated (not set up
//! yet); a VTEP without an address, or with another one, means the cell is out of sync and must be
//! recreated.

use crate::daemon::Worker;
use crate::overlay::info::InfoError;
use std::net::Ipv4Addr;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The VTEP carries the lease's address.
    InSync,
    /// No VTEP yet, or no lease known yet: nothing to compare.
    NotYet(String),
    /// The cell must be recreated.
    OutOfSync(String),
}

/// Compares the lease (`overlay_subnet` as the overlay daemon reports it) with the addresses
/// found on the VTEP (`None` when the device does not exist).
pub fn judge(lease_subnet: Option<&str>, vtep_addresses: Option<&[Ipv4Addr]>) -> Verdict {
    let Some(addresses) = vtep_addresses else {
        return Verdict::NotYet("overlay device does not exist yet".into());
    };
    let Some(subnet) = lease_subnet else {
        return Verdict::NotYet("overlay daemon did not report a lease".into());
    };
    let lease: ipnet::Ipv4Net = match subnet.parse() {
        Ok(n) => n,
        Err(_) => return Verdict::OutOfSync(format!("lease {subnet:?} is not an IPv4 subnet")),
    };
    if addresses.is_empty() {
        return Verdict::OutOfSync(format!(
            "overlay device has no IPv4 address but the lease is {lease}"
        ));
    }
    if addresses.contains(&lease.network()) {
        Verdict::InSync
    } else {
        Verdict::OutOfSync(format!(
            "overlay device has {addresses:?} but the lease is {lease}"
        ))
    }
}

/// IPv4 addresses of `device` in this process's network namespace; `None` if it does not exist.
pub fn device_ipv4_addresses(device: &str) -> Result<Option<Vec<Ipv4Addr>>, String> {
    let mut exists = false;
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs: {e}"))? {
        if ifa.interface_name != device {
            continue;
        }
        exists = true;
        if let Some(addr) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            out.push(addr.ip());
        }
    }
    Ok(exists.then_some(out))
}

/// Asks the overlay daemon (`GET <url>` → `{"overlay_subnet": ..., "mtu": ...}`) for the lease.
pub fn lease_from_daemon(agent: &ureq::Agent, url: &str) -> Result<String, InfoError> {
    Ok(crate::overlay::info::fetch(agent, url)?.overlay_subnet)
}

pub const OUT_OF_SYNC_MESSAGE: &str =
    "This cell must be recreated. The overlay is out of sync with the local VTEP";

/// What the watchdog compares and how often.
#[derive(Debug, Clone)]
pub struct Settings {
    pub vtep_name: String,
    pub overlay_daemon_url: String,
    pub interval: Duration,
}

/// One comparison. `Err`: out of sync (the cell must be recreated) or the device could not be
/// read; an unreachable overlay daemon is logged and counts as nothing to compare yet.
pub fn check(agent: &ureq::Agent, settings: &Settings) -> Result<(), String> {
    let addresses = device_ipv4_addresses(&settings.vtep_name)?;
    let lease = match lease_from_daemon(agent, &settings.overlay_daemon_url) {
        Ok(l) => Some(l),
        Err(e) => {
            log::warn!("{e}");
            None
        }
    };
    match judge(lease.as_deref(), addresses.as_deref()) {
        Verdict::InSync => log::debug!("overlay in sync"),
        Verdict::NotYet(why) => log::debug!("nothing to compare yet: {why}"),
        Verdict::OutOfSync(why) => return Err(format!("{OUT_OF_SYNC_MESSAGE}: {why}")),
    }
    Ok(())
}

/// The HTTP client of the overlay daemon's local endpoint.
pub fn client() -> Result<ureq::Agent, String> {
    crate::http::client::agent(&Default::default(), Duration::from_secs(2))
}

/// A watchdog checking every interval on its own thread; the first failed check is fatal.
pub struct RunningWatchdog {
    settings: Settings,
    checker: Worker,
    fatal: Option<Receiver<String>>,
}

pub fn start(settings: Settings) -> Result<RunningWatchdog, String> {
    let agent = client()?;
    let (fatal_tx, fatal) = mpsc::channel();
    let checking = settings.clone();
    let checker = Worker::every(settings.interval, move || match check(&agent, &checking) {
        Ok(()) => true,
        Err(e) => {
            let _ = fatal_tx.send(e);
            false
        }
    });
    Ok(RunningWatchdog {
        settings,
        checker,
        fatal: Some(fatal),
    })
}

impl crate::daemon::Running for RunningWatchdog {
    fn describe(&self) -> String {
        format!(
            "checking {} against {} every {:?}",
            self.settings.vtep_name, self.settings.overlay_daemon_url, self.settings.interval
        )
    }

    fn stop(self) {
        self.checker.stop();
    }

    fn fatal(&mut self) -> Option<Receiver<String>> {
        self.fatal.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let a = |s: &str| vec![s.parse::<Ipv4Addr>().unwrap()];
        assert_eq!(
            judge(Some("10.255.34.0/24"), Some(&a("10.255.34.0"))),
            Verdict::InSync
        );
        assert!(matches!(
            judge(Some("10.255.34.0/24"), None),
            Verdict::NotYet(_)
        ));
        assert!(matches!(
            judge(None, Some(&a("10.255.34.0"))),
            Verdict::NotYet(_)
        ));
        assert!(matches!(
            judge(Some("10.255.34.0/24"), Some(&[])),
            Verdict::OutOfSync(_)
        ));
        assert!(matches!(
            judge(Some("10.255.34.0/24"), Some(&a("10.255.35.0"))),
            Verdict::OutOfSync(_)
        ));
    }
}
