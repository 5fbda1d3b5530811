//! Removal of chains straight over nfnetlink, for the paths that wait on it (a container's
//! `down`): the chains that exist, every rule of their parent chains that jumps or goes to one
//! of them, then their rules and the chains, in one nf_tables transaction across tables. Only
//! deletions by name and handle, so no rule is rendered here (rules are rendered in
//! `render` only).
//!
//! Against `iptables-restore` it saves the process start and, mostly, the wait at its exit
//! ([`Socket::hand_off`]): 20-45 ms of a 25-50 ms removal here. The batch carries the ruleset
//! generation it was read at, so the kernel refuses it (ERESTART) when anything changed in
//! between, and a chain something else still jumps to is refused (EBUSY): the whole batch is then
//! refused, nothing is removed, and the caller falls back to listing with `iptables-save`.

use super::types::{Chain, Table};
use super::Error;
use crate::nfnetlink::transaction::{self, generation, get_generation};
use crate::nfnetlink::{self as nl, Attrs, Batch, Request, Seq, Socket};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The chains of one table to remove, and the chains that may jump to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRemoval {
    pub table: Table,
    pub chains: Vec<Chain>,
    pub parents: Vec<Chain>,
}

/// How long the detached holder keeps the socket: well past one RCU grace period.
const HOLD: Duration = Duration::from_secs(1);

fn failed(context: String, errno: i32) -> Error {
    Error::Netlink(transaction::failed(context, errno))
}

fn unreadable(context: &str, m: nl::Malformed) -> Error {
    Error::Netlink(transaction::unreadable(context, m))
}

/// Removes the chains that exist; returns how many (0: none is in nf_tables, which is also
/// what a host whose `iptables` is the legacy backend looks like, so callers list then).
/// Nothing is changed on an error. The socket is handed off on every path: its close may wait
/// for anyone's commit, not only this one's.
pub fn remove(plan: &[ChainRemoval]) -> Result<usize, Error> {
    let mut socket = Socket::open().map_err(Error::Netlink)?;
    let removed = remove_over(&mut socket, plan);
    socket.hand_off(HOLD);
    removed
}

fn remove_over(socket: &mut Socket, plan: &[ChainRemoval]) -> Result<usize, Error> {
    let mut seq = Seq::default();
    let (genid, existing) = generation_and_existing(socket, &mut seq, plan)?;
    if existing.is_empty() {
        return Ok(0);
    }
    let mut jumps = Vec::new();
    for removal in plan {
        let Some(doomed) = existing.get(&removal.table) else {
            continue;
        };
        for parent in &removal.parents {
            for handle in jumps_into(socket, &mut seq, removal.table, parent, doomed)? {
                jumps.push((removal.table, parent.clone(), handle));
            }
        }
    }
    batch(&mut seq, genid, &jumps, &existing)
        .commit(
            socket,
            &mut seq,
            "removing chains in one nf_tables transaction",
        )
        .map_err(Error::Netlink)?;
    Ok(existing.values().map(BTreeSet::len).sum())
}

