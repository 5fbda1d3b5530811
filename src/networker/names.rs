//! Handles and the per-container chain names derived from them (at most 28 characters). A
//! handle that does not fit is shortened to a prefix plus 8 hex digits of its hash, so two long
//! handles with the same beginning never share a chain.

use super::Error;
use crate::iptables::Chain;

/// Garden handles: 1-128 characters of `[A-Za-z0-9_.-]`, not starting with '.' (they become
/// file names and chain names).
pub fn validate_handle(handle: &str) -> Result<(), Error> {
    if handle.is_empty() || handle.len() > 128 {
        return Err(Error::Input(format!(
            "invalid handle {handle:?}: must be 1-128 characters"
        )));
    }
    if handle.starts_with('.') || handle.starts_with('-') {
        return Err(Error::Input(format!(
            "invalid handle {handle:?}: must not start with '.' or '-'"
        )));
    }
    if !handle
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(Error::Input(format!(
            "invalid handle {handle:?}: only letters, digits, '_', '-' and '.' are allowed"
        )));
    }
    Ok(())
}

fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// The handle shortened to `room` characters (unchanged when it fits).
pub fn short_handle(handle: &str, room: usize) -> String {
    if handle.len() <= room {
        return handle.to_string();
    }
    let keep = room.saturating_sub(9);
    format!("{}-{:08x}", &handle[..keep], fnv1a(handle))
}

fn chain(prefix: &str, handle: &str, suffix: &str) -> Chain {
    let room = crate::iptables::MAX_CHAIN_LEN - prefix.len() - 2 - suffix.len();
    Chain::new(&format!("{prefix}--{}{suffix}", short_handle(handle, room)))
        .expect("validated handle makes a valid chain name")
}

/// The chains of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainNames {
    /// filter: ASG egress (jump from FORWARD for traffic leaving the overlay)
    pub netout: Chain,
    /// filter: accepted-and-logged egress (goto target of logged ASG rules)
    pub netout_log: Chain,
    /// filter: traffic from the container to the cell itself (jump from INPUT)
    pub input: Chain,
    /// filter: c2c default deny (jump from FORWARD)
    pub overlay: Chain,
    /// nat (DNAT) and mangle (ingress mark): NetIn (jump from PREROUTING)
    pub netin: Chain,
    /// nat: masquerade of egress leaving the overlay (jump from POSTROUTING)
    pub masq: Chain,
}

impl ChainNames {
    pub fn for_handle(handle: &str) -> ChainNames {
        ChainNames {
            netout: chain("netout", handle, ""),
            netout_log: chain("netout", handle, "--log"),
            input: chain("input", handle, ""),
            overlay: chain("overlay", handle, ""),
            netin: chain("netin", handle, ""),
            masq: chain("masq", handle, ""),
        }
    }

    pub fn filter(&self) -> Vec<Chain> {
        vec![
            self.netout.clone(),
            self.netout_log.clone(),
            self.input.clone(),
            self.overlay.clone(),
        ]
    }
    pub fn nat(&self) -> Vec<Chain> {
        vec![self.netin.clone(), self.masq.clone()]
    }
    pub fn mangle(&self) -> Vec<Chain> {
        vec![self.netin.clone()]
    }
}

/// Prefixes of every chain the networker owns (for sweeping leftovers).
pub const CHAIN_PREFIXES: [&str; 5] = ["netout--", "input--", "overlay--", "netin--", "masq--"];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_handles_keep_the_reference_names() {
        let n = ChainNames::for_handle("abc");
        assert_eq!(n.netout.as_str(), "netout--abc");
        assert_eq!(n.netout_log.as_str(), "netout--abc--log");
        assert_eq!(n.overlay.as_str(), "overlay--abc");
        assert!(validate_handle("a/b").is_err());
        assert!(validate_handle("..").is_err());
        assert!(validate_handle("").is_err());
    }

    proptest! {
        #[test]
        fn names_fit_and_differ(a in "[a-z0-9-]{1,60}", b in "[a-z0-9-]{1,60}") {
            prop_assume!(!a.starts_with('-') && !b.starts_with('-') && a != b);
            let (na, nb) = (ChainNames::for_handle(&a), ChainNames::for_handle(&b));
            for c in na.filter().iter().chain(na.nat().iter()) {
                prop_assert!(c.as_str().len() <= 28);
            }
            prop_assert_ne!(na.netout, nb.netout);
            prop_assert_ne!(na.netout_log, nb.netout_log);
            prop_assert_ne!(na.overlay, nb.overlay);
        }
    }
}
