//! The elements of the table's plain maps, written straight over nfnetlink on a first apply:
//! hosts -> class numbers, class numbers -> class chains, containers -> their rule set (135,000
//! elements with 13,500 groups). libnftables spends about 5 µs parsing and checking each element
//! (0.64 s of a 0.93 s apply measured here), the kernel about 1 µs.
//!
//! A first apply (no table, or a dormant one) is two transactions that look like one from
//! outside: libnftables creates the table dormant (its base chain unhooked: it filters nothing,
//! as when there was no table) with every chain, rule, counter and other set; then one nfnetlink
//! batch adds these maps' elements and wakes the table. Killed in between, the cell keeps a
//! dormant table, which the next apply replaces. A live table is replaced in one libnftables
//! transaction, as before, so traffic meets the old table or the new one, never a part.
//!
//! The kernel hooks a woken table while it processes the batch, and the batch's elements turn
//! active only at its commit: for that moment (and in a batch that is then refused) the table
//! filters with these maps empty. That is safe because every map written here fails closed on a
//! miss: a container not in `containers` meets the final reject, a host not in a host map or a
//! number not in `host_classes` is allowed by nothing. A set whose miss would let something
//! through (a deny list, an exception) must never be written here; [`kinds`] names the maps
//! that may.
//!
//! Only maps whose every element reads back as a plain value are written here (keys: an IPv4
//! address or a mark; values: a mark or a verdict); any other set, or a set with one element
//! that does not read, is left to libnftables whole.

use super::objects::{render_dormant, Objects, SetObj, TABLE};
use crate::agent::nft::{Error, Runner};
use crate::nfnetlink::transaction::{failed, unreadable};
use crate::nfnetlink::{self as nl, Attrs, Batch, Request, Seq, Socket};
use crate::os_error::OsError;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Whether the table filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableState {
    Absent,
    /// Its base chain unhooked: it filters nothing.
    Dormant,
    Live,
}

/// The state of the table in the runner's namespace.
pub fn table_state(runner: &dyn Runner) -> Result<TableState, Error> {
    let mut flags = None;
    runner.with_netlink(&mut |socket, seq| {
        flags = nl::transaction::table_flags(socket, seq, nl::NFPROTO_IPV4, TABLE)?;
        Ok(())
    })?;
    Ok(match flags {
        None => TableState::Absent,
        Some(f) if f & nl::NFT_TABLE_F_DORMANT != 0 => TableState::Dormant,
        Some(_) => TableState::Live,
    })
}

/// A first apply where no table filters: the table created dormant without the plain maps'
/// elements, then the elements added and the table woken in one batch. On an error the table
/// is left dormant (filtering nothing, as before) for a rewrite to replace.
pub fn apply_first(runner: &dyn Runner, objects: &Objects) -> Result<(), Error> {
    let mut sets = Vec::new();
    let mut left_out = BTreeSet::new();
    for (name, set) in &objects.sets {
        if let Some(encoded) = encode(set) {
            left_out.insert(name.clone());
            sets.push((name.as_str(), encoded));
        }
    }
    runner.run(&render_dormant(objects, &left_out))?;
    runner.with_netlink(&mut |socket, seq| {
        fill_and_wake(seq, TABLE, &sets).commit(
            socket,
            seq,
            "adding the security groups' map elements and waking the table",
        )
    })
}

/// A key or a value as nf_tables stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    /// 4 bytes, network order.
    Ipv4,
    /// 4 bytes, host order (nftables' `mark` type is host-endian).
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Value(Scalar),
    Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Data {
    None,
    Value([u8; 4]),
    Verdict(i32, Option<String>),
}

/// A set's elements, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    elements: Vec<([u8; 4], Data)>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

/// The declarations written here, maps whose miss refuses (see the module's doc): anything else
/// (plain sets, intervals, concatenations, counters, timeouts, other types) goes to libnftables.
fn kinds(decl: &str) -> Option<(Scalar, DataKind)> {
    Some(match decl {
        "type ipv4_addr : mark;" => (Scalar::Ipv4, DataKind::Value(Scalar::Mark)),
        "type ipv4_addr : verdict;" => (Scalar::Ipv4, DataKind::Verdict),
        "type mark : verdict;" => (Scalar::Mark, DataKind::Verdict),
        _ => return None,
    })
}

