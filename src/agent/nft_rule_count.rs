//! How many rules each chain of an nftables table holds, read over nfnetlink: one dump of the
//! table's rule messages, their expressions left unread. libnftables cannot answer this cheaply:
//! before it lists any rule it fetches every element of every set of the table (0.5-0.9 s with
//! 135,000 elements), because printing a rule may name a set.

use crate::os_error::OsError;
use netlink_sys::{constants::NETLINK_NETFILTER, Socket};
use std::collections::BTreeMap;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWRULE: u16 = 6;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NFPROTO_IPV4: u8 = 2;
const HEADER: usize = 16;
const NFGENMSG: usize = 4;

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

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The dump request for the rules of `ip <table>`.
fn request(table: &str, seq: u32) -> Vec<u8> {
    let name_len = table.len() + 1;
    let attr_len = 4 + name_len;
    let len = HEADER + NFGENMSG + align(attr_len);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[NFPROTO_IPV4, 0, 0, 0]);
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&NFTA_RULE_TABLE.to_ne_bytes());
    m.extend_from_slice(table.as_bytes());
    m.push(0);
    m.resize(len, 0);
    m
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
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
    let bad = |m: &str| Error::Malformed(m.to_string());
    let mut at = 0;
    while at + HEADER <= buf.len() {
        let len = u32_at(buf, at).ok_or_else(|| bad("short header"))? as usize;
        let kind = u16_at(buf, at + 4).ok_or_else(|| bad("short header"))?;
        if len < HEADER || at + len > buf.len() {
            return Err(bad("a message longer than its datagram"));
        }
        let msg = &buf[at..at + len];
        match kind {
            NLMSG_DONE => return Ok(Part::Done),
            NLMSG_ERROR => {
                let errno = u32_at(msg, HEADER).ok_or_else(|| bad("short error"))? as i32;
                if errno != 0 {
                    return Err(Error::Kernel(-errno));
                }
            }
            k if k == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE => {
                let (mut t, mut chain) = (None, None);
                let mut a = HEADER + NFGENMSG;
                while a + 4 <= msg.len() {
                    let alen = u16_at(msg, a).unwrap_or(0) as usize;
                    let atype = u16_at(msg, a + 2).unwrap_or(0) & 0x3fff;
                    if alen < 4 || a + alen > msg.len() {
                        return Err(bad("an attribute longer than its message"));
                    }
                    let value = &msg[a + 4..a + alen];
                    let text = || {
                        std::str::from_utf8(value.split(|b| *b == 0).next().unwrap_or_default())
                            .map_err(|_| bad("a name that is not UTF-8"))
                    };
                    match atype {
                        NFTA_RULE_TABLE => t = Some(text()?),
                        NFTA_RULE_CHAIN => chain = Some(text()?),
                        _ => {}
                    }
                    a += align(alen);
                }
                match (t, chain) {
                    (Some(t), Some(c)) if t == table => {
                        *counts.entry(c.to_string()).or_insert(0) += 1
                    }
                    (Some(_), Some(_)) => {}
                    _ => return Err(bad("a rule without its table or chain")),
                }
            }
            _ => {}
        }
        at += align(len);
    }
    Ok(Part::More)
}

/// The rules of each chain of `ip <table>` in the calling thread's network namespace. A chain
/// without rules is absent.
pub fn rules_per_chain(table: &str) -> Result<BTreeMap<String, usize>, Error> {
    let io = |what: &str, e: std::io::Error| Error::Os(OsError::io(what.to_string(), &e));
    let mut socket =
        Socket::new(NETLINK_NETFILTER).map_err(|e| io("opening an nfnetlink socket", e))?;
    socket
        .bind_auto()
        .map_err(|e| io("binding the nfnetlink socket", e))?;
    socket
        .send(&request(table, 1), 0)
        .map_err(|e| io("asking for the rules", e))?;
    let mut counts = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| io("reading the rules", e))?;
        if n == 0 {
            return Err(Error::Malformed("the dump ended without DONE".into()));
        }
        if read_datagram(&buf[..n], table, &mut counts)? == Part::Done {
            return Ok(counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attr(t: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&t.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align(a.len()), 0);
        a
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((HEADER + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m
    }

    fn rule(table: &str, chain: &str) -> Vec<u8> {
        let mut body = vec![NFPROTO_IPV4, 0, 0, 0];
        body.extend(attr(NFTA_RULE_TABLE, format!("{table}\0").as_bytes()));
        body.extend(attr(NFTA_RULE_CHAIN, format!("{chain}\0").as_bytes()));
        body.extend(attr(4 | 0x8000, &[1, 2, 3, 4, 5, 6, 7, 8]));
        message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, &body)
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
        let done = message(NLMSG_DONE, &[0; 4]);
        assert_eq!(
            read_datagram(&done, "netman_asg", &mut counts).unwrap(),
            Part::Done
        );
    }

    #[test]
    fn a_kernel_error_is_returned_with_its_errno() {
        let err = message(NLMSG_ERROR, &(-2i32).to_ne_bytes());
        let e = read_datagram(&err, "t", &mut BTreeMap::new()).unwrap_err();
        assert!(matches!(e, Error::Kernel(2)), "{e:?}");
    }

    #[test]
    fn the_request_names_the_table_and_asks_for_a_dump() {
        let r = request("netman_asg", 7);
        assert_eq!(r.len() % 4, 0);
        assert_eq!(u32_at(&r, 0).unwrap() as usize, r.len());
        assert_eq!(u16_at(&r, 6).unwrap(), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(
            &r[HEADER + NFGENMSG + 4..HEADER + NFGENMSG + 14],
            b"netman_asg"
        );
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
