//! nf_tables over nfnetlink, the few messages netman speaks itself: building requests,
//! reading the kernel's answers (netlink messages and their attributes, hostile bytes included),
//! and a blocking socket. Netlink headers are in host byte order; nf_tables attribute values
//! (handles, verdict codes, generation ids) are big-endian.

pub mod socket;
pub mod transaction;

pub use socket::Socket;
pub use transaction::{Batch, Seq};

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// Attribute of BATCH_BEGIN: the ruleset generation the batch was prepared against.
pub const NFNL_BATCH_GENID: u16 = 1;

pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_GETRULE: u16 = 7;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_GETSETELEM: u16 = 13;
pub const NFT_MSG_NEWGEN: u16 = 15;
pub const NFT_MSG_GETGEN: u16 = 16;

pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_TABLE_FLAGS: u16 = 2;
/// A table whose base chains are not hooked: it filters nothing until woken.
pub const NFT_TABLE_F_DORMANT: u32 = 1;
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_HANDLE: u16 = 3;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_DATA: u16 = 2;
pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_IMMEDIATE_DATA: u16 = 2;
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_DATA_VERDICT: u16 = 2;
pub const NFTA_VERDICT_CODE: u16 = 1;
pub const NFTA_VERDICT_CHAIN: u16 = 2;
pub const NFTA_GEN_ID: u16 = 1;
/// Verdict codes.
pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NFT_CONTINUE: i32 = -1;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
/// DELCHAIN: refuse (EBUSY) instead of deleting what the chain still holds.
pub const NLM_F_NONREC: u16 = 0x100;

pub const NFPROTO_UNSPEC: u8 = 0;
pub const NFPROTO_IPV4: u8 = 2;

const HEADER: usize = 16;
const NFGENMSG: usize = 4;
const NLA_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The type of an nf_tables message.
pub fn nft(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// One request: netlink header, nfgenmsg, attributes. `finish` fills in the length.
#[derive(Debug, Clone)]
pub struct Request {
    bytes: Vec<u8>,
}

impl Request {
    pub fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Request {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&[family, 0]);
        bytes.extend_from_slice(&res_id.to_be_bytes());
        Request { bytes }
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Request {
        self.push(kind, value);
        self
    }

    /// A NUL-terminated name.
    pub fn name(self, kind: u16, value: &str) -> Request {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    pub fn be32(self, kind: u16, value: u32) -> Request {
        self.attr(kind, &value.to_be_bytes())
    }

    pub fn be64(self, kind: u16, value: u64) -> Request {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Appends an attribute in place (for messages built in a loop).
    pub fn push(&mut self, kind: u16, value: &[u8]) {
        self.bytes
            .extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.resize(align(self.bytes.len()), 0);
    }

    /// Opens a nested attribute; [`Request::close_nest`] with the returned mark closes it.
    pub fn open_nest(&mut self, kind: u16) -> usize {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(kind | NLA_NESTED).to_ne_bytes());
        at
    }

    /// Closes the nest opened at `at`. An attribute's length is 16 bits: callers keep a nest
    /// under [`NEST_MAX`].
    pub fn close_nest(&mut self, at: usize) {
        let len = (self.bytes.len() - at) as u16;
        self.bytes[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes
    }
}

/// The most a nested attribute may hold (its length is a 16-bit field).
pub const NEST_MAX: usize = u16::MAX as usize;

/// An answer that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed nfnetlink answer: {}", self.0)
    }
}

fn malformed(m: &str) -> Malformed {
    Malformed(m.to_string())
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// One message of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub seq: u32,
    /// After the netlink header (for nf_tables messages: nfgenmsg, then attributes).
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// NLMSG_ERROR: 0 for an acknowledgement, else the errno (positive); with the sequence
    /// number of the request it answers.
    pub fn error(&self) -> Result<Option<(i32, u32)>, Malformed> {
        if self.kind != NLMSG_ERROR {
            return Ok(None);
        }
        let code = u32_at(self.payload, 0).ok_or_else(|| malformed("a short error"))? as i32;
        let seq = u32_at(self.payload, 4 + 8).ok_or_else(|| malformed("a short error"))?;
        Ok(Some((-code, seq)))
    }

    /// NLMSG_DONE: the end of a dump, with the errno (positive) of a dump the kernel ended
    /// early, else 0.
    pub fn done(&self) -> Result<Option<i32>, Malformed> {
        if self.kind != NLMSG_DONE {
            return Ok(None);
        }
        Ok(Some(
            u32_at(self.payload, 0).map_or(0, |code| -(code as i32)),
        ))
    }

    /// The attributes of an nf_tables message (after nfgenmsg).
    pub fn attrs(&self) -> Result<Attrs<'a>, Malformed> {
        let body = self
            .payload
            .get(NFGENMSG..)
            .ok_or_else(|| malformed("a message without nfgenmsg"))?;
        Ok(Attrs { rest: body })
    }
}