fn scalar(kind: Scalar, text: &str) -> Option<[u8; 4]> {
    match kind {
        Scalar::Ipv4 => text.parse::<Ipv4Addr>().ok().map(|a| a.octets()),
        Scalar::Mark => {
            let hex = text.strip_prefix("0x")?;
            if hex.is_empty() || hex.len() > 8 {
                return None;
            }
            u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
        }
    }
}

fn verdict(text: &str) -> Option<Data> {
    let mut words = text.split(' ');
    let (code, chain) = match (words.next()?, words.next(), words.next()) {
        ("accept", None, None) => (nl::NF_ACCEPT, None),
        ("drop", None, None) => (nl::NF_DROP, None),
        ("continue", None, None) => (nl::NFT_CONTINUE, None),
        ("return", None, None) => (nl::NFT_RETURN, None),
        ("jump", Some(c), None) => (nl::NFT_JUMP, Some(c)),
        ("goto", Some(c), None) => (nl::NFT_GOTO, Some(c)),
        _ => return None,
    };
    match chain {
        Some(c) if c.is_empty() || c.len() >= 256 || c.contains('\0') => None,
        c => Some(Data::Verdict(code, c.map(str::to_string))),
    }
}

/// The set's elements encoded, or `None` when the set is left to libnftables.
pub fn encode(set: &SetObj) -> Option<Encoded> {
    let (key_kind, data_kind) = kinds(&set.decl)?;
    let mut elements = Vec::with_capacity(set.elements.len());
    for (key, value) in set.elements.iter() {
        let key = scalar(key_kind, key)?;
        let data = match data_kind {
            DataKind::Value(kind) => Data::Value(scalar(kind, value)?),
            DataKind::Verdict => verdict(value)?,
        };
        elements.push((key, data));
    }
    Some(Encoded { elements })
}

/// The most one element takes in a message (a verdict naming a chain of 255 bytes).
const ELEMENT_MAX: usize = 320;