/// The ruleset generation, then which of the planned chains exist (one request each, sent
/// together), per table.
fn generation_and_existing(
    socket: &mut Socket,
    seq: &mut Seq,
    plan: &[ChainRemoval],
) -> Result<(u32, BTreeMap<Table, BTreeSet<Chain>>), Error> {
    let gen_seq = seq.advance();
    let mut requests = vec![get_generation(gen_seq)];
    let mut asked: BTreeMap<u32, (Table, Chain)> = BTreeMap::new();
    for removal in plan {
        for chain in &removal.chains {
            let s = seq.advance();
            requests.push(
                Request::new(
                    nl::nft(nl::NFT_MSG_GETCHAIN),
                    nl::NLM_F_REQUEST,
                    s,
                    nl::NFPROTO_IPV4,
                    0,
                )
                .name(nl::NFTA_CHAIN_TABLE, removal.table.name())
                .name(nl::NFTA_CHAIN_NAME, chain.as_str())
                .finish(),
            );
            asked.insert(s, (removal.table, chain.clone()));
        }
    }
    socket.send(&requests).map_err(Error::Netlink)?;
    let mut existing: BTreeMap<Table, BTreeSet<Chain>> =
        plan.iter().map(|r| (r.table, BTreeSet::new())).collect();
    let mut genid = None;
    let mut unanswered = asked.len() + 1;
    let context = "asking nf_tables for the generation and the chains";
    while unanswered > 0 {
        let datagram = socket.recv().map_err(Error::Netlink)?;
        for m in nl::messages(datagram).map_err(|e| unreadable(context, e))? {
            if let Some((errno, s)) = m.error().map_err(|e| unreadable(context, e))? {
                match asked.get(&s) {
                    // No such chain, or no such table.
                    Some(_) if errno == libc::ENOENT => unanswered -= 1,
                    Some((t, c)) => return Err(failed(format!("looking up {t} {c}"), errno)),
                    None if errno == 0 => {}
                    None => return Err(failed(context.to_string(), errno)),
                }
            } else if m.kind == nl::nft(nl::NFT_MSG_NEWGEN) && m.seq == gen_seq {
                genid = Some(generation(&m).map_err(|e| unreadable(context, e))?);
                unanswered -= 1;
            } else if m.kind == nl::nft(nl::NFT_MSG_NEWCHAIN) {
                if let Some((t, c)) = asked.get(&m.seq) {
                    existing.entry(*t).or_default().insert(c.clone());
                    unanswered -= 1;
                }
            }
        }
    }
    existing.retain(|_, chains| !chains.is_empty());
    let genid = genid.ok_or_else(|| unreadable(context, nl::Malformed("no generation".into())))?;
    Ok((genid, existing))
}