/// The messages of one datagram.
pub fn messages(buf: &[u8]) -> Result<Vec<Message<'_>>, Malformed> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER <= buf.len() {
        let len = u32_at(buf, at).ok_or_else(|| malformed("a short header"))? as usize;
        let kind = u16_at(buf, at + 4).ok_or_else(|| malformed("a short header"))?;
        let seq = u32_at(buf, at + 8).ok_or_else(|| malformed("a short header"))?;
        if len < HEADER || at + len > buf.len() {
            return Err(malformed("a message longer than its datagram"));
        }
        out.push(Message {
            kind,
            seq,
            payload: &buf[at + HEADER..at + len],
        });
        at += align(len);
    }
    Ok(out)
}

/// One datagram of a dump: its messages of `kind`, and how the dump stands after it: `None`
/// while more follows, `Some(Ok)` at its end, `Some(Err(errno))` when the kernel ended it with
/// an error (in an error message or in the end message).
pub type DumpPart<'a> = (Vec<Message<'a>>, Option<Result<(), i32>>);

pub fn dump_part(buf: &[u8], kind: u16) -> Result<DumpPart<'_>, Malformed> {
    dump_part_matching(buf, kind, None)
}

/// [`dump_part`] of the dump asked with sequence number `seq`, on a socket that may still hold
/// answers to earlier requests: every message with another number is passed over.
pub fn dump_part_of(buf: &[u8], kind: u16, seq: u32) -> Result<DumpPart<'_>, Malformed> {
    dump_part_matching(buf, kind, Some(seq))
}

fn dump_part_matching(buf: &[u8], kind: u16, seq: Option<u32>) -> Result<DumpPart<'_>, Malformed> {
    let mut items = Vec::new();
    for m in messages(buf)? {
        if seq.is_some_and(|s| s != m.seq) {
            continue;
        }
        if let Some(errno) = m.done()? {
            return Ok((items, Some(if errno == 0 { Ok(()) } else { Err(errno) })));
        }
        match m.error()? {
            Some((0, _)) => {}
            Some((errno, _)) => return Ok((items, Some(Err(errno)))),
            None if m.kind == kind => items.push(m),
            None => {}
        }
    }
    Ok((items, None))
}

/// Iterates over attributes: (type without flags, value).
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn of(bytes: &'a [u8]) -> Attrs<'a> {
        Attrs { rest: bytes }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = u16_at(self.rest, 0).unwrap_or(0) as usize;
        let kind = u16_at(self.rest, 2).unwrap_or(0) & NLA_TYPE_MASK & !NLA_NESTED;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(malformed("an attribute longer than its message")));
        }
        let value = &self.rest[4..len];
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(Ok((kind, value)))
    }
}

/// A NUL-terminated name attribute.
pub fn name(value: &[u8]) -> Result<&str, Malformed> {
    let bytes = value.split(|b| *b == 0).next().unwrap_or_default();
    std::str::from_utf8(bytes).map_err(|_| malformed("a name that is not UTF-8"))
}

pub fn be32(value: &[u8]) -> Result<u32, Malformed> {
    Ok(u32::from_be_bytes(value.try_into().map_err(|_| {
        malformed("a 32-bit value of another size")
    })?))
}

