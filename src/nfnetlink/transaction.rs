//! One nf_tables transaction: a batch of changes sent as one datagram, and what the kernel
//! answered to it; and the two lookups writers make before one (the ruleset generation, a
//! table's flags).

use super::{Message, Request, Socket};
use crate::os_error::OsError;
use std::collections::BTreeMap;

/// Sequence numbers of one socket's requests.
#[derive(Debug, Default)]
pub struct Seq(u32);

impl Seq {
    pub fn advance(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

pub fn failed(context: String, errno: i32) -> OsError {
    OsError {
        context,
        errno: Some(errno),
        message: std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

pub fn unreadable(context: &str, m: super::Malformed) -> OsError {
    OsError {
        context: context.to_string(),
        errno: None,
        message: m.to_string(),
    }
}

pub fn get_generation(seq: u32) -> Vec<u8> {
    Request::new(
        super::nft(super::NFT_MSG_GETGEN),
        super::NLM_F_REQUEST,
        seq,
        super::NFPROTO_UNSPEC,
        0,
    )
    .finish()
}

/// The generation id of a NEWGEN answer.
pub fn generation(m: &Message) -> Result<u32, super::Malformed> {
    let id = super::find(m.attrs()?, super::NFTA_GEN_ID)?
        .ok_or_else(|| super::Malformed("a generation without its id".into()))?;
    super::be32(id)
}

/// The flags of table `family name`, `None` when there is no such table.
pub fn table_flags(
    socket: &mut Socket,
    seq: &mut Seq,
    family: u8,
    name: &str,
) -> Result<Option<u32>, OsError> {
    let context = format!("looking up the nftables table {name}");
    let asked = seq.advance();
    let request = Request::new(
        super::nft(super::NFT_MSG_GETTABLE),
        super::NLM_F_REQUEST,
        asked,
        family,
        0,
    )
    .name(super::NFTA_TABLE_NAME, name)
    .finish();
    socket.send(&[request])?;
    loop {
        let datagram = socket.recv()?;
        for m in super::messages(datagram).map_err(|e| unreadable(&context, e))? {
            if m.seq != asked {
                continue;
            }
            match m.error().map_err(|e| unreadable(&context, e))? {
                Some((libc::ENOENT, _)) => return Ok(None),
                Some((0, _)) => {}
                Some((errno, _)) => return Err(failed(context, errno)),
                None if m.kind == super::nft(super::NFT_MSG_NEWTABLE) => {
                    let attrs = m.attrs().map_err(|e| unreadable(&context, e))?;
                    let flags = super::find(attrs, super::NFTA_TABLE_FLAGS)
                        .map_err(|e| unreadable(&context, e))?;
                    return match flags {
                        Some(v) => super::be32(v)
                            .map(Some)
                            .map_err(|e| unreadable(&context, e)),
                        None => Ok(Some(0)),
                    };
                }
                None => {}
            }
        }
    }
}

/// BEGIN, changes, END, as one datagram; what each change does, by its sequence number, names
/// the change the kernel refuses. No change asks for an acknowledgement: the kernel answers
/// errors only (thousands of acknowledgements could overrun the receive buffer).
#[derive(Debug)]
pub struct Batch {
    messages: Vec<Vec<u8>>,
    what: BTreeMap<u32, String>,
    /// BEGIN's and END's sequence numbers: the kernel names BEGIN when it refuses the
    /// transaction as a whole.
    ends: (u32, u32),
}

impl Batch {
    /// `genid`: the ruleset generation the changes were prepared against (the kernel refuses
    /// the batch with ERESTART when the ruleset changed since).
    pub fn begin(seq: &mut Seq, genid: Option<u32>) -> Batch {
        let at = seq.advance();
        let mut begin = Request::new(
            super::NFNL_MSG_BATCH_BEGIN,
            super::NLM_F_REQUEST,
            at,
            super::NFPROTO_UNSPEC,
            super::NFNL_SUBSYS_NFTABLES,
        );
        if let Some(genid) = genid {
            begin = begin.be32(super::NFNL_BATCH_GENID, genid);
        }
        Batch {
            messages: vec![begin.finish()],
            what: BTreeMap::new(),
            ends: (at, at),
        }
    }

    /// A change made with sequence number `seq`.
    pub fn push(&mut self, seq: u32, message: Vec<u8>, what: String) {
        self.messages.push(message);
        self.what.insert(seq, what);
    }

    pub fn end(mut self, seq: &mut Seq) -> Batch {
        let at = seq.advance();
        self.ends.1 = at;
        self.messages.push(
            Request::new(
                super::NFNL_MSG_BATCH_END,
                super::NLM_F_REQUEST,
                at,
                super::NFPROTO_UNSPEC,
                super::NFNL_SUBSYS_NFTABLES,
            )
            .finish(),
        );
        self
    }

    /// Changes, without BEGIN and END.
    pub fn changes(&self) -> usize {
        self.what.len()
    }

    /// Every message, BEGIN and END included.
    pub fn messages(&self) -> &[Vec<u8>] {
        &self.messages
    }

    /// What the change sent with sequence number `seq` does.
    pub fn step(&self, seq: u32) -> Option<&str> {
        self.what.get(&seq).map(String::as_str)
    }

    /// Sends the batch, then a generation request whose answer comes after every answer of
    /// the batch; the first error of the batch is returned. (The kernel answers a refused batch
    /// with an error naming the message it refused, or BEGIN for the transaction as a whole.)
    /// Answers to earlier requests on the socket are passed over.
    pub fn commit(self, socket: &mut Socket, seq: &mut Seq, context: &str) -> Result<(), OsError> {
        socket.send(&self.messages)?;
        let sentinel = seq.advance();
        socket.send(&[get_generation(sentinel)])?;
        let ours = |s: u32| self.what.contains_key(&s) || s == self.ends.0 || s == self.ends.1;
        let mut first_error = None;
        loop {
            // A batch's first error is the better report than a failed read after it.
            let datagram = match socket.recv() {
                Ok(d) => d,
                Err(e) => return Err(first_error.unwrap_or(e)),
            };
            for m in super::messages(datagram).map_err(|e| unreadable(context, e))? {
                match m.error().map_err(|e| unreadable(context, e))? {
                    Some((0, _)) => {}
                    Some((errno, s)) if s == sentinel => {
                        return Err(first_error.unwrap_or_else(|| {
                            failed(format!("{context}: the closing request"), errno)
                        }))
                    }
                    Some((errno, s)) if ours(s) => {
                        let step = self.what.get(&s).cloned();
                        first_error.get_or_insert_with(|| {
                            let step = step.unwrap_or_else(|| "the transaction".into());
                            failed(format!("{context}: {step}"), errno)
                        });
                    }
                    Some(_) => {}
                    None if m.seq == sentinel => {
                        return match first_error {
                            Some(e) => Err(e),
                            None => Ok(()),
                        };
                    }
                    None => {}
                }
            }
        }
    }
}
