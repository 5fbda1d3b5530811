//! How many rules each chain of an nftables table holds, read over nfnetlink: one dump of the
//! table's rule messages, their expressions left unread. libnftables cannot answer this cheaply:
//! before it lists any rule it fetches every element of every set of the table (0.5-0.9 s with
//! 135,000 elements), because printing a rule may name a set.

use crate::nfnetlink::{self as nl, Request, Socket};
use crate::os_error::OsError;
use std::collections::BTreeMap;

#[derive(Debug)]
pub enum Error {
    Os(OsError),
    /// The kernel's answer (`errno`, e.g. ENOENT: no such table).
    Kernel(i32),
    /// An answer this reader cannot read.
    Malformed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Os(e) => write!(f, "{e}"),
            Error::Kernel(errno) => write!(
                f,
                "listing the rules: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Error::Malformed(m) => write!(f, "listing the rules: {m}"),
        }
    }
}

impl From<nl::Malformed> for Error {
    fn from(m: nl::Malformed) -> Error {
        Error::Malformed(m.0)
    }
}

/// The dump request for the rules of `ip <table>`.
fn request(table: &str, seq: u32) -> Vec<u8> {
    Request::new(
        nl::nft(nl::NFT_MSG_GETRULE),
        nl::NLM_F_REQUEST | nl::NLM_F_DUMP,
        seq,
        nl::NFPROTO_IPV4,
        0,
    )
    .name(nl::NFTA_RULE_TABLE, table)
    .finish()
}

/// What one datagram of the dump holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    /// More messages follow.
    More,
    Done,
}

/// Adds the rules of one datagram to `counts`, by the chain each names (only rules of `table`).
pub fn read_datagram(
    buf: &[u8],
    table: &str,
    counts: &mut BTreeMap<String, usize>,
) -> Result<Part, Error> {
    let (rules, end) = nl::dump_part(buf, nl::nft(nl::NFT_MSG_NEWRULE))?;
    for m in rules {
        let (mut t, mut chain) = (None, None);
        for a in m.attrs()? {
            let (kind, value) = a?;
            match kind {
                nl::NFTA_RULE_TABLE => t = Some(nl::name(value)?),
                nl::NFTA_RULE_CHAIN => chain = Some(nl::name(value)?),
                _ => {}
            }
        }
        match (t, chain) {
            (Some(t), Some(c)) if t == table => *counts.entry(c.to_string()).or_insert(0) += 1,
            (Some(_), Some(_)) => {}
            _ => return Err(Error::Malformed("a rule without its table or chain".into())),
        }
    }
    match end {
        None => Ok(Part::More),
        Some(Ok(())) => Ok(Part::Done),
        Some(Err(errno)) => Err(Error::Kernel(errno)),
    }
}

/// The rules of each chain of `ip <table>` in the calling thread's network namespace. A chain
/// without rules is absent.
pub fn rules_per_chain(table: &str) -> Result<BTreeMap<String, usize>, Error> {
    let mut socket = Socket::open().map_err(Error::Os)?;
    socket.send(&[request(table, 1)]).map_err(Error::Os)?;
    let mut counts = BTreeMap::new();
    loop {
        let datagram = socket.recv().map_err(Error::Os)?;
        if read_datagram(datagram, table, &mut counts)? == Part::Done {
            return Ok(counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfnetlink::testing::{attr, error, message, nft_message};
    use proptest::prelude::*;

    fn rule(table: &str, chain: &str) -> Vec<u8> {
        nft_message(
            nl::NFT_MSG_NEWRULE,
            1,
            &[
                attr(nl::NFTA_RULE_TABLE, format!("{table}\0").as_bytes()),
                attr(nl::NFTA_RULE_CHAIN, format!("{chain}\0").as_bytes()),
                attr(4 | 0x8000, &[1, 2, 3, 4, 5, 6, 7, 8]),
            ],
        )
    }

    #[test]
    fn rules_are_counted_by_chain_for_the_table_asked() {
        let mut d = rule("netman_asg", "forward");
        d.extend(rule("netman_asg", "forward"));
        d.extend(rule("other", "forward"));
        d.extend(rule("netman_asg", "rs_1"));
        let mut counts = BTreeMap::new();
        assert_eq!(
            read_datagram(&d, "netman_asg", &mut counts).unwrap(),
            Part::More
        );
        assert_eq!(
            counts,
            BTreeMap::from([("forward".into(), 2), ("rs_1".into(), 1)])
        );
        let done = message(nl::NLMSG_DONE, 1, &[0; 4]);
        assert_eq!(
            read_datagram(&done, "netman_asg", &mut counts).unwrap(),
            Part::Done
        );
    }

    #[test]
    fn a_kernel_error_is_returned_with_its_errno() {
        let err = error(2, 1);
        let e = read_datagram(&err, "t", &mut BTreeMap::new()).unwrap_err();
        assert!(matches!(e, Error::Kernel(2)), "{e:?}");
    }

    #[test]
    fn the_request_names_the_table_and_asks_for_a_dump() {
        let r = request("netman_asg", 7);
        let m = nl::messages(&r).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].kind, m[0].seq), (nl::nft(nl::NFT_MSG_GETRULE), 7));
        assert_eq!(
            u16::from_ne_bytes([r[6], r[7]]),
            nl::NLM_F_REQUEST | nl::NLM_F_DUMP
        );
        let table = nl::find(m[0].attrs().unwrap(), nl::NFTA_RULE_TABLE)
            .unwrap()
            .unwrap();
        assert_eq!(nl::name(table).unwrap(), "netman_asg");
    }

    proptest! {
        #[test]
        fn hostile_datagrams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512),
                                         cut in 0usize..200) {
            let _ = read_datagram(&bytes, "netman_asg", &mut BTreeMap::new());
            let mut d = rule("netman_asg", "forward");
            d.extend(rule("netman_asg", "x"));
            d.truncate(cut.min(d.len()));
            let _ = read_datagram(&d, "netman_asg", &mut BTreeMap::new());
        }
    }
}