pub fn be64(value: &[u8]) -> Result<u64, Malformed> {
    Ok(u64::from_be_bytes(value.try_into().map_err(|_| {
        malformed("a 64-bit value of another size")
    })?))
}

/// A verdict (the value of an NFTA_DATA_VERDICT attribute): its code and the chain it names,
/// `None` without a code.
pub fn verdict(value: &[u8]) -> Result<Option<(i32, Option<&str>)>, Malformed> {
    let Some(code) = find(Attrs::of(value), NFTA_VERDICT_CODE)? else {
        return Ok(None);
    };
    let chain = find(Attrs::of(value), NFTA_VERDICT_CHAIN)?
        .map(name)
        .transpose()?;
    Ok(Some((be32(code)? as i32, chain)))
}

/// The value of the first attribute of type `kind`.
pub fn find<'a>(attrs: Attrs<'a>, kind: u16) -> Result<Option<&'a [u8]>, Malformed> {
    for a in attrs {
        let (k, v) = a?;
        if k == kind {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

#[cfg(test)]
pub mod testing {
    //! Builders of kernel answers, for the readers' tests.
    use super::*;

    pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align(a.len()), 0);
        a
    }

    pub fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | NLA_NESTED, &parts.concat())
    }

    pub fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((HEADER + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align(m.len()), 0);
        m
    }

    /// An nf_tables message of `ip`: nfgenmsg, then the attributes.
    pub fn nft_message(msg: u16, seq: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![NFPROTO_IPV4, 0, 0, 0];
        body.extend(attrs.concat());
        message(nft(msg), seq, &body)
    }

    /// NLMSG_ERROR answering request `seq` with `errno` (0: an acknowledgement).
    pub fn error(errno: i32, seq: u32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        let mut request = vec![0u8; HEADER];
        request[8..12].copy_from_slice(&seq.to_ne_bytes());
        body.extend(request);
        message(NLMSG_ERROR, seq, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_request_is_laid_out_as_the_kernel_reads_it() {
        let r = Request::new(nft(NFT_MSG_DELRULE), NLM_F_REQUEST | NLM_F_ACK, 7, 2, 0)
            .name(NFTA_RULE_TABLE, "nat")
            .be64(NFTA_RULE_HANDLE, 0x0102)
            .finish();
        assert_eq!(u32_at(&r, 0).unwrap() as usize, r.len());
        assert_eq!(r.len() % 4, 0);
        assert_eq!(u16_at(&r, 4).unwrap(), (10 << 8) | 8);
        assert_eq!(u16_at(&r, 6).unwrap(), 5);
        assert_eq!(u32_at(&r, 8).unwrap(), 7);
        assert_eq!(r[16], 2);
        let m = messages(&r).unwrap();
        let attrs: Vec<_> = m[0].attrs().unwrap().map(Result::unwrap).collect();
        assert_eq!(attrs[0], (NFTA_RULE_TABLE, &b"nat\0"[..]));
        assert_eq!(be64(attrs[1].1).unwrap(), 0x0102);
    }

    #[test]
    fn errors_and_acknowledgements_name_the_request() {
        let mut d = error(0, 3);
        d.extend(error(16, 4));
        let m = messages(&d).unwrap();
        assert_eq!(m[0].error().unwrap(), Some((0, 3)));
        assert_eq!(m[1].error().unwrap(), Some((16, 4)));
    }

    #[test]
    fn a_message_longer_than_its_datagram_is_malformed() {
        let mut d = nft_message(NFT_MSG_NEWRULE, 1, &[attr(1, b"filter\0")]);
        d.truncate(d.len() - 4);
        assert!(messages(&d).is_err());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(ms) = messages(&bytes) {
                for m in ms {
                    let _ = m.error();
                    if let Ok(attrs) = m.attrs() {
                        for a in attrs.flatten() {
                            let _ = name(a.1);
                            let _ = be32(a.1);
                            let _ = find(Attrs::of(a.1), 1);
                        }
                    }
                }
            }
        }
    }
}