fn push_element(r: &mut Request, key: &[u8; 4], data: &Data) {
    let elem = r.open_nest(nl::NFTA_LIST_ELEM);
    let k = r.open_nest(nl::NFTA_SET_ELEM_KEY);
    r.push(nl::NFTA_DATA_VALUE, key);
    r.close_nest(k);
    match data {
        Data::None => {}
        Data::Value(v) => {
            let d = r.open_nest(nl::NFTA_SET_ELEM_DATA);
            r.push(nl::NFTA_DATA_VALUE, v);
            r.close_nest(d);
        }
        Data::Verdict(code, chain) => {
            let d = r.open_nest(nl::NFTA_SET_ELEM_DATA);
            let v = r.open_nest(nl::NFTA_DATA_VERDICT);
            r.push(nl::NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(chain) = chain {
                let mut name = chain.as_bytes().to_vec();
                name.push(0);
                r.push(nl::NFTA_VERDICT_CHAIN, &name);
            }
            r.close_nest(v);
            r.close_nest(d);
        }
    }
    r.close_nest(elem);
}

/// One transaction: every element of `sets` added to `table` (of family `ip`), then the table
/// woken (its dormant flag cleared). Messages hold as many elements as one attribute can.
pub fn fill_and_wake(seq: &mut Seq, table: &str, sets: &[(&str, Encoded)]) -> Batch {
    let mut batch = Batch::begin(seq, None);
    for (name, set) in sets {
        let mut elements = set.elements.iter().peekable();
        let mut part = 0;
        while elements.peek().is_some() {
            let s = seq.advance();
            let mut r = Request::new(
                nl::nft(nl::NFT_MSG_NEWSETELEM),
                nl::NLM_F_REQUEST | nl::NLM_F_CREATE,
                s,
                nl::NFPROTO_IPV4,
                0,
            )
            .name(nl::NFTA_SET_ELEM_LIST_TABLE, table)
            .name(nl::NFTA_SET_ELEM_LIST_SET, name);
            let list = r.open_nest(nl::NFTA_SET_ELEM_LIST_ELEMENTS);
            let mut n = 0;
            while let Some((key, data)) =
                elements.next_if(|_| r.len() - list + ELEMENT_MAX <= nl::NEST_MAX)
            {
                push_element(&mut r, key, data);
                n += 1;
            }
            r.close_nest(list);
            part += 1;
            batch.push(
                s,
                r.finish(),
                format!("adding {n} elements to {name} (part {part})"),
            );
        }
    }
    let s = seq.advance();
    batch.push(
        s,
        Request::new(
            nl::nft(nl::NFT_MSG_NEWTABLE),
            nl::NLM_F_REQUEST,
            s,
            nl::NFPROTO_IPV4,
            0,
        )
        .name(nl::NFTA_TABLE_NAME, table)
        .be32(nl::NFTA_TABLE_FLAGS, 0)
        .finish(),
        format!("waking the table {table}"),
    );
    batch.end(seq)
}

/// One element of a dump, `None` when it is not a plain element (another key size, an
/// interval end, a value of another shape): not one the agent writes.
fn decode_element(elem: &[u8]) -> Result<Option<([u8; 4], Data)>, nl::Malformed> {
    let (mut key, mut data) = (None, Data::None);
    for a in Attrs::of(elem) {
        let (kind, value) = a?;
        match kind {
            nl::NFTA_SET_ELEM_KEY => {
                let Some(v) = nl::find(Attrs::of(value), nl::NFTA_DATA_VALUE)? else {
                    return Ok(None);
                };
                let Ok(k) = <[u8; 4]>::try_from(v) else {
                    return Ok(None);
                };
                key = Some(k);
            }
            nl::NFTA_SET_ELEM_DATA => {
                if let Some(v) = nl::find(Attrs::of(value), nl::NFTA_DATA_VALUE)? {
                    let Ok(v) = <[u8; 4]>::try_from(v) else {
                        return Ok(None);
                    };
                    data = Data::Value(v);
                } else if let Some(v) = nl::find(Attrs::of(value), nl::NFTA_DATA_VERDICT)? {
                    let Some((code, chain)) = nl::verdict(v)? else {
                        return Ok(None);
                    };
                    data = Data::Verdict(code, chain.map(str::to_string));
                } else {
                    return Ok(None);
                }
            }
            nl::NFTA_SET_ELEM_FLAGS if nl::be32(value)? != 0 => return Ok(None),
            _ => {}
        }
    }
    Ok(key.map(|k| (k, data)))
}

/// Adds the elements of one dump datagram to `out` (`None` once one is not plain); true at
/// the dump's end.
fn read_dump_part(
    datagram: &[u8],
    seq: u32,
    out: &mut Option<Vec<([u8; 4], Data)>>,
) -> Result<Result<bool, i32>, nl::Malformed> {
    let (messages, end) = nl::dump_part_of(datagram, nl::nft(nl::NFT_MSG_NEWSETELEM), seq)?;
    for m in messages {
        let Some(list) = nl::find(m.attrs()?, nl::NFTA_SET_ELEM_LIST_ELEMENTS)? else {
            continue;
        };
        for elem in Attrs::of(list) {
            let (_, elem) = elem?;
            let decoded = decode_element(elem)?;
            match (out.as_mut(), decoded) {
                (Some(v), Some(e)) => v.push(e),
                _ => *out = None,
            }
        }
    }
    Ok(match end {
        None => Ok(false),
        Some(Ok(())) => Ok(true),
        Some(Err(errno)) => Err(errno),
    })
}

/// The elements of `table`'s set `name` as the kernel holds them (one dump): `Ok(None)` when
/// there is no such set, `Some(None)` when one of them is not a plain element.
#[allow(clippy::type_complexity)]
fn read_elements(
    socket: &mut Socket,
    seq: &mut Seq,
    table: &str,
    name: &str,
) -> Result<Option<Option<Vec<([u8; 4], Data)>>>, OsError> {
    let context = format!("listing the elements of {table} {name}");
    let asked = seq.advance();
    let request = Request::new(
        nl::nft(nl::NFT_MSG_GETSETELEM),
        nl::NLM_F_REQUEST | nl::NLM_F_DUMP,
        asked,
        nl::NFPROTO_IPV4,
        0,
    )
    .name(nl::NFTA_SET_ELEM_LIST_TABLE, table)
    .name(nl::NFTA_SET_ELEM_LIST_SET, name)
    .finish();
    socket.send(&[request])?;
    let mut out = Some(Vec::new());
    loop {
        let datagram = socket.recv()?;
        match read_dump_part(datagram, asked, &mut out).map_err(|e| unreadable(&context, e))? {
            Ok(false) => {}
            Ok(true) => return Ok(Some(out)),
            Err(libc::ENOENT) => return Ok(None),
            Err(errno) => return Err(failed(context, errno)),
        }
    }
}

/// The plain maps of `want` ([`encode`]) whose elements in the kernel are not exactly the
/// agent's (one dump each, no text), described; sets named in `skip` and sets the kernel does
/// not have (a difference the listings report) are left out.
pub fn differences(
    runner: &dyn Runner,
    want: &Objects,
    skip: &[&str],
) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    runner.with_netlink(&mut |socket, seq| {
        for (name, set) in &want.sets {
            if skip.contains(&name.as_str()) {
                continue;
            }
            let Some(wanted) = encode(set) else {
                continue;
            };
            let Some(held) = read_elements(socket, seq, TABLE, name)? else {
                continue;
            };
            let Some(mut held) = held else {
                out.push(format!("{name} holds elements the agent does not write"));
                continue;
            };
            let mut wanted = wanted.elements;
            held.sort_unstable();
            wanted.sort_unstable();
            if held != wanted {
                out.push(super::drift::elements_differ(
                    name,
                    held.len(),
                    wanted.len(),
                ));
            }
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(decl: &str, items: &[(&str, &str)]) -> SetObj {
        let mut s = SetObj::new(decl);
        for (k, v) in items {
            s.elements.insert(k.to_string(), v.to_string());
        }
        s
    }

    #[test]
    fn plain_maps_are_encoded_and_anything_else_is_left_to_libnftables() {
        let hosts = encode(&set(
            "type ipv4_addr : mark;",
            &[("100.64.0.1", "0x00000005")],
        ))
        .unwrap();
        assert_eq!(
            hosts.elements,
            vec![([100, 64, 0, 1], Data::Value(5u32.to_ne_bytes()))]
        );
        let classes = encode(&set("type mark : verdict;", &[("0x00000007", "jump cp_1")])).unwrap();
        assert_eq!(
            classes.elements,
            vec![(
                7u32.to_ne_bytes(),
                Data::Verdict(nl::NFT_JUMP, Some("cp_1".into()))
            )]
        );

        for (decl, k, v) in [
            (
                "type ipv4_addr : verdict; flags interval;",
                "10.0.0.0/8",
                "accept",
            ),
            ("type ipv4_addr : mark;", "10.0.0.0/8", "0x00000001"),
            ("type ipv4_addr : mark;", "10.0.0.1", "5"),
            ("type ipv4_addr : verdict;", "10.0.0.1", "jump"),
            ("type ipv4_addr : verdict;", "10.0.0.1", "jump a b"),
            ("type ipv4_addr : verdict;", "10.0.0.1", "reject"),
            ("type ipv4_addr;", "10.0.0.1", ""),
            ("type inet_service : verdict;", "80", "accept"),
        ] {
            assert_eq!(encode(&set(decl, &[(k, v)])), None, "{decl} {k} : {v}");
        }
    }

    /// Every element message's nest fits its 16-bit length; the elements, read back, are the
    /// ones encoded, in order; the batch ends by waking the table.
    #[test]
    fn large_maps_are_split_into_messages_that_fit_and_read_back() {
        let mut big = SetObj::new("type ipv4_addr : verdict;");
        for i in 0..5000u32 {
            big.elements.insert(
                Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                format!("jump rs_{:0>200}", i % 7),
            );
        }
        let encoded = encode(&big).unwrap();
        let mut seq = Seq::default();
        let batch = fill_and_wake(&mut seq, "netman_asg", &[("containers", encoded.clone())]);
        let messages = batch.messages();
        assert!(messages.len() > 4, "split: {}", messages.len());
        let mut read = Vec::new();
        for m in &messages[1..messages.len() - 2] {
            let m = nl::messages(m).unwrap()[0];
            assert_eq!(m.kind, nl::nft(nl::NFT_MSG_NEWSETELEM));
            let list = nl::find(m.attrs().unwrap(), nl::NFTA_SET_ELEM_LIST_ELEMENTS)
                .unwrap()
                .unwrap();
            assert!(list.len() + 4 <= nl::NEST_MAX);
            for elem in nl::Attrs::of(list) {
                let (_, elem) = elem.unwrap();
                let key = nl::find(nl::Attrs::of(elem), nl::NFTA_SET_ELEM_KEY)
                    .unwrap()
                    .unwrap();
                let key = nl::find(nl::Attrs::of(key), nl::NFTA_DATA_VALUE)
                    .unwrap()
                    .unwrap();
                let data = nl::find(nl::Attrs::of(elem), nl::NFTA_SET_ELEM_DATA)
                    .unwrap()
                    .unwrap();
                let v = nl::find(nl::Attrs::of(data), nl::NFTA_DATA_VERDICT)
                    .unwrap()
                    .unwrap();
                let chain = nl::find(nl::Attrs::of(v), nl::NFTA_VERDICT_CHAIN)
                    .unwrap()
                    .unwrap();
                read.push((
                    <[u8; 4]>::try_from(key).unwrap(),
                    Data::Verdict(nl::NFT_JUMP, Some(nl::name(chain).unwrap().to_string())),
                ));
            }
        }
        assert_eq!(read, encoded.elements);
        let wake = nl::messages(&messages[messages.len() - 2]).unwrap()[0];
        assert_eq!(wake.kind, nl::nft(nl::NFT_MSG_NEWTABLE));
        let flags = nl::find(wake.attrs().unwrap(), nl::NFTA_TABLE_FLAGS)
            .unwrap()
            .unwrap();
        assert_eq!(nl::be32(flags).unwrap(), 0);
    }

    fn objects() -> Objects {
        use crate::agent::asg::{compile, DenyNetworks, Settings};
        use crate::api::security_groups::SecurityGroup;
        use crate::cell::Container;
        use serde_json::json;
        let groups: Vec<SecurityGroup> = (0..300u32)
            .map(|i| {
                let host = Ipv4Addr::from(0x6440_0000 + i);
                let rules = json!([
                    {"protocol": "tcp", "destination": host.to_string(), "ports": format!("{}, 443", 1000 + i % 5)},
                    {"protocol": "udp", "destination": host.to_string(), "ports": "53"},
                    {"protocol": "tcp", "destination": "10.8.0.0/16", "ports": "5432"},
                    {"protocol": "icmp", "destination": "10.9.0.0-10.9.0.9", "type": 8, "code": -1},
                ]);
                SecurityGroup {
                    guid: format!("g{i}"),
                    name: format!("g{i}"),
                    rules: rules.to_string(),
                    running_default: i % 4 == 0,
                    running_space_guids: vec![format!("space-{}", i % 3)],
                    ..Default::default()
                }
            })
            .collect();
        let containers: Vec<Container> = (0..6u8)
            .map(|i| {
                let ip = Ipv4Addr::new(10, 255, 0, 2 + i);
                let mut c = Container::for_app(&format!("c{i}"), ip, "app");
                c.metadata
                    .insert("space_id".into(), json!(format!("space-{}", i % 3)));
                c.metadata
                    .insert(crate::cell::WORKLOAD_KEY.into(), json!("app"));
                c
            })
            .collect();
        let settings = Settings {
            overlay: "10.255.0.0/16".parse().unwrap(),
            deny: DenyNetworks {
                always: vec!["169.254.0.0/16".parse().unwrap()],
                running: vec!["10.0.0.0/8".parse().unwrap()],
                staging: vec![],
            },
            log_all: false,
            nflog_group: 1,
            denied_logs_per_sec: 1,
            accepted_udp_logs_per_sec: 100,
        };
        compile(&groups, &containers, &settings).objects
    }

    /// `nft list table` in a namespace of its own, after `apply` there.
    fn listed_after(
        name: &str,
        apply: impl FnOnce(&crate::agent::libnft::LibNft) -> Result<(), Error> + Send + 'static,
    ) -> (Result<(), Error>, TableState, String) {
        let ns = crate::lab::netns::NamedNetns::create(&format!(
            "nmbulk{name}{}",
            std::process::id() % 100000
        ))
        .unwrap();
        crate::netns::run_in(&ns.path(), move || {
            let nft = crate::agent::libnft::LibNft::open().unwrap();
            let applied = apply(&nft);
            let flags = table_state(&nft).unwrap();
            let listed = nft
                .run_listing(&format!("list table ip {TABLE}"))
                .unwrap_or_default();
            (applied, flags, listed)
        })
        .unwrap()
    }

    /// The table a first apply writes is, element for element, the one a libnftables rewrite
    /// writes, and it filters (not dormant) afterwards.
    #[test]
    fn a_first_apply_writes_the_table_a_rewrite_writes_and_wakes_it() {
        let o = objects();
        assert!(
            o.sets
                .values()
                .any(|s| encode(s).is_some_and(|e| e.len() > 50)),
            "some map goes over nfnetlink"
        );
        assert!(
            o.sets
                .values()
                .any(|s| encode(s).is_none() && !s.elements.is_empty()),
            "some set stays with libnftables"
        );
        let o2 = o.clone();
        let (first, first_flags, first_listed) =
            listed_after("f", move |nft| apply_first(nft, &o2));
        first.unwrap();
        let o3 = o.clone();
        let (whole, whole_flags, whole_listed) = listed_after("w", move |nft| {
            nft.run(&super::super::objects::render_full(&o3))
        });
        whole.unwrap();
        assert_eq!(first_flags, TableState::Live, "woken");
        assert_eq!(whole_flags, TableState::Live);
        assert!(first_listed.contains("100.64.1.39"), "{first_listed}");
        assert_eq!(first_listed, whole_listed);
    }

    /// The element batch refused (an element jumping to a chain that does not exist): nothing
    /// of it is applied and the table stays dormant, filtering nothing.
    #[test]
    fn a_refused_element_batch_leaves_the_table_dormant_and_names_the_map() {
        let mut o = objects();
        let mut containers = (*o.sets["containers"]).clone();
        containers
            .elements
            .insert("10.255.9.9".into(), "jump no_such_chain".into());
        o.set("containers", containers);
        let (applied, flags, listed) = listed_after("r", move |nft| apply_first(nft, &o));
        let e = applied.unwrap_err().to_string();
        assert!(e.contains("elements to containers"), "{e}");
        assert_eq!(flags, TableState::Dormant);
        assert!(listed.contains("flags dormant"), "{listed}");
        assert!(
            !listed.contains("100.64.0.1 :"),
            "no element of the batch: {listed}"
        );
    }

    /// What the element batch sends is what a dump answers (the same message layout): read
    /// back, the elements are the encoded ones; answers to other requests are passed over;
    /// anything but a plain element marks the set.
    #[test]
    fn dumped_elements_read_back_and_foreign_ones_are_told_apart() {
        let mut hosts = SetObj::new("type ipv4_addr : mark;");
        for i in 0..3000u32 {
            hosts.elements.insert(
                Ipv4Addr::from(0x6440_0000 + i).to_string(),
                format!("0x{:08x}", i % 9),
            );
        }
        let encoded = encode(&hosts).unwrap();
        let mut seq = Seq::default();
        let batch = fill_and_wake(&mut seq, "t", &[("h", encoded.clone())]);
        let messages = batch.messages();
        // Answers to an earlier request (an end, an error) come first and are passed over.
        let mut datagram = nl::testing::message(nl::NLMSG_DONE, 3, &0i32.to_ne_bytes());
        datagram.extend(nl::testing::error(2, 4));
        for m in &messages[1..messages.len() - 2] {
            let mut m = m.clone();
            m[8..12].copy_from_slice(&9u32.to_ne_bytes());
            datagram.extend(m);
        }
        datagram.extend(nl::testing::message(nl::NLMSG_DONE, 9, &0i32.to_ne_bytes()));
        let mut out = Some(Vec::new());
        assert_eq!(read_dump_part(&datagram, 9, &mut out), Ok(Ok(true)));
        let (mut read, mut want) = (out.unwrap(), encoded.elements);
        read.sort_unstable();
        want.sort_unstable();
        assert_eq!(read, want);

        let elem = |parts: &[Vec<u8>]| {
            nl::testing::nft_message(
                nl::NFT_MSG_NEWSETELEM,
                1,
                &[nl::testing::nested(
                    nl::NFTA_SET_ELEM_LIST_ELEMENTS,
                    &[nl::testing::nested(nl::NFTA_LIST_ELEM, parts)],
                )],
            )
        };
        let key = |bytes: &[u8]| {
            nl::testing::nested(
                nl::NFTA_SET_ELEM_KEY,
                &[nl::testing::attr(nl::NFTA_DATA_VALUE, bytes)],
            )
        };
        for foreign in [
            elem(&[key(&[0; 16])]),
            elem(&[
                key(&[10, 0, 0, 1]),
                nl::testing::attr(nl::NFTA_SET_ELEM_FLAGS, &1u32.to_be_bytes()),
            ]),
            elem(&[
                key(&[10, 0, 0, 1]),
                nl::testing::nested(
                    nl::NFTA_SET_ELEM_DATA,
                    &[nl::testing::attr(nl::NFTA_DATA_VALUE, &[0; 8])],
                ),
            ]),
        ] {
            let mut out = Some(vec![([1, 2, 3, 4], Data::None)]);
            assert_eq!(read_dump_part(&foreign, 1, &mut out), Ok(Ok(false)));
            assert_eq!(out, None);
        }
        let mut out = Some(Vec::new());
        assert_eq!(
            read_dump_part(&nl::testing::error(2, 1), 1, &mut out),
            Ok(Err(2))
        );
    }

    /// Against the kernel: nothing differs after a first apply; a host element added from
    /// outside, or one deleted, is found.
    #[test]
    fn elements_added_or_deleted_from_outside_are_found() {
        let ns = crate::lab::netns::NamedNetns::create(&format!(
            "nmdiff{}",
            std::process::id() % 100000
        ))
        .unwrap();
        let o = objects();
        let host_map = o
            .sets
            .iter()
            .find(|(n, s)| n.ends_with("_tcph") && s.elements.len() > 10)
            .map(|(n, s)| (n.clone(), s.elements.keys().next().unwrap().clone()))
            .unwrap();
        let map_name = host_map.0.clone();
        let found = crate::netns::run_in(&ns.path(), move || {
            let nft = crate::agent::libnft::LibNft::open().unwrap();
            apply_first(&nft, &o).unwrap();
            let mut found = vec![differences(&nft, &o, &[]).unwrap()];
            let (map, key) = &host_map;
            nft.run(&format!(
                "add element ip {TABLE} {map} {{ 203.0.113.9 : 0x00000001 }}"
            ))
            .unwrap();
            found.push(differences(&nft, &o, &[]).unwrap());
            nft.run(&format!(
                "delete element ip {TABLE} {map} {{ 203.0.113.9, {key} }}"
            ))
            .unwrap();
            found.push(differences(&nft, &o, &[]).unwrap());
            found
        })
        .unwrap();
        assert_eq!(found[0], Vec::<String>::new());
        assert_eq!(found[1].len(), 1, "{:?}", found[1]);
        assert!(found[1][0].starts_with(&map_name), "{:?}", found[1]);
        assert_eq!(found[2].len(), 1, "{:?}", found[2]);
    }

    proptest! {
        #[test]
        fn hostile_dumps_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut out = Some(Vec::new());
            let _ = read_dump_part(&bytes, 1, &mut out);
        }

        /// Stored element text is read strictly: anything else leaves the set to libnftables,
        /// and nothing panics.
        #[test]
        fn hostile_element_text_never_panics(
            key in ".{0,24}",
            value in ".{0,24}",
            decl in prop::sample::select(vec![
                "type ipv4_addr : mark;",
                "type ipv4_addr : verdict;", "type mark : verdict;",
            ]),
        ) {
            if let Some(e) = encode(&set(decl, &[(&key, &value)])) {
                let mut seq = Seq::default();
                let _ = fill_and_wake(&mut seq, "t", &[("s", e)]);
            }
        }
    }
}