/// The handles of the rules of `table parent` whose verdict jumps or goes to a doomed chain
/// (one dump of that chain; a parent that does not exist has none).
fn jumps_into(
    socket: &mut Socket,
    seq: &mut Seq,
    table: Table,
    parent: &Chain,
    doomed: &BTreeSet<Chain>,
) -> Result<Vec<u64>, Error> {
    let context = format!("listing {table} {parent}");
    let request = Request::new(
        nl::nft(nl::NFT_MSG_GETRULE),
        nl::NLM_F_REQUEST | nl::NLM_F_DUMP,
        seq.advance(),
        nl::NFPROTO_IPV4,
        0,
    )
    .name(nl::NFTA_RULE_TABLE, table.name())
    .name(nl::NFTA_RULE_CHAIN, parent.as_str())
    .finish();
    socket.send(&[request]).map_err(Error::Netlink)?;
    let mut handles = Vec::new();
    loop {
        let datagram = socket.recv().map_err(Error::Netlink)?;
        match read_rules(datagram, table, parent, doomed, &mut handles) {
            Ok(Dump::More) => {}
            Ok(Dump::Done) => return Ok(handles),
            Err(Read::Kernel(libc::ENOENT)) => return Ok(Vec::new()),
            Err(Read::Kernel(errno)) => return Err(failed(context, errno)),
            Err(Read::Malformed(m)) => return Err(unreadable(&context, m)),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Dump {
    More,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
enum Read {
    Kernel(i32),
    Malformed(nl::Malformed),
}

impl From<nl::Malformed> for Read {
    fn from(m: nl::Malformed) -> Read {
        Read::Malformed(m)
    }
}

/// Adds to `handles` the rules of one dump datagram that are in `table parent` and jump or go
/// to a doomed chain.
fn read_rules(
    datagram: &[u8],
    table: Table,
    parent: &Chain,
    doomed: &BTreeSet<Chain>,
    handles: &mut Vec<u64>,
) -> Result<Dump, Read> {
    let (rules, end) = nl::dump_part(datagram, nl::nft(nl::NFT_MSG_NEWRULE))?;
    for m in rules {
        let (mut t, mut c, mut handle, mut targets) = (None, None, None, Vec::new());
        for a in m.attrs()? {
            let (kind, value) = a?;
            match kind {
                nl::NFTA_RULE_TABLE => t = Some(nl::name(value)?),
                nl::NFTA_RULE_CHAIN => c = Some(nl::name(value)?),
                nl::NFTA_RULE_HANDLE => handle = Some(nl::be64(value)?),
                nl::NFTA_RULE_EXPRESSIONS => targets = jump_targets(value)?,
                _ => {}
            }
        }
        let (Some(t), Some(c), Some(handle)) = (t, c, handle) else {
            return Err(nl::Malformed("a rule without its table, chain or handle".into()).into());
        };
        if t != table.name() || c != parent.as_str() {
            continue;
        }
        if targets
            .iter()
            .any(|name| doomed.iter().any(|d| d.as_str() == *name))
        {
            handles.push(handle);
        }
    }
    match end {
        None => Ok(Dump::More),
        Some(Ok(())) => Ok(Dump::Done),
        Some(Err(errno)) => Err(Read::Kernel(errno)),
    }
}

/// The chains a rule's expressions jump or go to (`immediate` verdicts).
fn jump_targets(expressions: &[u8]) -> Result<Vec<&str>, nl::Malformed> {
    let mut targets = Vec::new();
    for elem in Attrs::of(expressions) {
        let (kind, expr) = elem?;
        if kind != nl::NFTA_LIST_ELEM {
            continue;
        }
        let Some(name) = nl::find(Attrs::of(expr), nl::NFTA_EXPR_NAME)? else {
            continue;
        };
        if nl::name(name)? != "immediate" {
            continue;
        }
        let Some(data) = nl::find(Attrs::of(expr), nl::NFTA_EXPR_DATA)? else {
            continue;
        };
        let Some(value) = nl::find(Attrs::of(data), nl::NFTA_IMMEDIATE_DATA)? else {
            continue;
        };
        let Some(verdict) = nl::find(Attrs::of(value), nl::NFTA_DATA_VERDICT)? else {
            continue;
        };
        if let Some((code, Some(chain))) = nl::verdict(verdict)? {
            if code == nl::NFT_JUMP || code == nl::NFT_GOTO {
                targets.push(chain);
            }
        }
    }
    Ok(targets)
}

/// BEGIN (with the generation), the jumps, each chain's rules, the chains, END.
fn batch(
    seq: &mut Seq,
    genid: u32,
    jumps: &[(Table, Chain, u64)],
    chains: &BTreeMap<Table, BTreeSet<Chain>>,
) -> Batch {
    let flags = nl::NLM_F_REQUEST;
    let change = |kind: u16, seq: u32, flags: u16| {
        Request::new(nl::nft(kind), flags, seq, nl::NFPROTO_IPV4, 0)
    };
    let mut batch = Batch::begin(seq, Some(genid));
    for (table, parent, handle) in jumps {
        let s = seq.advance();
        batch.push(
            s,
            change(nl::NFT_MSG_DELRULE, s, flags)
                .name(nl::NFTA_RULE_TABLE, table.name())
                .name(nl::NFTA_RULE_CHAIN, parent.as_str())
                .be64(nl::NFTA_RULE_HANDLE, *handle)
                .finish(),
            format!("deleting rule {handle} of {table} {parent}"),
        );
    }
    for (table, doomed) in chains {
        for chain in doomed {
            let s = seq.advance();
            batch.push(
                s,
                change(nl::NFT_MSG_DELRULE, s, flags)
                    .name(nl::NFTA_RULE_TABLE, table.name())
                    .name(nl::NFTA_RULE_CHAIN, chain.as_str())
                    .finish(),
                format!("flushing {table} {chain}"),
            );
        }
    }
    for (table, doomed) in chains {
        for chain in doomed {
            let s = seq.advance();
            batch.push(
                s,
                change(nl::NFT_MSG_DELCHAIN, s, flags | nl::NLM_F_NONREC)
                    .name(nl::NFTA_CHAIN_TABLE, table.name())
                    .name(nl::NFTA_CHAIN_NAME, chain.as_str())
                    .finish(),
                format!("deleting {table} {chain}"),
            );
        }
    }
    batch.end(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfnetlink::testing::*;
    use proptest::prelude::*;

    fn chain(n: &str) -> Chain {
        Chain::new(n).unwrap()
    }

    fn verdict(code: i32, target: &str) -> Vec<u8> {
        let verdict = nested(
            nl::NFTA_DATA_VERDICT,
            &[
                attr(nl::NFTA_VERDICT_CODE, &code.to_be_bytes()),
                attr(nl::NFTA_VERDICT_CHAIN, format!("{target}\0").as_bytes()),
            ],
        );
        let data = nested(
            nl::NFTA_EXPR_DATA,
            &[
                attr(1, &0u32.to_be_bytes()),
                nested(nl::NFTA_IMMEDIATE_DATA, &[verdict]),
            ],
        );
        nested(
            nl::NFTA_LIST_ELEM,
            &[attr(nl::NFTA_EXPR_NAME, b"immediate\0"), data],
        )
    }

    fn counter() -> Vec<u8> {
        nested(
            nl::NFTA_LIST_ELEM,
            &[attr(nl::NFTA_EXPR_NAME, b"counter\0")],
        )
    }

    fn rule(table: &str, parent: &str, handle: u64, exprs: &[Vec<u8>]) -> Vec<u8> {
        nft_message(
            nl::NFT_MSG_NEWRULE,
            9,
            &[
                attr(nl::NFTA_RULE_TABLE, format!("{table}\0").as_bytes()),
                attr(nl::NFTA_RULE_CHAIN, format!("{parent}\0").as_bytes()),
                attr(nl::NFTA_RULE_HANDLE, &handle.to_be_bytes()),
                nested(nl::NFTA_RULE_EXPRESSIONS, exprs),
            ],
        )
    }

    fn read(datagram: &[u8]) -> (Result<Dump, Read>, Vec<u64>) {
        let doomed = BTreeSet::from([chain("netin--h"), chain("input--h")]);
        let mut handles = Vec::new();
        let r = read_rules(
            datagram,
            Table::Filter,
            &chain("INPUT"),
            &doomed,
            &mut handles,
        );
        (r, handles)
    }

    #[test]
    fn only_jumps_and_gotos_into_doomed_chains_are_picked() {
        // A rule with two verdicts (the second into a doomed chain) counts too.
        let two = rule(
            "filter",
            "INPUT",
            3,
            &[
                verdict(nl::NFT_JUMP, "input--other"),
                verdict(nl::NFT_GOTO, "netin--h"),
            ],
        );
        let mut d = rule(
            "filter",
            "INPUT",
            4,
            &[counter(), verdict(nl::NFT_JUMP, "input--h")],
        );
        d.splice(0..0, two);
        d.extend(rule(
            "filter",
            "INPUT",
            5,
            &[verdict(nl::NFT_GOTO, "netin--h")],
        ));
        d.extend(rule(
            "filter",
            "INPUT",
            6,
            &[verdict(nl::NFT_JUMP, "input--other")],
        ));
        // An accept (code 1) naming no chain, a rule without expressions, another chain.
        d.extend(rule("filter", "INPUT", 7, &[verdict(1, "input--h")]));
        d.extend(rule("filter", "INPUT", 8, &[]));
        d.extend(rule(
            "filter",
            "FORWARD",
            9,
            &[verdict(nl::NFT_JUMP, "input--h")],
        ));
        d.extend(rule(
            "nat",
            "INPUT",
            10,
            &[verdict(nl::NFT_JUMP, "input--h")],
        ));
        assert_eq!(read(&d), (Ok(Dump::More), vec![3, 4, 5]));
        let done = message(nl::NLMSG_DONE, 9, &[0; 4]);
        assert_eq!(read(&done).0, Ok(Dump::Done));
        // A dump the kernel ended early says why in its DONE.
        let cut = message(nl::NLMSG_DONE, 9, &(-90i32).to_ne_bytes());
        assert_eq!(read(&cut).0, Err(Read::Kernel(90)));
    }

    #[test]
    fn a_kernel_error_and_a_rule_without_a_handle_are_errors() {
        assert_eq!(read(&error(2, 9)).0, Err(Read::Kernel(2)));
        let no_handle = nft_message(
            nl::NFT_MSG_NEWRULE,
            9,
            &[
                attr(nl::NFTA_RULE_TABLE, b"filter\0"),
                attr(nl::NFTA_RULE_CHAIN, b"INPUT\0"),
            ],
        );
        assert!(matches!(read(&no_handle).0, Err(Read::Malformed(_))));
    }

    #[test]
    fn the_batch_deletes_jumps_then_flushes_then_deletes_chains_under_the_generation() {
        let mut seq = Seq::default();
        let chains = BTreeMap::from([(
            Table::Nat,
            BTreeSet::from([chain("netin--h"), chain("masq--h")]),
        )]);
        let prepared = batch(
            &mut seq,
            0x0a0b,
            &[(Table::Nat, chain("PREROUTING"), 12)],
            &chains,
        );
        let messages = prepared.messages();
        let kinds: Vec<u16> = messages
            .iter()
            .map(|m| nl::messages(m).unwrap()[0].kind)
            .collect();
        let (dr, dc) = (nl::nft(nl::NFT_MSG_DELRULE), nl::nft(nl::NFT_MSG_DELCHAIN));
        assert_eq!(
            kinds,
            vec![
                nl::NFNL_MSG_BATCH_BEGIN,
                dr,
                dr,
                dr,
                dc,
                dc,
                nl::NFNL_MSG_BATCH_END
            ]
        );
        let begin = nl::messages(&messages[0]).unwrap()[0];
        let genid = nl::find(begin.attrs().unwrap(), nl::NFNL_BATCH_GENID)
            .unwrap()
            .unwrap();
        assert_eq!(nl::be32(genid).unwrap(), 0x0a0b);
        assert_eq!(prepared.changes(), 5);
        assert_eq!(prepared.step(2), Some("deleting rule 12 of nat PREROUTING"));
        let jump = nl::messages(&messages[1]).unwrap()[0];
        let handle = nl::find(jump.attrs().unwrap(), nl::NFTA_RULE_HANDLE)
            .unwrap()
            .unwrap();
        assert_eq!(nl::be64(handle).unwrap(), 12);
    }

    /// A ruleset changed between the reading and the commit: the kernel refuses the batch and
    /// nothing is removed.
    #[test]
    fn a_batch_read_at_an_older_generation_is_refused() {
        use crate::iptables::{Batch, Iptables, Position, Rule, Target};
        let ns =
            crate::lab::netns::NamedNetns::create(&format!("nmgen{}", std::process::id() % 100000))
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ipt = Iptables::new(&dir.path().join("lock"));
        let (result, still_there) = crate::netns::run_in(&ns.path(), move || {
            let mut b = Batch::new();
            b.create_chain(
                Table::Filter,
                &chain("input--h"),
                &[Rule::new(Target::Accept)],
                &Chain::input(),
                Rule::new(Target::Jump(chain("input--h"))),
                Position::Last,
            );
            ipt.apply(&b).unwrap();
            let plan = [ChainRemoval {
                table: Table::Filter,
                chains: vec![chain("input--h")],
                parents: vec![Chain::input()],
            }];
            let mut socket = Socket::open().unwrap();
            let mut seq = Seq::default();
            let (genid, existing) = generation_and_existing(&mut socket, &mut seq, &plan).unwrap();
            let doomed = &existing[&Table::Filter];
            let jumps: Vec<_> = jumps_into(
                &mut socket,
                &mut seq,
                Table::Filter,
                &Chain::input(),
                doomed,
            )
            .unwrap()
            .into_iter()
            .map(|h| (Table::Filter, Chain::input(), h))
            .collect();
            assert_eq!(jumps.len(), 1);
            let mut other = Batch::new();
            other.push(
                Table::Filter,
                crate::iptables::Op::NewChain(chain("unrelated")),
            );
            ipt.apply(&other).unwrap();
            let prepared = batch(&mut seq, genid, &jumps, &existing);
            let result = prepared
                .commit(&mut socket, &mut seq, "removing")
                .map_err(Error::Netlink);
            (
                result,
                ipt.list(Table::Filter).unwrap().has_chain("input--h"),
            )
        })
        .unwrap();
        match result {
            Err(Error::Netlink(e)) => assert_eq!(e.errno, Some(libc::ERESTART), "{e}"),
            other => panic!("expected ERESTART, got {other:?}"),
        }
        assert!(still_there);
    }

    proptest! {
        #[test]
        fn hostile_dumps_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512),
                                     cut in 0usize..400) {
            let _ = read(&bytes);
            let mut d = rule("filter", "INPUT", 4, &[counter(), verdict(nl::NFT_JUMP, "input--h")]);
            d.truncate(cut.min(d.len()));
            let _ = read(&d);
        }
    }
}
