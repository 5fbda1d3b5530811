//! The packet mark layout of a cell.
//!
//! ```text
//!  31            24 23            16 15                              0
//! +----------------+----------------+--------------------------------+
//! | high half: ALLOWED_BIT (24), or the ingress mark (0xffff0000)    |
//! |                                 | the source app's tag (GBP)     |
//! +----------------+----------------+--------------------------------+
//! ```
//! VXLAN GBP carries the low 16 bits between cells, so a remote cell can set a tag but never a
//! bit of the high half. The agent marks packets of local policy sources with their app's tag
//! and sets [`ALLOWED_BIT`] on packets a policy allows; the networker's per-container chain
//! accepts on that bit (and on the ingress mark of NetIn traffic) before its default REJECT.

/// The bits VXLAN GBP carries: the source app's tag.
pub const TAG_MASK: u32 = 0x0000_FFFF;

/// Largest tag.
pub const MAX_TAG: u32 = TAG_MASK;

/// The bits a remote cell cannot set.
pub const HIGH_MASK: u32 = !TAG_MASK;

/// "A policy allows this packet": set by the agent, accepted by the networker's chain.
pub const ALLOWED_BIT: u32 = 0x0100_0000;

/// "An application security group allows this new egress connection": set by the agent's ASG
/// table, accepted by the networker's cell guard (bit 25: out of reach of remote cells too).
pub const ASG_ALLOWED_BIT: u32 = 0x0200_0000;

/// The networker's default mark of NetIn traffic (silk's `ingress_tag`). It also has
/// [`ALLOWED_BIT`] set, so "allowed by a policy" is `mark & HIGH_MASK == ALLOWED_BIT`.
pub const DEFAULT_INGRESS_MARK: u32 = 0xFFFF_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_bit_is_out_of_reach_of_remote_cells() {
        assert_eq!(ALLOWED_BIT & TAG_MASK, 0);
        assert_eq!(DEFAULT_INGRESS_MARK & HIGH_MASK, DEFAULT_INGRESS_MARK);
        assert_ne!(DEFAULT_INGRESS_MARK & HIGH_MASK, ALLOWED_BIT);
    }
}
